"""Sessions per accelerator at the 200 ms deadline: how many sessions one
:class:`~model.interaction.TickModel` steps in one batch while the step stays inside the micro-turn.

For each config (``small``: the committed CPU model's shape; ``gpu``: ~12 M parameters) and each batch
size B, B sessions replay generated scenarios (``model.scenarios.generate``: instructions, speech, typed
questions, background results) one micro-turn per step, with the model's own decisions fed back, as the
runtime does. Before timing, every session is stepped until its KV cache reaches its steady size (the
attention window plus pinned tokens), so the numbers are those of a long session, not of an empty cache.

A step is :meth:`TickModel.step` for all B sessions: one batched forward for the input, then one per word
said. Untrained weights (no ``--checkpoint``) speak often, several words a micro-turn, so they cost more
forwards per step than a trained model; the table shows forwards per step, so compare like with like.

Only the network is timed: the recogniser and synthesiser run beside it on CPU cores, and transport to and
from the worker adds ~2 ms (bench.worker). ``--budget-ms`` (default 150) is the part of the 200 ms tick
left to the step; the largest B whose p95 stays under it is reported as sessions per device.

    python3 -m bench.gpu                                   # cuda when present, else cpu
    python3 -m bench.gpu --quick                           # smoke: small config, B in 1 2 4
    python3 -m bench.gpu --config small --checkpoint model/checkpoints/microturn.pt --sessions 1 2 4 8

Writes bench/results/gpu-<time>.json (``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.interaction import (
    InteractionNet,
    SessionStream,
    TickModel,
    Vocab,
    load_checkpoint,
    n_params,
    preset,
)
from model.scenarios import TEMPLATE_WORDS, generate
from model.ticks import Act, Scenario, TickInput

MICRO_TURN_MS = 200.0  # the deadline every step lives under
SCENARIO_SEED = 424_242  # scenarios replayed by the sessions (not a training or validation seed)
FILL_CHUNK = 256  # sessions stepped together while filling caches (bounds the memory of the fill)


@dataclass
class Row:
    """One (config, batch size) measurement."""

    config: str
    device: str
    sessions: int
    steps: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    ms_per_session: float  # p50 / sessions
    forwards_per_step: float  # batched network calls: 1 + words said by the most talkative session
    tokens_per_step: float
    cache_tokens: int  # largest per-session KV length during the timed steps
    speaking_share: float  # share of session micro-turns whose action was <say>
    within_budget: bool


class Replay:
    """Each session's input: a generated scenario, started at its own offset, looped; each session keeps
    its own place, so sessions added later start at their beginning."""

    def __init__(self, scenarios: Sequence[Scenario]) -> None:
        self.scenarios = scenarios
        self.ticks: list[int] = []  # micro-turns replayed so far, per session

    def inputs(self, first: int, count: int) -> list[TickInput]:
        """The next micro-turn of sessions first .. first + count - 1 (advancing them)."""
        while len(self.ticks) < first + count:
            self.ticks.append(0)
        out = []
        for i in range(first, first + count):
            sc = self.scenarios[i % len(self.scenarios)]
            out.append(sc[(i * 37 + self.ticks[i]) % len(sc)].input)
            self.ticks[i] += 1
        return out


def build_model(config: str, checkpoint: Path | None, device: str) -> TickModel:
    if checkpoint is not None:
        net, vocab, meta = load_checkpoint(checkpoint, device)
        if net.cfg != preset(config, seed=net.cfg.seed, data_version=net.cfg.data_version):
            print(
                f"note: {checkpoint} is not the {config!r} preset's shape; timing it as saved",
                file=sys.stderr,
            )
        return TickModel(net, vocab, device, meta)
    torch.manual_seed(0)
    cfg = preset(config)
    vocab = Vocab.build(TEMPLATE_WORDS, cfg.n_buckets)
    return TickModel(InteractionNet(cfg, vocab.size), vocab, device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fill(model: TickModel, sessions: list[SessionStream], first: int, replay: Replay, ticks: int) -> None:
    """Step sessions[first:] ``ticks`` micro-turns, FILL_CHUNK at a time."""
    for _ in range(ticks):
        for start in range(first, len(sessions), FILL_CHUNK):
            chunk = sessions[start : start + FILL_CHUNK]
            model.step(chunk, replay.inputs(start, len(chunk)))


def measure(
    model: TickModel, config: str, sessions: list[SessionStream], replay: Replay, steps: int, budget_ms: float
) -> Row:
    b = len(sessions)
    times, forwards, tokens, said = [], [], [], 0
    cache = 0
    for _ in range(steps):
        inputs = replay.inputs(0, b)
        sync(str(model.device))
        t = time.perf_counter()
        outputs = model.step(sessions, inputs)
        sync(str(model.device))
        times.append((time.perf_counter() - t) * 1000.0)
        forwards.append(model.timing.forwards)
        tokens.append(model.timing.tokens)
        cache = max(cache, model.timing.max_cache)
        said += sum(o.act is Act.SAY for o in outputs)
    p50, p95 = (float(x) for x in np.percentile(times, [50, 95]))
    return Row(
        config=config,
        device=str(model.device),
        sessions=b,
        steps=steps,
        p50_ms=round(p50, 2),
        p95_ms=round(p95, 2),
        max_ms=round(max(times), 2),
        ms_per_session=round(p50 / b, 3),
        forwards_per_step=round(float(np.mean(forwards)), 2),
        tokens_per_step=round(float(np.mean(tokens)), 1),
        cache_tokens=cache,
        speaking_share=round(said / (b * steps), 3),
        within_budget=p95 <= budget_ms,
    )


def fill_ticks(model: TickModel) -> int:
    """Micro-turns until a cache holds about a window plus its pins (~3.5 tokens a micro-turn)."""
    cfg = model.cfg
    return int(cfg.cache_bound / 3.5) + 10


def run_config(
    config: str,
    checkpoint: Path | None,
    device: str,
    batch_sizes: Sequence[int],
    steps: int,
    budget_ms: float,
    fill_override: int | None,
    max_seconds: float,
) -> list[Row]:
    model = build_model(config, checkpoint, device)
    model.warmup()
    print(
        f"{config}: {n_params(model.net) / 1e6:.2f} M params on {model.device}"
        f"{' (' + str(checkpoint) + ')' if checkpoint else ' (untrained weights)'}",
        flush=True,
    )
    replay = Replay(generate(SCENARIO_SEED, 64))
    ticks = fill_override if fill_override is not None else fill_ticks(model)
    sessions: list[SessionStream] = []
    rows: list[Row] = []
    started = time.perf_counter()
    for b in sorted(batch_sizes):
        if time.perf_counter() - started > max_seconds:
            print(f"  stopping before B={b}: this config's {max_seconds:.0f} s are spent", flush=True)
            break
        # Sessions added for this batch size first reach a steady cache; the others carry on.
        t = time.perf_counter()
        first = len(sessions)
        sessions += [model.new_session() for _ in range(b - first)]
        fill(model, sessions, first, replay, ticks)
        fill_s = time.perf_counter() - t
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        row = measure(model, config, sessions[:b], replay, steps, budget_ms)
        rows.append(row)
        memory = f"  {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.startswith("cuda") else ""
        print(
            f"  B={b:5d}  p50 {row.p50_ms:8.2f} ms  p95 {row.p95_ms:8.2f} ms  "
            f"{row.forwards_per_step:.1f} forwards/step  cache {row.cache_tokens} tokens{memory}  "
            f"(fill {fill_s:.0f} s)",
            flush=True,
        )
        if row.p50_ms > 3 * budget_ms:  # far past the deadline: bigger batches only take longer
            break
    for s in sessions:
        s.close()
    return rows


def markdown(rows: Sequence[Row], budget_ms: float) -> str:
    lines = [
        "| config | device | sessions | step p50 (ms) | step p95 (ms) | ms/session | forwards/step | "
        f"say share | cache (tokens) | p95 ≤ {budget_ms:.0f} ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.config} | {r.device} | {r.sessions} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | "
            f"{r.ms_per_session:.3f} | "
            f"{r.forwards_per_step:.1f} | {r.speaking_share:.2f} | {r.cache_tokens} | "
            f"{'yes' if r.within_budget else 'no'} |"
        )
    return "\n".join(lines)


def sessions_per_device(rows: Sequence[Row]) -> dict[str, int]:
    """Per config: the largest measured batch whose p95 step is within the budget (0 if none)."""
    best: dict[str, int] = {}
    for r in rows:
        best.setdefault(r.config, 0)
        if r.within_budget:
            best[r.config] = max(best[r.config], r.sessions)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when present)")
    parser.add_argument("--config", nargs="+", default=["small", "gpu"], choices=("tiny", "small", "gpu"))
    parser.add_argument("--checkpoint", type=Path, help="trained weights (their shape must be --config's)")
    parser.add_argument("--sessions", type=int, nargs="+", help="batch sizes (default by device)")
    parser.add_argument("--steps", type=int, default=40, help="timed micro-turns per batch size")
    parser.add_argument("--fill", type=int, help="micro-turns stepped before timing (default: a full cache)")
    parser.add_argument("--budget-ms", type=float, default=150.0, help="step time allowed of the 200 ms tick")
    parser.add_argument("--max-seconds", type=float, default=200.0, help="per config: no bigger B after this")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: small config, B in 1 2 4, 10 steps")
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/gpu-<time>.json)")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint is not None and len(args.config) != 1:
        parser.error("--checkpoint holds one config's weights: name that one with --config")
    configs = ["small"] if args.quick else args.config
    if args.sessions:
        batch_sizes = args.sessions
    elif args.quick:
        batch_sizes = [1, 2, 4]
    else:
        batch_sizes = [1, 8, 32, 128, 256, 512, 1024, 2048] if device.startswith("cuda") else [1, 2, 4, 8, 16]
    steps = 10 if args.quick else args.steps
    fill_override = 20 if args.quick and args.fill is None else args.fill
    rows: list[Row] = []
    for config in configs:
        rows += run_config(
            config,
            args.checkpoint,
            device,
            batch_sizes,
            steps,
            args.budget_ms,
            fill_override,
            args.max_seconds,
        )
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
    table = markdown(rows, args.budget_ms)
    best = sessions_per_device(rows)
    print()
    print(f"device: {gpu}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads")
    print(table)
    for config, n in best.items():
        print(
            f"{config}: {n} sessions per device with step p95 <= {args.budget_ms:.0f} ms "
            f"(of {MICRO_TURN_MS:.0f})"
        )
    result: dict[str, Any] = {
        "command": "python -m bench.gpu " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": gpu,
        "torch": str(torch.__version__),
        "budget_ms": args.budget_ms,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "sessions_per_device": best,
        "rows": [asdict(r) for r in rows],
    }
    out = args.out or Path("bench/results") / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
