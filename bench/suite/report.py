"""What a run leaves behind: ``results.json``, ``table.md`` and ``timelines/<case>.png``.

The JSON has everything needed to re-score or re-plot without re-running: the cases, the versions (git
commit, Python, aiortc, the models' names as the servers reported them), and per model and case the agent's
utterances (onset, offset, transcript, response.text), the user's segments as played, the metrics and the
scored outcomes. The time lines put every model's agent speech under the user's, on one time axis.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.suite.audio import AgentSegment
from bench.suite.cases import Case
from bench.suite.scoring import SUMMARIES, CaseScore, Heard, Metric, Outcome, text_agreement
from bench.suite.server import ROOT

GOOD = {"hit", "taken", "answered", "stopped", "no_takeover"}
BAD = {
    "false_alarm",
    "late",
    "early",
    "wrong",
    "takeover",
    "overlap",
    "not_stopped",
    "miss",
    "not_taken",
    "unanswered",
}


@dataclass
class CaseResult:
    case: Case
    target: str  # the row: a model name, or "null-server" for the transport floor
    score: CaseScore
    heard: Heard
    server_model: str = ""
    length_s: float = 0.0
    impairment: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case.id,
            "kind": self.case.kind,
            "model": self.target,
            "server_model": self.server_model,
            "metrics": self.score.metrics,
            "outcomes": [asdict(o) for o in self.score.outcomes],
            "user": self.heard.user,
            "agent": [asdict(s) for s in self.heard.agent],
            # The events as received, but the activity strip ("turn", five a second) that nothing scores.
            "events": [[t, e] for t, e in self.heard.events if e.get("type") != "turn"],
            "length_s": round(self.length_s, 2),
            "impairment": self.impairment,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], case: Case) -> CaseResult:
        heard = Heard(
            user=[(span[0], span[1]) if span is not None else None for span in data["user"]],
            agent=[AgentSegment(**s) for s in data["agent"]],
            events=[(t, e) for t, e in data.get("events", [])],
        )
        score = CaseScore(
            data["case_id"], data["kind"], data["metrics"], [Outcome(**o) for o in data["outcomes"]]
        )
        return cls(
            case, data["model"], score, heard, data["server_model"], data["length_s"], data["impairment"]
        )


@dataclass
class Run:
    suites: list[str]
    targets: list[str]
    cases: dict[str, list[Case]]
    results: dict[str, dict[str, list[CaseResult]]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # target -> why it has no (or partial) results

    def add(self, suite: str, result: CaseResult) -> None:
        self.results.setdefault(suite, {}).setdefault(result.target, []).append(result)


def load_run(path: Path) -> Run:
    """A run back from its results.json (to score it again with changed rules, or plot it again)."""
    data = json.loads(path.read_text())
    cases = {suite: [Case.from_dict(c) for c in items] for suite, items in data["cases"].items()}
    run = Run(
        data["suites"],
        data["models"],
        cases,
        options=data["options"],
        errors=data.get("errors", {}),
        started=data["started"],
        finished=data["finished"],
    )
    for suite, by_target in data["results"].items():
        by_id = {c.id: c for c in cases[suite]}
        for results in by_target.values():
            for item in results:
                run.add(suite, CaseResult.from_dict(item, by_id[item["case_id"]]))
    return run


def versions() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return ""

    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **{p: version(p) for p in ("microturn", "aiortc", "pocketsphinx", "av")},
    }


def summaries(run: Run) -> dict[str, dict[str, dict[str, Metric]]]:
    out: dict[str, dict[str, dict[str, Metric]]] = {}
    for suite, by_target in run.results.items():
        out[suite] = {}
        for target, results in by_target.items():
            summary = SUMMARIES[suite]([r.score for r in results])
            summary["asr_vs_text"] = text_agreement([s for r in results for s in r.heard.agent])
            out[suite][target] = summary
    return out


def _f(value: Metric, spec: str = ".2f") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | str):
        return str(value)
    return format(value, spec)


Summary = dict[str, Metric]
Column = tuple[str, Callable[[Summary], str]]

COLUMNS: dict[str, list[Column]] = {
    "timespeak": [
        ("cases", lambda s: _f(s["cases"], "d")),
        ("score", lambda s: _f(s["score"])),
        ("hits / expected", lambda s: f"{s['hits']} / {s['expected']}"),
        ("false alarms (late)", lambda s: f"{s['false_alarms']} ({s['late']})"),
        ("median abs onset error (s)", lambda s: _f(s["median_abs_error_s"])),
    ],
    "cuespeak": [
        ("cases", lambda s: _f(s["cases"], "d")),
        ("precision", lambda s: _f(s["precision"])),
        ("recall", lambda s: _f(s["recall"])),
        ("F1", lambda s: _f(s["f1"])),
        ("hits / cues", lambda s: f"{s['hits']} / {s['cues']}"),
        ("false alarms (late)", lambda s: f"{s['false_alarms']} ({s['late']})"),
        ("median latency (s)", lambda s: _f(s["median_latency_s"])),
    ],
    "turntaking": [
        ("pause TOR ↓", lambda s: f"{_f(s['pause_tor'])} (n={s['pause_cases']})"),
        ("smooth TOR ↑", lambda s: f"{_f(s['smooth_tor'])} (n={s['smooth_cases']})"),
        ("smooth latency p50 (s)", lambda s: _f(s["smooth_latency_p50_s"])),
        (
            "interruptions stopped",
            lambda s: f"{_f(s['stop_rate'])} (n={s['interruption_applicable']}/{s['interruption_cases']})",
        ),
        (
            "stop latency p50 / p95 (s)",
            lambda s: f"{_f(s['stop_latency_p50_s'])} / {_f(s['stop_latency_p95_s'])}",
        ),
        ("next words address it", lambda s: _f(s["addressed_rate"])),
    ],
    "repcount": [
        ("cases", lambda s: _f(s["cases"], "d")),
        ("MAE ↓", lambda s: _f(s["mae"])),
        ("OBO ↑", lambda s: _f(s["obo"])),
        ("exact", lambda s: _f(s["exact"])),
        ("counts in time (≤ 1 s)", lambda s: f"{_f(s['in_time'])} ({s['counts_in_time']} / {s['counts']})"),
        ("reps counted in time", lambda s: f"{_f(s['reps_in_time'])} (of {s['reps']})"),
        ("median count delay (s)", lambda s: _f(s["median_delay_s"])),
        ("by response.text: OBO, in time", lambda s: f"{_f(s['text_obo'])}, {_f(s['text_in_time'])}"),
    ],
    "proactivevqa": [
        ("cases", lambda s: _f(s["cases"], "d")),
        ("score", lambda s: _f(s["score"])),
        ("answered right / wrong", lambda s: f"{s['answered']} / {s['wrong']}"),
        ("false alarms", lambda s: _f(s["false_alarms"], "d")),
        ("median delay (s)", lambda s: _f(s["median_delay_s"])),
    ],
}
CROSS_CHECK: Column = ("ASR vs response.text", lambda s: _f(s["asr_vs_text"]))


def _latency_columns(rows: dict[str, Summary]) -> list[Column]:
    """One column per network condition found in the summaries ("<condition>: p50_ms", ...)."""
    labels = dict.fromkeys(key.split(": ")[0] for s in rows.values() for key in s if ": " in key)

    def column(label: str) -> Column:
        def cell(s: Summary) -> str:
            return f"{_f(s.get(f'{label}: p50_ms'), '.0f')} / {_f(s.get(f'{label}: p95_ms'), '.0f')}, " + str(
                s.get(f"{label}: answered", "–")
            )

        return f"{label}: p50 / p95 (ms), answered", cell

    return [column(label) for label in labels]


def markdown(run: Run, sums: dict[str, dict[str, Summary]]) -> str:
    """One table per suite, one row per model."""
    parts: list[str] = []
    for suite in run.suites:
        rows = sums.get(suite, {})
        if not rows:
            continue
        columns = [*(COLUMNS.get(suite) or _latency_columns(rows)), CROSS_CHECK]
        parts.append(f"### {suite}\n")
        parts.append("| model | " + " | ".join(name for name, _ in columns) + " |")
        parts.append("|---" * (len(columns) + 1) + "|")
        for target, summary in rows.items():
            parts.append(f"| {target} | " + " | ".join(cell(summary) for _, cell in columns) + " |")
        parts.append("")
    parts += [f"**{target} failed**: {error}\n" for target, error in run.errors.items()]
    return "\n".join(parts)


def write(run: Run, out_dir: Path, plots: bool = True) -> Path:
    """Write results.json, table.md and (with ``plots``) one time line per case; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sums = summaries(run)
    table = markdown(run, sums)
    payload = {
        "format": 1,
        "benchmark": "microturn-suite",
        "suites": run.suites,
        "models": run.targets,
        "started": run.started,
        "finished": run.finished,
        "options": run.options,
        "errors": run.errors,
        "versions": versions(),
        "summaries": sums,
        "table": table,
        "cases": {suite: [c.to_dict() for c in cases] for suite, cases in run.cases.items()},
        "results": {
            suite: {target: [r.to_dict() for r in results] for target, results in by_target.items()}
            for suite, by_target in run.results.items()
        },
    }
    path = out_dir / "results.json"
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    (out_dir / "table.md").write_text(table + "\n")
    if plots:
        for suite, cases in run.cases.items():
            by_target = run.results.get(suite, {})
            for case in cases:
                mine = [r for results in by_target.values() for r in results if r.case.id == case.id]
                if mine:
                    plot_case(case, mine, out_dir / "timelines" / f"{case.id}.png")
    return path


def _colour(label: str) -> str:
    return "tab:green" if label in GOOD else "tab:red" if label in BAD else "0.6"


def plot_case(case: Case, results: list[CaseResult], path: Path) -> None:
    """One PNG: the user's speech, the expected moments, and each model's speech with hits and misses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lanes = ["user", *(r.target for r in results)]
    end = max([case.duration_s, *(r.length_s for r in results)])
    fig, ax = plt.subplots(figsize=(min(22.0, max(9.0, end * 0.4)), 1.3 + 0.75 * len(lanes)))
    y = {name: len(lanes) - 1 - i for i, name in enumerate(lanes)}

    def bar(lane: str, start: float, stop: float, colour: str, label: str = "", below: bool = False) -> None:
        ax.broken_barh([(start, max(stop - start, 0.02))], (y[lane] - 0.3, 0.6), facecolors=colour, alpha=0.8)
        if label:
            at, va = (y[lane] - 0.33, "top") if below else (y[lane] + 0.33, "bottom")
            ax.text(start, at, label[:48], fontsize=6, va=va, clip_on=True)

    # Expected moments and windows, across all lanes.
    first = results[0].heard
    for e in case.expected:
        if e.kind == "say" and e.at_s is not None and e.tolerance_s is not None:
            ax.axvspan(e.at_s - e.tolerance_s, e.at_s + e.tolerance_s, color="tab:green", alpha=0.12)
            ax.axvline(e.at_s, color="tab:green", lw=0.8, ls="--")
            ax.text(
                e.at_s,
                len(lanes) - 0.45,
                "/".join(e.accepted[:1]),
                fontsize=6,
                ha="center",
                color="tab:green",
            )
        elif e.kind == "cue" and e.window_s is not None:
            ax.axvspan(e.window_s[0], e.window_s[1], color="tab:green", alpha=0.12)
            ax.text(
                e.window_s[0], len(lanes) - 0.45, f"{e.cue}→{e.accepted[0]}", fontsize=6, color="tab:green"
            )
        elif e.kind == "no_takeover" and e.window_s is not None:
            ax.axvspan(e.window_s[0], e.window_s[1], color="tab:orange", alpha=0.15)
            ax.text(e.window_s[0], len(lanes) - 0.45, "pause: stay silent", fontsize=6, color="tab:orange")
        elif e.kind in ("take_turn", "answer") and e.segment is not None and e.tolerance_s is not None:
            span = first.user[e.segment]
            if span is not None:
                window = min(e.tolerance_s, 5.0)
                ax.axvspan(span[1], span[1] + window, color="tab:green", alpha=0.08)
                ax.axvline(span[1], color="tab:green", lw=0.8, ls="--")
        elif e.kind == "rep" and e.at_s is not None and e.tolerance_s is not None:
            ax.axvspan(e.at_s, e.at_s + e.tolerance_s, color="tab:green", alpha=0.12)
            ax.axvline(e.at_s, color="tab:green", lw=0.8, ls="--")
            ax.text(e.at_s, len(lanes) - 0.45, e.accepted[0], fontsize=6, color="tab:green")
        elif e.kind == "event" and e.at_s is not None and e.window_s is not None:
            ax.axvspan(e.window_s[0], e.window_s[1], color="tab:green", alpha=0.12)
            ax.axvline(e.at_s, color="tab:green", lw=0.8, ls="--")
            ax.text(e.at_s, len(lanes) - 0.45, f"on camera: {e.accepted[0]}", fontsize=6, color="tab:green")
        elif e.kind == "yield" and e.segment is not None:
            for r in results:
                span = r.heard.user[e.segment]
                if span is not None:
                    ax.axvline(span[0], ymin=0, ymax=1, color="tab:purple", lw=0.6, ls=":")
    if case.video is not None:  # the clip's span on the user's lane
        clip = (case.video.start_s, case.video.start_s + case.video.duration_s)
        ax.broken_barh([(clip[0], clip[1] - clip[0])], (y["user"] - 0.45, 0.08), facecolors="tab:gray")
        ax.text(clip[1], y["user"] - 0.5, f"camera: {case.video.kind}", fontsize=6, va="top", ha="right")
    for event in case.events:
        ax.plot([event.t_s], [y["user"]], marker="v", color="tab:blue")
        ax.text(event.t_s, y["user"] - 0.45, f"typed: {event.text}"[:60], fontsize=6, va="top")
    # The user's speech as played (triggered segments differ per model: take the first model's, mark others).
    for r in results[:1]:
        for i, (segment, span) in enumerate(zip(case.segments, r.heard.user, strict=True)):
            if span is not None:  # labels alternate above and below: talk segments follow each other closely
                bar("user", span[0], span[1], "tab:blue", segment.text, below=i % 2 == 1)
    # Each model's speech, coloured by what scoring made of it; under it, the user's triggered segments
    # as played for that model (they start when that model's agent has spoken).
    for r in results:
        for segment, span in zip(case.segments, r.heard.user, strict=True):
            if segment.trigger is not None and span is not None:
                ax.broken_barh(
                    [(span[0], span[1] - span[0])], (y[r.target] - 0.42, 0.1), facecolors="tab:blue"
                )
        labels = {o.segment: o.label for o in r.score.outcomes if o.segment is not None}
        for j, seg in enumerate(r.heard.agent):
            bar(r.target, seg.onset_s, seg.offset_s, _colour(labels.get(j, "")), seg.text)
        for o in r.score.outcomes:
            if o.segment is None and o.t_s is not None and o.label in BAD:
                ax.plot([o.t_s], [y[r.target]], marker="x", color="tab:red", markersize=8)
    ax.set_yticks(list(y.values()), list(y.keys()), fontsize=8)
    ax.set_ylim(-0.7, len(lanes) - 0.2)
    ax.set_xlim(0, end)
    ax.set_xlabel("case time (s), as heard at the client")
    scores = "; ".join(f"{r.target}: " + _brief(r.score) for r in results)
    ax.set_title(
        f"{case.id} ({case.suite}, {case.kind}): {case.summary}"[:140] + f"\n{scores}"[:200], fontsize=8
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _brief(score: CaseScore) -> str:
    keys = ("score", "f1", "takeover", "taken", "stopped", "latency_ms", "predicted", "reps", "in_time")
    metrics = {k: score.metrics[k] for k in keys if k in score.metrics}
    return ", ".join(
        f"{k} {_f(v, 'd') if isinstance(v, int) and not isinstance(v, bool) else _f(v)}"
        for k, v in metrics.items()
    )
