"""Measure the video features alone on generated benchmark-split clips: counting and visual-event delay.

    python -m model.video.evaluate [--quick] [--keep latest|all] [--json out.json]

Each clip is replayed as the media node delivers it (:mod:`model.video.replay`: sampled every 0.1 s,
downscaled to 160x120, one frame per micro-turn with ``--keep latest`` -- the service today -- or every
sampled frame with ``--keep all``), starting at a random point of a micro-turn, and sessions are stepped
together in batches of eight as a model worker would. An event counts as available at the *end* of the
micro-turn whose features carry it: that is when the model can act on it.

RepCount (as RepCount-A): MAE = mean |predicted - true| / true, OBO = share of clips with
|predicted - true| <= 1, and online: the n-th count is *in time* when it comes 0-1.0 s after the n-th
repetition completed; reported as a share of the counts given and of the repetitions done.

Visual events (as ProactiveVideoQA): each event is *detected* by the first feature event after it of the
right kind with the right answer; delay = availability - event time; score 1 at <= 0.5 s falling linearly to
0 at >= 3 s (0 if missed); false alarms = events of the scene's kind that match no true event.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.video.features import VideoEvent, VideoFeatureExtractor, VideoInput
from model.video.replay import Keep, Window, replay
from model.video.synthetic import EXERCISES, KINDS, SCENES, SPLITS, Clip, make_clip
from service.microturn import MICRO_TURN_MS

ONLINE_WINDOW_S = 1.0  # s after a repetition within which its count is in time (RepCount online)
FULL_SCORE_S = 0.5  # s: an answer this soon after the event scores 1 (ProactiveVideoQA)
ZERO_SCORE_S = 3.0  # s: ... and this late or later 0
BATCH = 8  # sessions stepped together
JITTER_S = 0.01  # s: spread of the frames' network delay
VISUAL_KINDS = ("colour", "appear", "vanish", "number")
EVENT_KINDS = {"light": ("colour", "appear"), "appear": ("appear",), "number": ("number",)}


@dataclass
class ClipRun:
    """One clip through the replay and the extractor."""

    clip: Clip
    offset_s: float  # session time at which the clip started
    events: list[tuple[float, VideoEvent]] = field(default_factory=list)  # (available at s of clip, event)
    ms: list[float] = field(default_factory=list)  # CPU ms per micro-turn with frames

    def reps(self) -> list[float]:
        return [t for t, e in self.events if e.kind == "rep"]


def run_clips(clips: Sequence[Clip], *, keep: Keep = "latest", seed: int = 0) -> list[ClipRun]:
    """Replay ``clips`` as sessions of one extractor, ``BATCH`` at a time in lockstep."""
    runs: list[ClipRun] = []
    for start in range(0, len(clips), BATCH):
        group = clips[start : start + BATCH]
        # Each clip's start within a micro-turn and network jitter follow from the clip alone, so a clip
        # replays the same whatever else is in its batch.
        rngs = [
            np.random.default_rng([seed, c.seed, KINDS.index(c.kind), SPLITS.index(c.split)]) for c in group
        ]
        offsets = [float(r.uniform(0.0, MICRO_TURN_MS / 1000)) for r in rngs]
        windows: list[list[Window]] = [
            replay(c.frames(), c.fps, keep=keep, start_s=o, jitter_s=JITTER_S, seed=int(r.integers(1 << 30)))
            for c, o, r in zip(group, offsets, rngs, strict=True)
        ]
        group_runs = [ClipRun(c, o) for c, o in zip(group, offsets, strict=True)]
        extractor = VideoFeatureExtractor()
        for k in range(max(len(w) for w in windows)):
            batch = [
                VideoInput(
                    f"s{i}", k * MICRO_TURN_MS, w[k].frames if k < len(w) else [], closing=k == len(w) - 1
                )
                for i, w in enumerate(windows)
                if k < len(w)
            ]
            live = [i for i, w in enumerate(windows) if k < len(w)]
            for i, features in zip(live, extractor.step(batch), strict=True):
                run = group_runs[i]
                available = (k * MICRO_TURN_MS + MICRO_TURN_MS) / 1000 - run.offset_s  # s of the clip
                run.events.extend((available, e) for e in features.events)
                if features.frames:
                    run.ms.append(features.ms)
        runs.extend(group_runs)
    return runs


def answer_credit(delay_s: float) -> float:
    """ProactiveVideoQA's credit for an answer ``delay_s`` after the event: 1 up to ``FULL_SCORE_S``,
    falling linearly to 0 at ``ZERO_SCORE_S`` (bench/suite/scoring.py scores the spoken answers with it)."""
    return float(np.clip((ZERO_SCORE_S - delay_s) / (ZERO_SCORE_S - FULL_SCORE_S), 0.0, 1.0))


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def rep_metrics(runs: Sequence[ClipRun]) -> dict[str, Any]:
    """RepCount-A metrics of the rep events alone."""
    errors, obo, exact, delays = [], [], [], []
    counts_in_time = counts = reps_in_time = reps = visual = 0
    for run in runs:
        visual += sum(e.kind in VISUAL_KINDS for _, e in run.events)
        truth, got = run.clip.rep_times, run.reps()
        errors.append(abs(len(got) - len(truth)) / len(truth))
        obo.append(abs(len(got) - len(truth)) <= 1)
        exact.append(len(got) == len(truth))
        counts += len(got)
        reps += len(truth)
        for t_rep, t_count in zip(truth, got, strict=False):  # the n-th count names the n-th repetition
            delay = t_count - t_rep
            delays.append(delay)
            if 0.0 <= delay <= ONLINE_WINDOW_S:
                counts_in_time += 1
                reps_in_time += 1
    return {
        "clips": len(runs),
        "reps": reps,
        "counts": counts,
        "MAE": round(float(np.mean(errors)), 4) if errors else None,
        "OBO": round(float(np.mean(obo)), 4) if obo else None,
        "exact": round(float(np.mean(exact)), 4) if exact else None,
        "counts_in_time": round(counts_in_time / counts, 4) if counts else None,  # share of counts given
        "reps_in_time": round(reps_in_time / reps, 4) if reps else None,  # share of repetitions done
        "delay_median_s": _pct(delays, 50),
        "delay_p95_s": _pct(delays, 95),
        "delay_min_s": round(min(delays), 3) if delays else None,
        "visual_false_alarms": visual,  # colour/appear/vanish/number events: nothing of the kind happens
    }


def _matches(scene: str, answer: str, event: VideoEvent) -> bool:
    if event.kind not in EVENT_KINDS[scene]:
        return False
    if scene == "light":  # "the light turned red": a colour change to red, or a red thing lighting up
        return event.value.split()[0] == answer
    return event.value == answer


def event_metrics(runs: Sequence[ClipRun]) -> dict[str, Any]:
    """Detection delay, score and false alarms of the scenes' events."""
    delays, scores, colour_right = [], [], []
    false_alarms = detected = total = 0
    for run in runs:
        scene = run.clip.kind
        truth = run.clip.events
        used: set[int] = set()
        for k, ev in enumerate(truth):
            total += 1
            until = truth[k + 1].t if k + 1 < len(truth) else run.clip.duration + 5.0
            hit = next(
                (
                    (i, t)
                    for i, (t, e) in enumerate(run.events)
                    if i not in used and ev.t <= t < until + 0.5 and _matches(scene, ev.answer, e)
                ),
                None,
            )
            if hit is None:
                scores.append(0.0)
                continue
            used.add(hit[0])
            delay = hit[1] - ev.t
            detected += 1
            delays.append(delay)
            scores.append(answer_credit(delay))
        for i, (_, e) in enumerate(run.events):
            if i not in used and e.kind in EVENT_KINDS[scene]:
                false_alarms += 1
        if scene == "appear":  # the colour alone, for "tell me when something red appears"
            got = [e for _, e in run.events if e.kind == "appear"]
            colour_right.append(bool(got) and got[0].value.split()[0] == truth[0].answer.split()[0])
    out: dict[str, Any] = {
        "clips": len(runs),
        "events": total,
        "detected": detected,
        "recall": round(detected / total, 4) if total else None,
        "score": round(float(np.mean(scores)), 4) if scores else None,
        "delay_median_s": _pct(delays, 50),
        "delay_p95_s": _pct(delays, 95),
        "within_0.5s": round(float(np.mean([d <= FULL_SCORE_S for d in delays])), 4) if delays else None,
        "false_alarms": false_alarms,
        "reps_counted": sum(e.kind == "rep" for r in runs for _, e in r.events),  # nobody exercises here
    }
    if colour_right:
        out["appear_colour_right"] = round(float(np.mean(colour_right)), 4)
    return out


def evaluate(
    *, per_kind: int, keep: Keep, size: tuple[int, int], fps: float, seed: int = 0
) -> dict[str, Any]:
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "keep": keep,
        "size": list(size),
        "fps": fps,
        "per_kind": per_kind,
        "reps": {},
        "events": {},
    }
    ms: list[float] = []
    all_reps: list[ClipRun] = []
    for kind in EXERCISES:
        clips = [make_clip(kind, seed=seed + i, split="bench", size=size, fps=fps) for i in range(per_kind)]
        runs = run_clips(clips, keep=keep, seed=seed)
        report["reps"][kind] = rep_metrics(runs)
        all_reps.extend(runs)
        ms.extend(m for r in runs for m in r.ms)
    report["reps"]["all"] = rep_metrics(all_reps)
    for kind in SCENES:
        clips = [make_clip(kind, seed=seed + i, split="bench", size=size, fps=fps) for i in range(per_kind)]
        runs = run_clips(clips, keep=keep, seed=seed)
        report["events"][kind] = event_metrics(runs)
        ms.extend(m for r in runs for m in r.ms)
    report["cpu_ms_per_session_turn"] = {"median": _pct(ms, 50), "p95": _pct(ms, 95), "max": _pct(ms, 100)}
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    return report


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"keep={report['keep']}  clips {report['size'][0]}x{report['size'][1]} at {report['fps']:g} fps, "
        f"{report['per_kind']} per kind, bench split",
        "",
        "| exercise | clips | reps | MAE | OBO | exact | counts in time | reps in time | delay median "
        "| delay p95 | visual events (none true) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, m in report["reps"].items():
        lines.append(
            f"| {kind} | {m['clips']} | {m['reps']} | {m['MAE']} | {m['OBO']} | {m['exact']} | "
            f"{m['counts_in_time']} | {m['reps_in_time']} | {m['delay_median_s']} s | {m['delay_p95_s']} s | "
            f"{m['visual_false_alarms']} |"
        )
    lines += [
        "",
        "| scene | clips | events | detected | score | delay median | delay p95 | <= 0.5 s | false alarms "
        "| reps (none true) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, m in report["events"].items():
        extra = f" (colour right {m['appear_colour_right']})" if "appear_colour_right" in m else ""
        lines.append(
            f"| {kind} | {m['clips']} | {m['events']} | {m['detected']}{extra} | {m['score']} | "
            f"{m['delay_median_s']} s | {m['delay_p95_s']} s | {m['within_0.5s']} | {m['false_alarms']} | "
            f"{m['reps_counted']} |"
        )
    cpu = report["cpu_ms_per_session_turn"]
    lines += [
        "",
        f"CPU per session and micro-turn: median {cpu['median']} ms, p95 {cpu['p95']} ms, "
        f"max {cpu['max']} ms (thread time; {report['wall_s']} s wall for everything)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.video.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 clips per kind at 160x120 (about a minute)")
    p.add_argument("--per-kind", type=int, default=None, help="clips per kind (default 12; --quick 4)")
    p.add_argument(
        "--keep",
        choices=["latest", "all"],
        default="latest",
        help="latest: one frame per micro-turn, as the service today; all: every sampled frame",
    )
    p.add_argument("--size", default=None, help="clip WIDTHxHEIGHT (default 320x240; --quick 160x120)")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the report here too")
    args = p.parse_args(argv)
    per_kind = args.per_kind or (4 if args.quick else 12)
    size_arg = args.size or ("160x120" if args.quick else "320x240")
    width, height = (int(v) for v in size_arg.lower().split("x"))
    report = evaluate(per_kind=per_kind, keep=args.keep, size=(width, height), fps=args.fps, seed=args.seed)
    print(_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
