"""A 30-minute session through the interaction network: bounded state, the tick deadline, and an instruction
given at the start.

One session of ``--minutes`` (default 30: 9000 micro-turns) is stepped micro-turn by micro-turn through
:class:`~model.interaction.TickModel` -- the runtime's code path, the model's own outputs fed back -- as
fast as the CPU allows (offline: nothing waits for the 200 ms boundary). The input is what the encoders
would report (model/scenarios.py writes it): first the user's instruction, "every ten seconds say hop until
i tell you to stop" (spoken, or typed with ``--typed``), then conversation until the end -- questions,
statements, unfinished thoughts, tool requests whose results come back later, monologues, silence -- the
scenario generator's segments without its instructions, cue rules and stop commands (they would end or
replace the instruction under test). The scenario's targets say "hop" every ten seconds to the end.

Per block of ``--block-minutes`` (default 5) it reports

- the wall time of each step: p50/p95/p99/max and steps over the 200 ms deadline (flat = no growth);
- the KV cache: its longest length and its buffer's capacity (bound: window + pin budget + slack);
- the process's resident memory at the block's end;
- memory for the instruction: how many of its word tokens are still in the cache at the block's end, and
  how many tokens were pinned so far, as instructions among them (the cache keeps the newest ``pin_budget``
  instruction pins, and apart from them the newest ``event_pin_budget`` event pins);
- with a trained checkpoint, behaviour: the expected says matched within ±2 micro-turns
  (``model.train.behaviour``), their words, and says nobody asked for.

    .venv/bin/python -m bench.long_session                  # 30 minutes, model/checkpoints/microturn.pt
    .venv/bin/python -m bench.long_session --quick          # 2 minutes (smoke)
    .venv/bin/python -m bench.long_session --config tiny    # an untrained network of that shape

Without a checkpoint the network is an untrained ``small`` one: the cost and the memory are measured, the
behaviour is not (its acts are noise). Writes bench/results/long-session-<time>.json (``--plot``: a PNG
next to it) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.interaction import (
    CACHE_SLACK,
    DEFAULT_CHECKPOINT,
    INSTRUCTION_PIN,
    InteractionNet,
    SessionStream,
    TickModel,
    Vocab,
    encode_scenario,
    preset,
)
from model.lexicon import number_words
from model.scenarios import (
    TEMPLATE_WORDS,
    TICK_S,
    TRAIN_CATEGORY_WORDS,
    _render,
    _Schedule,
    _Writer,
    say_tick,
    schedule_targets,
)
from model.ticks import SPECIAL_TOKENS, Scenario, Tick, TickOutput
from model.train import behaviour
from service.microturn import MICRO_TURN_MS
from service.stats import percentiles

ROOT = Path(__file__).resolve().parent.parent
TICKS_PER_MINUTE = round(60 / TICK_S)
FULL_MINUTES = 30.0
QUICK_MINUTES = 2.0
QUICK_BLOCK_MINUTES = 0.5
BLOCK_MINUTES = 5.0
# A training phrasing (model/scenarios.py PERIODIC) and a period it trains on: the question here is whether
# the instruction survives 30 minutes, not whether an unseen phrasing is understood (bench/cases asks that).
PHRASING = "every {p} say {w} until i tell you to stop"
EVERY_S = 10
WORD = "hop"
# What the user does after the instruction, and how often: the scenario generator's "talk" mix.
FILLER_WEIGHTS = {"question": 5, "pause": 3, "ask": 3, "idle": 2, "plain": 2, "monologue": 1}
MONOLOGUE_S = (5.0, 15.0)  # one stretch of talk about this and that


@dataclass
class LongSession:
    scenario: Scenario
    instruction: str
    heard_tick: int  # the micro-turn in which the model has heard all of the instruction


def long_session(
    seed: int,
    minutes: float,
    every_s: int = EVERY_S,
    word: str = WORD,
    phrasing: str = PHRASING,
    typed: bool = False,
) -> LongSession:
    """An instruction at the start, then ``minutes`` of conversation; targets say ``word`` every ``every_s``
    seconds to the end. Deterministic in ``seed``."""
    rng = random.Random(f"long-session:{seed}")
    writer = _Writer(rng, minutes * 60.0)
    writer.typing = typed  # a typing user also types some of their questions
    writer.s.wait(rng.uniform(0.5, 2.0))
    period = f"{number_words(every_s)} seconds"
    text = phrasing.format(p=period, w=word)
    if typed:
        at = writer.s.type_text(text.split())
        start_s = (at.tick + 1) * TICK_S  # as _Writer.instruct: timing counts from the typed text's arrival
    else:
        # Every word a key word (rarely misheard): this measures memory, not recognition of the request.
        start_s, at = writer.instruct(text, frozenset(text.split()))
    targets = schedule_targets("periodic", every_s, int(minutes * 60 / every_s) + 1, start_s)
    writer.s.schedules.append(
        (at, _Schedule([say_tick(t) for t in targets], [(word,)] * len(targets), "periodic"))
    )
    cue_words = [w for words in TRAIN_CATEGORY_WORDS.values() for w in words]
    segments: dict[str, Callable[[], None]] = {
        "question": writer.question,
        "pause": writer.pause_turn,
        "ask": writer.ask,
        "idle": writer.idle,
        "plain": lambda: writer.plain_talk(rng.randint(1, 3)),
        "monologue": lambda: writer.monologue(cue_words, rng.uniform(*MONOLOGUE_S)),
    }
    names = list(FILLER_WEIGHTS)
    weights = list(FILLER_WEIGHTS.values())
    writer.s.wait(rng.uniform(1.0, 3.0))
    end_s = writer.s.n_ticks * TICK_S - 3.0
    while writer.s.cursor < end_s:
        segments[rng.choices(names, weights)[0]]()
    return LongSession(_render(writer.s)[0], text, writer.s.resolve(at))


# ----------------------------------------------------------------------------------------------------
# Stepping


@dataclass
class Block:
    """One block of the session: what stepping it cost, what the state held at its end, what was done."""

    start_min: float
    end_min: float
    step_ms: dict[str, float]  # percentiles of the wall time of one step
    over_deadline: int  # steps longer than a micro-turn
    cache_max: int  # tokens
    capacity: int  # tokens the cache's buffers hold
    rss_mb: float  # the process's resident memory at the block's end
    instruction_in_cache: int  # of the instruction's word tokens, at the block's end
    pinned: int  # tokens pinned since the session started (the instruction's included), to the block's end
    instruction_pins: int  # of those, pinned as instructions (all of them when events share the budget)
    bucket_words: int  # entries of the session's bucket -> word map
    behaviour: dict[str, float]  # model.train.behaviour() of the block


@dataclass
class Run:
    blocks: list[Block]
    instruction_tokens: int
    outputs: list[TickOutput]
    step_ms: list[float]
    cache: list[int]
    stream: SessionStream  # the session's state at the end


def rss_mb() -> float:
    """Resident memory of this process now (Linux), else its peak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_session(model: TickModel, session: LongSession, block_ticks: int, progress: bool = True) -> Run:
    """Step the session through ``model`` micro-turn by micro-turn; summarise it per ``block_ticks``."""
    scenario = session.scenario
    stream = model.new_session()
    instruction: list[int] = []  # gidx of the instruction's word tokens
    specials = frozenset(SPECIAL_TOKENS)
    outputs: list[TickOutput] = []
    step_ms: list[float] = []
    cache: list[int] = []
    # Per block end: instruction tokens in the cache, cache capacity, RSS, bucket -> word entries.
    ends: list[tuple[int, int, float, int]] = []
    bar = tqdm(total=len(scenario), unit="tick", mininterval=1.0, disable=not progress)
    for k, tick in enumerate(scenario):
        first = stream.stream.next_gidx  # step() pushes the input tokens first
        outputs += model.step([stream], [tick.input])
        step_ms.append(model.timing.ms)
        cache.append(stream.cache_len)
        if k <= session.heard_tick:
            tokens = tick.input.to_tokens()
            instruction += [first + i for i, t in enumerate(tokens) if t not in specials]
        if (k + 1) % block_ticks == 0 or k + 1 == len(scenario):
            ends.append((_in_cache(stream, instruction), stream.capacity, rss_mb(), len(stream.bucket_words)))
            bar.set_postfix(cache=max(cache[-block_ticks:]), ms=f"{max(step_ms[-block_ticks:]):.1f}")
        bar.update()
    bar.close()
    # The pin flags of the stream the model actually saw (its own outputs included): the same tokenizer
    # and pinner as streaming, so the count is exact.
    lived = [Tick(t.input, out) for t, out in zip(scenario, outputs, strict=True)]
    enc = encode_scenario(lived, model.vocab, model.cfg)
    blocks = []
    for b, (in_cache, capacity, rss, buckets) in enumerate(ends):
        lo, hi = b * block_ticks, min(len(scenario), (b + 1) * block_ticks)
        end_gidx = enc.tick_starts[hi] if hi < len(scenario) else len(enc)
        blocks.append(
            Block(
                start_min=lo / TICKS_PER_MINUTE,
                end_min=hi / TICKS_PER_MINUTE,
                step_ms=percentiles(step_ms[lo:hi]),
                over_deadline=sum(ms > MICRO_TURN_MS for ms in step_ms[lo:hi]),
                cache_max=max(cache[lo:hi]),
                capacity=capacity,
                rss_mb=round(rss, 1),
                instruction_in_cache=in_cache,
                pinned=int(np.count_nonzero(enc.pinned[:end_gidx])),
                instruction_pins=int(np.count_nonzero(enc.pinned[:end_gidx] == INSTRUCTION_PIN)),
                bucket_words=buckets,
                behaviour=behaviour([scenario[lo:hi]], [outputs[lo:hi]]),
            )
        )
    return Run(blocks, len(instruction), outputs, step_ms, cache, stream)


def _in_cache(stream: SessionStream, gidx: Sequence[int]) -> int:
    return len(set(gidx) & set(stream.gidx.tolist()))


# ----------------------------------------------------------------------------------------------------
# Report


def load_model(checkpoint: Path | None, config: str, seed: int) -> TickModel:
    """The trained network, or (``checkpoint`` None) an untrained one of shape ``config``."""
    if checkpoint is not None:
        return TickModel.load(checkpoint)
    torch.manual_seed(seed)
    cfg = preset(config)
    vocab = Vocab.build(TEMPLATE_WORDS, cfg.n_buckets)
    model = TickModel(InteractionNet(cfg, vocab.size), vocab)
    model.warmup()
    return model


def markdown(run: Run, model: TickModel, trained: bool) -> str:
    cfg = model.cfg
    bound = cfg.cache_bound + CACHE_SLACK
    lines = [
        "| minutes | step ms p50 | p95 | p99 | max | > 200 ms | cache max | capacity | RSS MB "
        "| instruction in cache | pinned so far (as instructions) | says on time | right word | false says |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in run.blocks:
        p, m = b.step_ms, b.behaviour
        if trained:
            hits, targets = int(m.get("say_hits", 0)), int(m.get("say_targets", 0))
            acc = m.get("say_word_acc")
            says = f"{hits}/{targets}"
            words = "–" if acc is None else f"{acc:.0%}"
            false = str(int(m.get("say_false", 0)))
        else:
            says = words = false = "n/a"
        lines.append(
            f"| {b.start_min:g}–{b.end_min:g} | {p['p50']:.1f} | {p['p95']:.1f} | {p['p99']:.1f} "
            f"| {p['max']:.1f} | {b.over_deadline} | {b.cache_max} | {b.capacity} | {b.rss_mb:.0f} "
            f"| {b.instruction_in_cache}/{run.instruction_tokens} | {b.pinned} ({b.instruction_pins}) "
            f"| {says} | {words} "
            f"| {false} |"
        )
    lines.append("")
    instructions, events = cfg.pin_budgets
    lines.append(
        f"Cache bound: window {cfg.window} + pin budgets {instructions} + {events} + slack {CACHE_SLACK} = "
        f"{bound} tokens. *Pinned so far*: tokens pinned since the start, the instruction's included, and "
        f"in brackets those pinned as instructions; the cache keeps the newest {instructions} of these, so "
        "the instruction, the oldest, starts to leave it once more than that were pinned."
    )
    if not trained:
        lines.append("Untrained network: behaviour is not measured (its acts are noise).")
    return "\n".join(lines)


def plot(run: Run, session: LongSession, model: TickModel, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [k / TICKS_PER_MINUTE for k in range(len(run.step_ms))]
    fig, (ax_ms, ax_cache, ax_say) = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    ax_ms.plot(minutes, run.step_ms, ",", alpha=0.5)
    ax_ms.set_ylabel("step ms")
    ax_ms.set_yscale("log")
    ax_cache.plot(minutes, run.cache, lw=0.6)
    bound = model.cfg.cache_bound + CACHE_SLACK
    ax_cache.axhline(bound, color="r", ls="--", lw=0.8, label=f"bound {bound}")
    ax_cache.set_ylabel("cache tokens")
    ax_cache.legend(loc="lower right")
    wanted = [k / TICKS_PER_MINUTE for k, t in enumerate(session.scenario) if t.output.words]
    said = [k / TICKS_PER_MINUTE for k, out in enumerate(run.outputs) if out.words]
    ax_say.eventplot([wanted, said], lineoffsets=[1, 0], linelengths=0.8, linewidths=0.6)
    ax_say.set_yticks([1, 0], ["expected say", "said"])
    ax_say.set_xlabel("session minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.long_session",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, help=f"trained network (default {DEFAULT_CHECKPOINT})")
    parser.add_argument(
        "--config",
        choices=("tiny", "small", "gpu"),
        help="an untrained network of this shape instead of a checkpoint",
    )
    parser.add_argument("--minutes", type=float, default=FULL_MINUTES)
    parser.add_argument("--block-minutes", type=float, default=BLOCK_MINUTES)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_MINUTES:g} minutes in blocks of {QUICK_BLOCK_MINUTES:g} (smoke)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the session's input (and an untrained net)")
    parser.add_argument("--every", type=int, default=EVERY_S, help="seconds between the says asked for")
    parser.add_argument("--word", default=WORD, help="the word to say")
    parser.add_argument("--typed", action="store_true", help="the instruction is typed, not spoken")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the service uses 1)")
    parser.add_argument("--plot", action="store_true", help="also write a PNG next to the JSON")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.block_minutes = QUICK_MINUTES, QUICK_BLOCK_MINUTES
    torch.set_num_threads(args.threads)
    config = args.config or "small"
    checkpoint: Path | None = None
    if args.config is None:
        checkpoint = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.exists() else None)
        if checkpoint is None:
            print(
                f"no checkpoint at {DEFAULT_CHECKPOINT}: an untrained `small` network, so cost and memory "
                "are measured, behaviour is not",
                file=sys.stderr,
            )
    model = load_model(checkpoint, config, args.seed)
    session = long_session(args.seed, args.minutes, args.every, args.word, typed=args.typed)
    started = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    run = step_session(model, session, round(args.block_minutes * TICKS_PER_MINUTE))
    elapsed = time.monotonic() - t0
    trained = checkpoint is not None
    table = markdown(run, model, trained)
    source = str(checkpoint) if trained else f"untrained {config}"
    print(
        f"\n**Long session** ({args.minutes:g} min, {len(session.scenario)} micro-turns, {source}, "
        f"{args.threads} torch thread(s); instruction {session.instruction!r})\n"
    )
    print(table)
    print(f"\n({elapsed:.0f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"long-session-{started}.json"
    result: dict[str, Any] = {
        "benchmark": "long-session",
        "command": shlex.join(
            ["python", "-m", "bench.long_session", *(argv if argv is not None else sys.argv[1:])]
        ),
        "model": source,
        "meta": model.meta,
        "config": asdict(model.cfg),
        "minutes": args.minutes,
        "micro_turns": len(session.scenario),
        "instruction": session.instruction,
        "instruction_tokens": run.instruction_tokens,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "seconds": round(elapsed, 1),
        "behaviour": behaviour([session.scenario], [run.outputs]) if trained else None,
        "blocks": [asdict(b) for b in run.blocks],
        "table": table,
    }
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    if args.plot:
        png = path.with_suffix(".png")
        plot(run, session, model, png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
