"""Benchmark cases: what the user says and does, when, and what the agent is expected to do.

A case is plain data, stored as JSON (``bench/cases/<suite>.json`` holds the visible set). Times are in
seconds of *case time*: 0 is the moment the client starts streaming the case's user audio.

- :class:`Segment`: one utterance of the user -- text, voice, and either a fixed ``start_s`` or a
  :class:`Trigger` (start it a delay after the agent starts speaking; used to interrupt the agent).
  ``speech_start_s``/``speech_end_s`` are where its audio is audible, measured when the case was made.
- :class:`TextEvent`: a message on the events channel at a fixed time (typed input, new instructions).
- :class:`Expectation`: what the agent should (or should not) do, read by the suite's scorer
  (bench/suite/scoring.py): a target time with accepted contents, a cue word, a window, a segment.
- :class:`Video`: what the user's camera shows -- the parameters of a synthetic clip
  (model/video/synthetic.py), drawn when the case runs; generated media is made at test time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
SUITES = ("timespeak", "cuespeak", "turntaking", "latency", "repcount", "proactivevqa")
CASES_DIR = Path(__file__).resolve().parent.parent / "cases"  # the visible cases in the repository


@dataclass(frozen=True)
class Trigger:
    """Start a segment ``delay_s`` after the first audible agent audio at or after case time ``after_s``;
    if the agent says nothing within ``timeout_s`` of ``after_s``, the segment is not played."""

    after_s: float
    delay_s: float
    timeout_s: float = 15.0


@dataclass
class Segment:
    text: str
    voice: str  # a flite voice (slt, rms, awb, kal) or "espeak:<voice>" (espeak-ng, the harder variant)
    role: str  # instruction, stop, talk, question, thought, interruption, ...
    start_s: float | None = None  # None: started by ``trigger``
    trigger: Trigger | None = None
    speech_start_s: float | None = None  # audible from/to, in case time (fixed segments only)
    speech_end_s: float | None = None
    # Timed words inside the segment, seconds from the segment's start: {"word": ..., "start": .., "end": ..}
    words: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.start_s is None) == (self.trigger is None):
            raise ValueError(f"segment {self.text!r}: exactly one of start_s and trigger must be set")


@dataclass(frozen=True)
class TextEvent:
    t_s: float
    type: str  # "input.text" or "session.update"
    text: str

    def message(self) -> dict[str, str]:
        key = "instructions" if self.type == "session.update" else "text"
        return {"type": self.type, key: self.text}


@dataclass
class Expectation:
    """One thing the agent should do (see the suite scorers for how each ``kind`` is read).

    - ``say`` (TimeSpeak): speech with one of ``accepted`` starting within ``tolerance_s`` of ``at_s``.
    - ``cue`` (CueSpeak): speech with one of ``accepted`` starting between the cue word's start
      (``window_s[0]``) and ``tolerance_s`` after its end (``at_s``).
    - ``no_takeover`` (pause): no agent speech starting inside ``window_s``.
    - ``take_turn`` (smooth turn-taking): agent speech starting within ``tolerance_s`` after ``segment`` ends.
    - ``yield`` (interruption): the agent falls silent while ``segment`` (the interruption) is spoken;
      its next words contain one of ``accepted`` (when given).
    - ``answer`` (latency): agent speech starting within ``tolerance_s`` after ``segment`` ends.
    - ``rep`` (RepCount): a repetition completes at ``at_s``; its count (``accepted``) is due within
      ``tolerance_s`` after.
    - ``event`` (ProactiveVideoQA): the visual answer appears at ``at_s``; speech with one of ``accepted``
      starting in ``window_s`` answers it.
    """

    kind: str
    at_s: float | None = None
    window_s: tuple[float, float] | None = None
    tolerance_s: float | None = None
    accepted: list[str] = field(default_factory=list)
    segment: int | None = None
    cue: str | None = None


@dataclass(frozen=True)
class Network:
    """Impairment of the client's outgoing audio packets (bench/suite/network.py)."""

    loss: float = 0.0  # share of RTP packets dropped
    jitter_ms: float = 0.0  # each packet delayed by 0..2*jitter_ms (mean jitter_ms), so packets reorder

    @property
    def impaired(self) -> bool:
        return self.loss > 0 or self.jitter_ms > 0

    @property
    def label(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"{self.loss:.0%} loss")
        if self.jitter_ms:
            parts.append(f"{self.jitter_ms:.0f} ms jitter")
        return ", ".join(parts) or "clean"


@dataclass(frozen=True)
class Video:
    """The user's camera: a synthetic clip, ``make_clip(kind, seed=seed, split=split, reps=reps, fps=fps,
    size=(width, height))``. Before ``start_s`` the camera shows the clip's first frame still, after the
    clip its last one. ``reps`` and ``duration_s`` are what the generator made when the case was written:
    a clip drawn differently at run time (the generator changed) is refused, not scored."""

    kind: str
    split: str
    seed: int
    start_s: float  # case time of the clip's first frame
    duration_s: float  # s, the clip's length
    fps: float
    width: int
    height: int
    reps: int | None = None  # exercise clips: the repetitions asked for (None for scenes)


@dataclass
class Case:
    id: str
    suite: str
    kind: str
    seed: int
    summary: str  # one line for people: the instruction or question
    segments: list[Segment]
    expected: list[Expectation]
    duration_s: float  # stream (and record) at least this long ...
    tail_s: float = 4.0  # ... and this long after the last user speech
    events: list[TextEvent] = field(default_factory=list)
    # Agent speech starting in one of these windows and matching nothing is not a false alarm (at most one
    # utterance per window): an acknowledgement after an instruction ("okay") is allowed.
    tolerated_s: list[tuple[float, float]] = field(default_factory=list)
    # End the case this long after the agent's first audio following the user's last fixed segment (it only
    # has to be heard starting to answer), instead of waiting out duration_s.
    stop_on_reply_s: float | None = None
    network: Network | None = None  # None: whatever the run's --loss/--jitter-ms say
    video: Video | None = None  # None: the client sends no video
    quick: bool = False  # part of the --quick set

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        segments = [
            Segment(**{**s, "trigger": Trigger(**s["trigger"]) if s.get("trigger") else None})
            for s in data["segments"]
        ]
        expected = [
            Expectation(**{**e, "window_s": tuple(e["window_s"]) if e.get("window_s") else None})
            for e in data["expected"]
        ]
        network = data.get("network")
        video = data.get("video")
        return cls(
            **{
                **data,
                "segments": segments,
                "expected": expected,
                "events": [TextEvent(**e) for e in data.get("events", [])],
                "tolerated_s": [(float(a), float(b)) for a, b in data.get("tolerated_s", [])],
                "network": Network(**network) if network else None,
                "video": Video(**video) if video else None,
            }
        )

    def validate(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"case {self.id}: unknown suite {self.suite!r}")
        if not self.segments and not self.events:
            raise ValueError(f"case {self.id}: the user neither says nor types anything")
        for e in self.expected:
            if e.segment is not None and not 0 <= e.segment < len(self.segments):
                raise ValueError(f"case {self.id}: expectation refers to segment {e.segment}")


def save_cases(cases: Sequence[Case], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "cases": [c.to_dict() for c in cases]}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")


def load_cases(path: Path) -> list[Case]:
    """Cases from a JSON file (``{"format": 1, "cases": [...]}`` or a bare list) or a folder of them."""
    if path.is_dir():
        return [case for file in sorted(path.glob("*.json")) for case in load_cases(file)]
    data = json.loads(path.read_text())
    items = data["cases"] if isinstance(data, dict) else data
    cases = [Case.from_dict(item) for item in items]
    for case in cases:
        case.validate()
    return cases


def by_suite(cases: Iterable[Case]) -> dict[str, list[Case]]:
    grouped: dict[str, list[Case]] = {suite: [] for suite in SUITES}
    for case in cases:
        grouped[case.suite].append(case)
    return {suite: items for suite, items in grouped.items() if items}
