"""Train the interaction network (model/interaction.py) on the scenario generator's sessions.

    python -m model.train --minutes 50 --seed 0 --config small --out model/checkpoints/microturn.pt

Data: ``model.scenarios.generate(seed, count)``, fresh scenarios every ``pool_steps`` steps from training
seeds ``seed * 1_000_000 + round``; validation uses its own fixed seed (:data:`VAL_SEED`), so its sessions
are never trained on. Each training sequence is a crop of one session (plus the pinned tokens from before
the crop, as the streaming cache would hold them); the loss is on the model's own tokens only.

Validation measures *behaviour*: the validation sessions are stepped micro-turn by micro-turn through
:class:`~model.interaction.TickModel` (the runtime's code path, the model's own outputs fed back), and
compared with what the scenario wanted: per-act recall, and for ``<say>`` hits within
±:data:`TOLERANCE_TICKS`, onset error and word accuracy, and false alarms; where the data source labels
its ``<say>`` targets (the generator does), also per kind of target (:func:`say_by_kind`).

The learning rate warms up, stays constant, and cools down (cosine) over the last quarter. With
``--minutes`` the cooldown starts when three quarters of the training time have passed and is sized from
the recent pace (the machine is shared: its speed changes); the log's ``reproduce`` line (``--steps N
--decay-start D --seed S``) repeats the run exactly on the same thread count (data and init are seeded).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import random
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from model.interaction import (
    DEFAULT_CHECKPOINT,
    FAR_GIDX,
    INSTRUCTION_PIN,
    EncodedScenario,
    InteractionConfig,
    InteractionNet,
    TickModel,
    Vocab,
    attention_mask,
    encode_scenario,
    n_params,
    preset,
    save_checkpoint,
)
from model.ticks import Act, Scenario, Tick, TickInput, TickOutput

VAL_SEED = 987_654_321  # validation scenarios: a seed no training round uses (those are < 10^6 apart)
TOLERANCE_TICKS = 2  # a say within ±2 micro-turns (±0.4 s) of its target is on time (TimeSpeak: ±0.5 s)
POS_JITTER_TICKS = 10_000  # random shift of training positions: sessions stream for up to ~9000 ticks

Generate = Callable[[int, int], list[Scenario]]
# What asked for each <say> target, by micro-turn ("periodic", "cue", ...: model.scenarios.SayKinds).
SayKinds = dict[int, str]
LabelledGenerate = Callable[[int, int], list[tuple[Scenario, SayKinds]]]
SayByKind = dict[str, list[int]]  # kind -> [right words on time, targets, false alarms] (say_by_kind())
Metrics = dict[str, float | SayByKind]  # validate(): numbers, and "say_by_kind"


@dataclass
class TrainSettings:
    """Optimisation settings of one config (the network's shape is InteractionConfig)."""

    batch_size: int  # crops per step
    lr: float  # peak learning rate (AdamW), reached after warmup, cosine down to lr * min_lr_frac
    warmup_steps: int
    min_lr_frac: float = 0.1
    weight_decay: float = 0.05  # on matrices only (not norms, not the offset table)
    grad_clip: float = 1.0
    pool_size: int = 256  # scenarios generated per data round
    pool_steps: int = 100  # steps trained on one round before the next is generated
    val_count: int = 48  # validation scenarios (behaviour and loss)
    val_times: int = 5  # behaviour validations spread over the run (the last one at the end)
    val_share: float = 0.1  # share of a --minutes budget set aside for them
    decay_share: float = 0.25  # last share of the run (steps, or training time) spent cooling down
    loss_skip: int = 96  # tokens at the start of a mid-session crop without loss: their past is cut off
    # Loss weight of <wait> targets (97 % of actions). Below 1, greedy decoding acts once an event is
    # likelier than w / (1 + w) (1/3 at 0.5), and the rare events get more of the gradient.
    wait_weight: float = 1.0


SETTINGS = {
    "tiny": TrainSettings(batch_size=8, lr=3e-3, warmup_steps=10, pool_size=64, val_count=16, loss_skip=32),
    "small": TrainSettings(batch_size=16, lr=2e-3, warmup_steps=30, val_count=32, wait_weight=0.5),
    "gpu": TrainSettings(batch_size=64, lr=1e-3, warmup_steps=100, pool_size=1024, val_count=128),
}


# ----------------------------------------------------------------------------------------------------
# Data


def demo_scenarios(seed: int, count: int) -> list[Scenario]:
    """A stand-in generator (``--data demo``): "every N seconds say W until I say stop", W an invented
    word (so only copying through its hash bucket can say it). Tests and smoke runs use it."""
    rng = random.Random(seed)
    syllables = ("ba", "zo", "rik", "tu", "mel", "fa", "no", "qui", "dar", "pe", "lon", "ska")
    return [
        schedule_scenario(
            word="".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))),
            every_s=rng.choice((1, 2, 3)),
            repeats=rng.randint(2, 5),
            lead=rng.randint(1, 6),
        )
        for _ in range(count)
    ]


NUMBERS = ("zero", "one", "two", "three", "four", "five")


def schedule_scenario(word: str, every_s: int, repeats: int, lead: int = 2, tail: int = 4) -> Scenario:
    """ "every <n> seconds say <word> until i say stop", spoken one word a micro-turn; the agent says the
    word right after the instruction and every ``every_s`` seconds; the user says "stop" after
    ``repeats`` of them, the agent stops. ``lead``/``tail``: silent micro-turns before/after."""
    ticks: list[Tick] = [Tick(TickInput()) for _ in range(lead)]
    for w in f"every {NUMBERS[every_s]} seconds say {word} until i say stop".split():
        ticks.append(Tick(TickInput(user_speaking=True, tokens=(w,))))
    period = every_s * 5  # micro-turns
    for i in range(repeats * period):
        out = TickOutput(Act.SAY, (word,)) if i % period == 0 else TickOutput()
        ticks.append(Tick(TickInput(agent_speaking=i % period == 1), out))
    ticks.append(Tick(TickInput(user_speaking=True, tokens=("stop",)), TickOutput(Act.STOP)))
    ticks.extend(Tick(TickInput()) for _ in range(tail))
    return ticks


@dataclass
class DataSource:
    generate: Generate
    version: str
    template_words: frozenset[str]
    # The same sessions with the kind of each <say> target, where the source knows it: validation then
    # reports <say> per kind (TimeSpeak apart from CueSpeak).
    labelled: LabelledGenerate | None = None


def data_source(name: str) -> DataSource:
    if name == "demo":
        return DataSource(demo_scenarios, "demo-1", frozenset())
    # model.scenarios (the scenario generator) is imported only when training on it.
    scenarios = importlib.import_module("model.scenarios")

    return DataSource(
        scenarios.generate,
        str(scenarios.DATA_VERSION),
        frozenset(scenarios.TEMPLATE_WORDS),
        scenarios.generate_labelled,
    )


@dataclass
class Batch:
    tokens: Tensor  # [B, T] token ids
    pos: Tensor  # [B, T] micro-turn index (plus a random shift per row)
    offset: Tensor  # [B, T] index within the micro-turn
    gidx: Tensor  # [B, T] index in the session's stream (padding: +FAR_GIDX)
    pinned: Tensor  # [B, T] pin class (model.interaction.NOT_PINNED ...)
    targets: Tensor  # [B, T] next token
    weights: Tensor  # [B, T] loss weight of predicting targets (0: no loss)

    @property
    def n_targets(self) -> int:
        return int((self.weights > 0).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(*(getattr(self, f.name).to(device) for f in fields(self)))


def crop_indices(
    enc: EncodedScenario, start: int, cfg: InteractionConfig, loss_skip: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stream indices of one training sequence starting at token ``start``, and where its loss counts.

    Before the crop come the pinned tokens the streaming cache could still hold (of each pin class, the
    newest ``budget + window`` pinned tokens before ``start``: a superset of what the mask lets through)."""
    n = len(enc)
    end = min(n, start + cfg.crop)
    kept = [
        np.flatnonzero(enc.pinned[:start] == kind)[-(budget + cfg.window) :]
        for kind, budget in enumerate(cfg.pin_budgets, start=INSTRUCTION_PIN)
    ]
    idx = np.concatenate([np.sort(np.concatenate(kept)), np.arange(start, end)])
    nxt = np.minimum(idx + 1, n - 1)
    loss = enc.output[nxt] & (idx + 1 < n) & (idx >= start)
    if start > 0:
        loss &= idx >= start + loss_skip
    return idx, loss


def make_batch(
    crops: Sequence[tuple[EncodedScenario, np.ndarray, np.ndarray]],
    vocab: Vocab,
    wait_weight: float,
    shifts: Sequence[int],
) -> Batch:
    t = max(len(idx) for _, idx, _ in crops)
    b = len(crops)
    tokens = np.full((b, t), vocab.pad_id, dtype=np.int64)
    pos = np.zeros((b, t), dtype=np.int64)
    offset = np.zeros((b, t), dtype=np.int64)
    gidx = FAR_GIDX + np.tile(np.arange(t, dtype=np.int64), (b, 1))
    pinned = np.zeros((b, t), dtype=np.int8)
    targets = np.zeros((b, t), dtype=np.int64)
    weights = np.zeros((b, t), dtype=np.float32)
    wait_id = vocab.act_ids[Act.WAIT]
    for i, ((enc, idx, loss), shift) in enumerate(zip(crops, shifts, strict=True)):
        m = len(idx)
        nxt = np.minimum(idx + 1, len(enc) - 1)
        tokens[i, :m] = enc.ids[idx]
        pos[i, :m] = enc.pos[idx] + shift
        offset[i, :m] = enc.offset[idx]
        gidx[i, :m] = idx
        pinned[i, :m] = enc.pinned[idx]
        targets[i, :m] = enc.ids[nxt]
        weights[i, :m] = np.where(enc.ids[nxt] == wait_id, wait_weight, 1.0) * loss
    return Batch(*(torch.from_numpy(x) for x in (tokens, pos, offset, gidx, pinned, targets, weights)))


def loss_of(net: InteractionNet, batch: Batch) -> Tensor:
    """Weighted mean cross-entropy of the model's own tokens (actions, said words, <end>)."""
    cfg = net.cfg
    mask = attention_mask(batch.gidx, batch.gidx, batch.pinned, cfg.window, cfg.pin_budgets)  # [B, 1, T, T]
    h, _ = net.hidden(batch.tokens, batch.pos, batch.offset, mask)  # [B, T, D]
    # The same mixture as InteractionNet.forward, but only the target's probability and only where there
    # is a target: the full [B, T, V] distribution would be most of the cost.
    sel = batch.weights > 0  # [B, T]
    keys = net.copy.keys(h, batch.pos)  # [B, T, dc]
    p = net.copy.weights(h, batch.pos, keys, batch.tokens, mask)[sel]  # [M, T + 1]
    y = batch.targets[sel]  # [M]
    key_ids = batch.tokens[sel.nonzero()[:, 0]]  # [M, T]: the tokens each target's row can copy
    copied = (p[:, :-1] * (key_ids == y[:, None])).sum(-1)  # [M]
    generated = p[:, -1] * F.log_softmax(net.logits(h[sel]), dim=-1).gather(-1, y[:, None])[:, 0].exp()
    nll = -(copied + generated).clamp_min(1e-9).log()  # [M]
    w = batch.weights[sel]
    return (nll * w).sum() / w.sum()


class Crops:
    """Random crops of a pool of encoded scenarios."""

    def __init__(
        self, pool: Sequence[EncodedScenario], cfg: InteractionConfig, settings: TrainSettings
    ) -> None:
        self.pool = [e for e in pool if len(e) > 1]
        self.cfg = cfg
        self.settings = settings

    def sample(self, rng: np.random.Generator, vocab: Vocab) -> Batch:
        crops = []
        for _ in range(self.settings.batch_size):
            enc = self.pool[int(rng.integers(len(self.pool)))]
            # Start at a micro-turn boundary such that the crop is full (any start for short sessions).
            starts = enc.tick_starts[enc.tick_starts <= max(0, len(enc) - self.cfg.crop)]
            start = int(starts[int(rng.integers(len(starts)))])
            crops.append((enc, *crop_indices(enc, start, self.cfg, self.settings.loss_skip)))
        shifts = rng.integers(0, POS_JITTER_TICKS, size=len(crops)).tolist()
        return make_batch(crops, vocab, self.settings.wait_weight, shifts)

    def first_crops(self, vocab: Vocab, batch_size: int) -> list[Batch]:
        """Deterministic batches of each scenario's opening crop (validation loss)."""
        crops = [(enc, *crop_indices(enc, 0, self.cfg, 0)) for enc in self.pool]
        return [
            make_batch(crops[i : i + batch_size], vocab, 1.0, [0] * len(crops[i : i + batch_size]))
            for i in range(0, len(crops), batch_size)
        ]


# ----------------------------------------------------------------------------------------------------
# Behaviour


def run_sessions(model: TickModel, scenarios: Sequence[Scenario], batch: int = 64) -> list[list[TickOutput]]:
    """Step each scenario's inputs through the model (its own outputs fed back), ``batch`` sessions at
    once as the runtime would; return what it decided each micro-turn."""
    results: list[list[TickOutput]] = []
    for first in range(0, len(scenarios), batch):
        group = scenarios[first : first + batch]
        sessions = [model.new_session() for _ in group]
        outs: list[list[TickOutput]] = [[] for _ in group]
        for t in range(max(len(sc) for sc in group)):
            live = [i for i, sc in enumerate(group) if t < len(sc)]
            step = model.step([sessions[i] for i in live], [group[i][t].input for i in live])
            for i, out in zip(live, step, strict=True):
                outs[i].append(out)
        results.extend(outs)
    return results


def match_events(targets: list[int], predicted: list[int], tolerance: int) -> list[tuple[int, int]]:
    """Pairs (target tick, predicted tick) within ``tolerance``, closest first, each used once."""
    pairs = sorted(
        ((abs(p - t), t, p) for t in targets for p in predicted if abs(p - t) <= tolerance),
    )
    used_t: set[int] = set()
    used_p: set[int] = set()
    matched = []
    for _, t, p in pairs:
        if t not in used_t and p not in used_p:
            used_t.add(t)
            used_p.add(p)
            matched.append((t, p))
    return matched


def act_events(
    scenario: Scenario, pred: Sequence[TickOutput], act: Act, tolerance: int
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """The micro-turns where ``scenario`` wants ``act``, those where the model chose it, and the pairs of
    them within ``tolerance`` (:func:`match_events`)."""
    want = [i for i, tick in enumerate(scenario) if tick.output.act is act]
    got = [i for i, out in enumerate(pred) if out.act is act]
    return want, got, match_events(want, got, tolerance)


def behaviour(
    scenarios: Sequence[Scenario],
    predictions: Sequence[Sequence[TickOutput]],
    tolerance: int = TOLERANCE_TICKS,
) -> dict[str, float]:
    """Compare what the model did with what each scenario wanted.

    - ``recall_<act>``: share of micro-turns whose target is <act> where the model chose it that very tick;
    - for every act but wait, events within ±tolerance: ``<act>_hits``/``<act>_targets``/``<act>_false``;
    - says: ``say_onset_err`` (mean |Δ| micro-turns of matched says), ``say_word_acc`` (matched says with
      exactly the target words), ``say_score`` = on-time right-word says / (targets + false alarms), as
      TimeSpeak scores.
    """
    per_act: dict[Act, list[int]] = {a: [0, 0] for a in Act}  # target count, same-tick correct
    events: dict[Act, list[int]] = {
        a: [0, 0, 0] for a in Act if a is not Act.WAIT
    }  # targets, hits, false alarms
    onset_err: list[int] = []
    word_ok = 0
    for scenario, pred in zip(scenarios, predictions, strict=True):
        for tick, out in zip(scenario, pred, strict=True):
            per_act[tick.output.act][0] += 1
            per_act[tick.output.act][1] += int(out.act is tick.output.act)
        for act in events:
            want, got, matched = act_events(scenario, pred, act, tolerance)
            events[act][0] += len(want)
            events[act][1] += len(matched)
            events[act][2] += len(got) - len(matched)
            if act is Act.SAY:
                for t, p in matched:
                    onset_err.append(abs(p - t))
                    word_ok += int(pred[p].words == scenario[t].output.words)
    metrics: dict[str, float] = {}
    for act, (n, ok) in per_act.items():
        if n:
            metrics[f"recall_{act.name.lower()}"] = ok / n
    for act, (n, hits, false) in events.items():
        if n or false:
            name = act.name.lower()
            metrics[f"{name}_targets"] = n
            metrics[f"{name}_hits"] = hits
            metrics[f"{name}_false"] = false
    n_say, _, false_say = events[Act.SAY]
    if onset_err:  # undefined metrics are left out (JSON has no NaN)
        metrics["say_onset_err"] = float(np.mean(onset_err))
        metrics["say_word_acc"] = word_ok / len(onset_err)
    if n_say + false_say:
        metrics["say_score"] = word_ok / (n_say + false_say)
    return metrics


def say_by_kind(
    scenarios: Sequence[Scenario],
    predictions: Sequence[Sequence[TickOutput]],
    kinds: Sequence[SayKinds],
    tolerance: int = TOLERANCE_TICKS,
) -> SayByKind:
    """``<say>`` per kind of target (``kinds``: what asked for each target, by micro-turn): [right words on
    time, targets, false alarms], matched as :func:`behaviour` matches them (the kinds' sums are its
    ``say_score`` parts). A false alarm counts for the nearest target saying the same words (a reminder at
    the wrong period), else for the nearest target, else for "none"."""
    out: SayByKind = {}
    for scenario, pred, labels in zip(scenarios, predictions, kinds, strict=True):
        want, got, matched = act_events(scenario, pred, Act.SAY, tolerance)
        for t in want:
            out.setdefault(labels[t], [0, 0, 0])[1] += 1
        for t, p in matched:
            out[labels[t]][0] += int(pred[p].words == scenario[t].output.words)
        on_time = {p for _, p in matched}
        for p in got:
            if p not in on_time:
                same = [t for t in want if scenario[t].output.words == pred[p].words]
                near = min(same or want, key=lambda t: abs(t - p), default=None)
                out.setdefault("none" if near is None else labels[near], [0, 0, 0])[2] += 1
    return dict(sorted(out.items()))


def format_metrics(metrics: Mapping[str, object]) -> str:
    """One line of metrics; with ``say_by_kind``, a second line of it ("periodic 3/41+5": 3 of 41 targets
    said on time with the right words, 5 false alarms)."""
    parts = []
    for k, v in metrics.items():
        if isinstance(v, float | int) and k != "step":
            parts.append(f"{k}={v:.3f}" if isinstance(v, float) and not v.is_integer() else f"{k}={v:g}")
    line = " ".join(parts)
    kinds = metrics.get("say_by_kind")
    if isinstance(kinds, dict):
        line += "\n  say by kind (right/targets+false): " + " ".join(
            f"{kind} {hits}/{n}+{false}" for kind, (hits, n, false) in kinds.items()
        )
    return line


def validate(
    net: InteractionNet,
    vocab: Vocab,
    scenarios: Sequence[Scenario],
    loss_batches: list[Batch],
    with_behaviour: bool = True,
    say_kinds: Sequence[SayKinds] | None = None,
) -> Metrics:
    """Teacher-forced loss on the validation crops and (``with_behaviour``) free-running behaviour, with
    ``say_kinds`` (the scenarios' labels) also ``<say>`` per kind of target."""
    net.eval()
    with torch.no_grad():
        losses = [(float(loss_of(net, b)), b.n_targets) for b in loss_batches]
    metrics: Metrics = {"val_loss": sum(lo * n for lo, n in losses) / max(1, sum(n for _, n in losses))}
    if with_behaviour:
        model = TickModel(net, vocab, str(next(net.parameters()).device))
        predictions = run_sessions(model, scenarios)
        metrics.update(behaviour(scenarios, predictions))
        if say_kinds is not None:
            metrics["say_by_kind"] = say_by_kind(scenarios, predictions, say_kinds)
    net.train()
    return metrics


# ----------------------------------------------------------------------------------------------------
# Training


def preset_name(cfg: InteractionConfig) -> str | None:
    """The name of the preset ``cfg`` was made from (seed and data version aside), if any."""
    for name in SETTINGS:
        if replace(preset(name), seed=cfg.seed, data_version=cfg.data_version) == cfg:
            return name
    return None


def lr_at(step: int, decay_start: int, total: int, s: TrainSettings) -> float:
    """Warmup, then constant, then a cosine cooldown to ``lr * min_lr_frac`` from ``decay_start`` to
    ``total`` (warmup-stable-decay: the length of the run needs to be known only when cooling down)."""
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    if step < decay_start:
        return s.lr
    frac = min(1.0, (step - decay_start) / max(1, total - decay_start))
    return s.lr * (s.min_lr_frac + (1 - s.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def optimizer(net: InteractionNet, s: TrainSettings) -> torch.optim.AdamW:
    decay = [p for n, p in net.named_parameters() if p.dim() >= 2 and not n.startswith("off_emb")]
    rest = [p for n, p in net.named_parameters() if not (p.dim() >= 2 and not n.startswith("off_emb"))]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95))


class Progress:
    """tqdm when installed, else a line every few seconds."""

    def __init__(self, total: int | None) -> None:
        self.total = total  # None while unknown (a --minutes run before its cooldown)
        self._last = 0.0
        try:
            from tqdm import tqdm

            # Redirected to a log file (a background run): a line every 30 s rather than a stream of \r.
            interval = 0.5 if sys.stderr.isatty() else 30.0
            self._bar: Any = tqdm(total=total, unit="step", file=sys.stderr, mininterval=interval)
        except ImportError:
            self._bar = None

    def update(self, step: int, info: dict[str, str]) -> None:
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.update(1)
            self._bar.set_postfix(info, refresh=False)
        elif time.monotonic() - self._last > 10.0:
            self._last = time.monotonic()
            print(
                f"step {step + 1}/{self.total or '?'} " + " ".join(f"{k}={v}" for k, v in info.items()),
                flush=True,
            )

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def train(
    cfg: InteractionConfig,
    settings: TrainSettings,
    source: DataSource,
    *,
    seed: int = 0,
    steps: int | None = None,
    minutes: float | None = None,
    decay_start: int | None = None,
    out: Path | None = None,
    command: str = "",
    quiet: bool = False,
    device: str = "cpu",
) -> tuple[InteractionNet, Vocab, dict[str, Any]]:
    """Train; with ``out``, write the checkpoint and its JSON log. Returns the network, vocab and log."""
    if (steps is None) == (minutes is None):
        raise ValueError("give exactly one of steps and minutes")
    started = time.monotonic()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = replace(cfg, seed=seed, data_version=source.version)
    vocab = Vocab.build(source.template_words, cfg.n_buckets)
    dev = torch.device(device)
    net = InteractionNet(cfg, vocab.size).to(dev)
    net.train()
    opt = optimizer(net, settings)
    say = (lambda line: None) if quiet else print

    def pool(round_: int) -> Crops:
        scenarios = source.generate(seed * 1_000_000 + round_, settings.pool_size)
        return Crops([encode_scenario(sc, vocab, cfg) for sc in scenarios], cfg, settings)

    t = time.monotonic()
    crops = pool(0)
    gen_s = time.monotonic() - t
    # Labelled where the source can: validation then reports <say> per kind of target.
    labelled = source.labelled(VAL_SEED, settings.val_count) if source.labelled is not None else None
    val_scenarios = (
        [sc for sc, _ in labelled] if labelled is not None else source.generate(VAL_SEED, settings.val_count)
    )
    val_kinds = [kinds for _, kinds in labelled] if labelled is not None else None
    val_crops = Crops([encode_scenario(sc, vocab, cfg) for sc in val_scenarios], cfg, settings)
    val_loss_batches = [b.to(dev) for b in val_crops.first_crops(vocab, settings.batch_size)]
    say(
        f"interaction model {n_params(net) / 1e6:.2f}M params, vocab {vocab.size}, data {source.version}, "
        f"pool of {settings.pool_size} scenarios in {gen_s:.1f}s, "
        f"{np.mean([len(e) for e in crops.pool]):.0f} tokens each"
    )
    # Untrained, the model talks every micro-turn: its behaviour is slow to step and says nothing new.
    history = [{"step": 0, **validate(net, vocab, val_scenarios, val_loss_batches, with_behaviour=False)}]
    say(f"step 0: {format_metrics(history[-1])}")

    # With --steps the schedule is known; with --minutes the cooldown starts when 1 - decay_share of the
    # training time has passed, and lasts as many steps as the recent pace fits into the rest.
    unknown = 1 << 62
    total = steps if steps is not None else unknown
    if decay_start is None:
        decay_start = int(total * (1 - settings.decay_share)) if steps is not None else unknown
    train_budget_s = (minutes or 0.0) * 60 * (1 - settings.val_share)
    val_every_s = train_budget_s / settings.val_times
    next_val_s = val_every_s
    progress = Progress(total if steps is not None else None) if not quiet else None
    recent: list[float] = []  # seconds of the last steps, data rounds included
    tokens_seen = 0
    train_s = 0.0
    val_s = 0.0
    loss_ema = float("nan")
    step = 0
    stopped_early = False
    while step < total:
        t = time.monotonic()
        if step and step % settings.pool_steps == 0:
            crops = pool(step // settings.pool_steps)
        batch = crops.sample(rng, vocab).to(dev)
        lr = lr_at(step, decay_start, total, settings)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = loss_of(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
        opt.step()
        dt = time.monotonic() - t
        train_s += dt
        recent = [*recent[-(2 * settings.pool_steps - 1) :], dt]
        n_tok = int((batch.gidx < FAR_GIDX).sum())
        tokens_seen += n_tok
        value = loss.item()
        loss_ema = value if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * value
        step += 1
        elapsed = time.monotonic() - started
        # Time the validations still to come will take: the final one runs all sessions, twice those of
        # a mid-run one (measured once there has been one; until then the budget's val_share).
        mid_val_s = val_s / max(1, len(history) - 1) if len(history) > 1 else 0.0
        left_vals = max(0, settings.val_times - len(history))
        val_reserve_s = (left_vals + 2) * mid_val_s if mid_val_s else settings.val_share * (minutes or 0) * 60
        if (
            minutes is not None
            and total == unknown
            and elapsed - val_s >= (1 - settings.decay_share) * train_budget_s
        ):
            pace = sum(recent) / len(recent)
            decay_start = step
            left_s = minutes * 60 - elapsed - val_reserve_s
            total = step + max(1, int(left_s / pace))
            say(f"cooldown from step {decay_start} to {total} ({pace * 1000:.0f} ms/step lately)")
        if minutes is not None and step < total and elapsed + 2 * mid_val_s > minutes * 60:
            # The box got slower than it was (it is shared): keep the deadline, cut the cooldown short.
            say(f"time is up at step {step} of {total}: stopping early")
            stopped_early, total = True, step
        if progress is not None:
            progress.total = total if total != unknown else None
            info = {"loss": f"{loss_ema:.3f}", "lr": f"{lr:.1e}", "tok/s": f"{n_tok / dt:.0f}"}
            progress.update(step - 1, info)
        if steps is not None:
            every = max(1, total // settings.val_times)
            due = step % every == 0 and total - step >= every // 2
        else:
            due = elapsed - val_s >= next_val_s and total - step > settings.pool_steps // 4
        if step == total or due:
            next_val_s += val_every_s
            t = time.monotonic()
            # Mid-run checks on half the validation sessions, the final one on all of them. Validation
            # draws no random numbers: when it runs does not change the training.
            n_val = len(val_scenarios) if step == total else max(1, len(val_scenarios) // 2)
            kinds = val_kinds[:n_val] if val_kinds is not None else None
            metrics = validate(net, vocab, val_scenarios[:n_val], val_loss_batches, say_kinds=kinds)
            val_s += time.monotonic() - t
            history.append({"step": step, "train_loss": loss_ema, "sessions": n_val, **metrics})
            line = f"step {step}: {format_metrics(history[-1])}"
            if progress is not None:
                progress.write(line)
    if progress is not None:
        progress.close()
    wall = time.monotonic() - started
    log: dict[str, Any] = {
        "command": command,
        "config": asdict(cfg),
        "settings": asdict(settings),
        "data_version": source.version,
        "seed": seed,
        "steps": step,
        "decay_start": decay_start,
        "reproduce": (
            f"python -m model.train --steps {step} --decay-start {decay_start} --seed {seed}"
            f"{f' --config {name}' if (name := preset_name(cfg)) else ''} --threads {torch.get_num_threads()}"
        ),
        "tokens": tokens_seen,
        "tokens_per_s": tokens_seen / max(train_s, 1e-9),
        "minutes": wall / 60,
        "train_minutes": train_s / 60,
        "validation_minutes": val_s / 60,
        "stopped_early": stopped_early,
        "threads": torch.get_num_threads(),
        "params": n_params(net),
        "torch": str(torch.__version__),
        "final": history[-1],
        "history": history,
    }
    if out is not None:
        save_checkpoint(out, net, vocab, {k: v for k, v in log.items() if k != "history"})
        log["checkpoint_bytes"] = out.stat().st_size
        out.with_suffix(".json").write_text(json.dumps(log, indent=2) + "\n")
        say(f"wrote {out} ({log['checkpoint_bytes'] / 1e6:.1f} MB) and {out.with_suffix('.json')}")
    say(f"final ({wall / 60:.1f} min, {step} steps, {tokens_seen} tokens): {format_metrics(history[-1])}")
    return net, vocab, log


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="time budget, all included (default 50)")
    parser.add_argument("--steps", type=int, default=None, help="exact step count (not --minutes)")
    parser.add_argument("--decay-start", type=int, default=None, help="with --steps: first cooldown step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", choices=("tiny", "small", "gpu"), default="small")
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--data", choices=("generator", "demo"), default="generator")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the box is shared)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    if args.steps is None and args.minutes is None:
        args.minutes = 50.0
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    command = shlex.join(["python", "-m", "model.train", *(argv if argv is not None else sys.argv[1:])])
    train(
        preset(args.config),
        SETTINGS[args.config],
        data_source(args.data),
        seed=args.seed,
        steps=args.steps,
        minutes=args.minutes,
        decay_start=args.decay_start,
        out=args.out,
        command=command,
        device=device,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
