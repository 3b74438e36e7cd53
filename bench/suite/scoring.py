"""Scoring: pure functions from a case and what was heard to per-case scores and per-model summaries.

What a scorer gets (:class:`Heard`) is measured at the client in case seconds: where each of the user's
segments was audible as played, the agent's utterances (onset and offset by energy, words by the
recogniser; bench/suite/audio.py) and the events. Rules per suite (BENCHMARKS.md; docs/benchmarks.md):

- TimeSpeak: a hit is an utterance whose onset is within ``tolerance_s`` (±0.5 s) of a target and whose
  words contain an accepted content; every other utterance is a false alarm, except one acknowledgement per
  tolerated window. Score = hits / (expected + false alarms); median |onset error| over the targets that
  have a content-matching utterance within ±2 s (hit or not).
- CueSpeak: a hit has accepted content and starts between the cue word's start and 1.0 s after its end,
  while the user is still talking. Precision = hits / utterances during the talk (after the tolerated
  acknowledgement), recall = hits / cues, F1, median latency from the cue word's end.
- Turn-taking: pause -- a takeover is an utterance starting in the pause (to 0.5 s after the user goes on);
  smooth -- the turn is taken when the first utterance after the question starts within 5 s of its end (not
  over the question); interruption -- the agent's utterance under way when the user starts is timed until
  its audio stops, "stopped" when that is before the user finishes, "addressed" when its next words contain
  an accepted answer.
- Latency: end of the user's question to the first agent audio, when within 15 s.
- RepCount: the numbers the agent says (an utterance of number words and at most four other words; several
  numbers in one utterance are spread evenly over it) are its counts; the last one is its final count.
  MAE = |final - true| / true, OBO = |final - true| <= 1 (RepCount-A), and online: a count of n is in time
  when it is the first n said and starts 0-1.0 s after the n-th repetition completed.
- ProactiveVideoQA: the first utterance starting in the 3 s after the event answers it: 0 when it is
  wrong or there is none, else 1 up to 0.5 s falling linearly to 0 at 3 s; minus 0.5 per false alarm
  before the event (every utterance after the instruction but one acknowledgement), not below 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.suite.audio import AgentSegment
from bench.suite.cases import Case, Expectation
from model.asr import normalize_words, word_accuracy
from model.tools import words_to_numbers
from model.video.evaluate import answer_credit
from service.stats import percentiles

MAX_EXTRA_WORDS = 4  # words besides the expected content an utterance may have and still say it
NEAR_S = 2.0  # content-matching speech this far from a target still gives a timing error ("late")
OVER_QUESTION_S = 0.2  # agent onset this long before the question ended: it talked over the user
AFTER_TALK_S = 1.0  # CueSpeak: utterances starting later than this after the talk are not scored
ADDRESS_WITHIN_S = 8.0  # interruption: the agent's next words are looked for this long after the user
# interruption: an utterance starting this soon after the user did is the agent's reply going on after a
# pause between phrases, so it is what the user interrupted
RESUMING_S = 0.3
# What the recogniser writes for a number said alone; read as that number only in an utterance of nothing
# but numbers ("three for" is a count, "happy to help" is not).
NUMBER_HOMOPHONES = {"won": "one", "to": "two", "too": "two", "for": "four", "ate": "eight"}
# ProactiveVideoQA: the score an utterance before the event costs; two of them undo a perfect answer.
FALSE_ALARM_PENALTY = 0.5

Metric = float | int | bool | str | None


@dataclass
class Heard:
    """What the client heard of one case, in case seconds."""

    user: list[tuple[float, float] | None]  # per case segment: audible (start, end) as played; None: never
    agent: list[AgentSegment]
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Outcome:
    """One scored item, for the report and the time line: what it was and where."""

    label: str  # hit, miss, late, false_alarm, tolerated, ignored, takeover, no_takeover, taken, ...
    expected: int | None = None  # index into case.expected
    segment: int | None = None  # index into heard.agent
    t_s: float | None = None
    error_s: float | None = None


@dataclass
class CaseScore:
    case_id: str
    kind: str
    metrics: dict[str, Metric]
    outcomes: list[Outcome]


def content_matches(accepted: Sequence[str], text: str, max_extra_words: int | None = None) -> bool:
    """True when ``text`` contains one of the ``accepted`` phrases: a one-word phrase as a word, a longer
    one with at least two thirds of its words (partial credit for a recogniser that drops a word). With
    ``max_extra_words``, the text may have at most that many other words: a count, a reminder or a cue's
    answer is short, and a chatty reply that happens to contain "for" is not a "four"."""
    words = normalize_words(text)
    for phrase in accepted:
        want = normalize_words(phrase)
        if not want:
            continue
        needed = 1 if len(want) == 1 else max(2, math.ceil(len(want) * 2 / 3))
        found = sum(w in words for w in want)
        if found >= needed and (max_extra_words is None or len(words) - found <= max_extra_words):
            return True
    return False


def said(e: Expectation, seg: AgentSegment) -> bool:
    """Whether utterance ``seg`` says what ``e`` expects (TimeSpeak, CueSpeak)."""
    return content_matches(e.accepted, seg.text, MAX_EXTRA_WORDS)


def _end(heard: Heard, index: int | None) -> float | None:
    if index is None or index >= len(heard.user) or heard.user[index] is None:
        return None
    span = heard.user[index]
    assert span is not None
    return span[1]


def _talk_end(heard: Heard) -> float:
    return max((span[1] for span in heard.user if span is not None), default=0.0)


def _extras(
    heard: Heard,
    used: set[int],
    tolerated: Sequence[tuple[float, float]],
    late: Callable[[AgentSegment], float | None],
    scope_end: float = math.inf,
) -> list[Outcome]:
    """Label the utterances no expectation claimed: late (right content, wrong time), tolerated (one per
    window), ignored (outside the scored span) or false alarm."""
    windows = list(tolerated)
    outcomes = []
    for j, seg in enumerate(heard.agent):
        if j in used:
            continue
        if seg.onset_s > scope_end:
            outcomes.append(Outcome("ignored", segment=j, t_s=seg.onset_s))
            continue
        error = late(seg)
        if error is not None:
            outcomes.append(Outcome("late", segment=j, t_s=seg.onset_s, error_s=error))
            continue
        window = next((w for w in windows if w[0] <= seg.onset_s <= w[1]), None)
        if window is not None:
            windows.remove(window)
            outcomes.append(Outcome("tolerated", segment=j, t_s=seg.onset_s))
        else:
            outcomes.append(Outcome("false_alarm", segment=j, t_s=seg.onset_s))
    return outcomes


def _floats(scores: Sequence[CaseScore], key: str) -> list[float]:
    """The numeric values of metric ``key`` over ``scores`` (None, True and False left out)."""
    values = (s.metrics.get(key) for s in scores)
    return [float(v) for v in values if isinstance(v, float | int) and not isinstance(v, bool)]


def _totals(scores: Sequence[CaseScore], *keys: str) -> dict[str, int]:
    """Sums of count metrics over ``scores``."""
    return {key: int(sum(_floats(scores, key))) for key in keys}


def _count(outcomes: Sequence[Outcome], *labels: str) -> int:
    return sum(o.label in labels for o in outcomes)


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


# -- TimeSpeak -------------------------------------------------------------------------------------------


def score_timespeak(case: Case, heard: Heard) -> CaseScore:
    used: set[int] = set()
    outcomes: list[Outcome] = []
    errors: list[float] = []
    for i, e in enumerate(case.expected):
        assert e.at_s is not None and e.tolerance_s is not None
        candidates = [
            (abs(seg.onset_s - e.at_s), j)
            for j, seg in enumerate(heard.agent)
            if j not in used and said(e, seg) and abs(seg.onset_s - e.at_s) <= NEAR_S
        ]
        if not candidates:
            outcomes.append(Outcome("miss", expected=i, t_s=e.at_s))
            continue
        distance, j = min(candidates)
        errors.append(distance)
        error = round(heard.agent[j].onset_s - e.at_s, 3)
        if distance <= e.tolerance_s:
            used.add(j)
            outcomes.append(Outcome("hit", expected=i, segment=j, t_s=e.at_s, error_s=error))
        else:
            outcomes.append(Outcome("miss", expected=i, t_s=e.at_s, error_s=error))

    def late(seg: AgentSegment) -> float | None:
        near: list[float] = [
            seg.onset_s - e.at_s
            for e in case.expected
            if e.at_s is not None and abs(seg.onset_s - e.at_s) <= NEAR_S and said(e, seg)
        ]
        if not near:
            return None
        closest: float = min(near, key=abs)
        return round(closest, 3)

    outcomes += _extras(heard, used, case.tolerated_s, late)
    hits = _count(outcomes, "hit")
    false_alarms = _count(outcomes, "false_alarm", "late")
    metrics: dict[str, Metric] = {
        "expected": len(case.expected),
        "hits": hits,
        "false_alarms": false_alarms,
        "late": _count(outcomes, "late"),
        "score": _ratio(hits, len(case.expected) + false_alarms),
        "median_abs_error_s": _median(errors),
    }
    return CaseScore(case.id, case.kind, metrics, outcomes)


def summarize_timespeak(scores: Sequence[CaseScore]) -> dict[str, Metric]:
    totals = _totals(scores, "expected", "hits", "false_alarms", "late")
    errors = [
        abs(o.error_s) for s in scores for o in s.outcomes if o.expected is not None and o.error_s is not None
    ]
    case_scores = _floats(scores, "score")
    return {
        "cases": len(scores),
        **totals,
        "score": _ratio(totals["hits"], totals["expected"] + totals["false_alarms"]),
        "mean_case_score": round(statistics.fmean(case_scores), 4) if case_scores else None,
        "median_abs_error_s": _median(errors),
    }


# -- CueSpeak --------------------------------------------------------------------------------------------


def score_cuespeak(case: Case, heard: Heard) -> CaseScore:
    talk_end = _talk_end(heard)
    used: set[int] = set()
    outcomes: list[Outcome] = []
    latencies: list[float] = []
    for i, e in enumerate(case.expected):
        assert e.at_s is not None and e.window_s is not None
        lo, hi = e.window_s
        candidates = [
            j
            for j, seg in enumerate(heard.agent)
            if j not in used and lo <= seg.onset_s <= hi and seg.onset_s < talk_end and said(e, seg)
        ]
        if candidates:
            j = candidates[0]
            used.add(j)
            latency = round(heard.agent[j].onset_s - e.at_s, 3)
            latencies.append(latency)
            outcomes.append(Outcome("hit", expected=i, segment=j, t_s=e.at_s, error_s=latency))
        else:
            outcomes.append(Outcome("miss", expected=i, t_s=e.at_s))

    def late(seg: AgentSegment) -> float | None:
        for e in case.expected:
            assert e.at_s is not None and e.window_s is not None
            if e.window_s[1] < seg.onset_s <= e.window_s[1] + NEAR_S and said(e, seg):
                return round(seg.onset_s - e.at_s, 3)
        return None

    outcomes += _extras(heard, used, case.tolerated_s, late, scope_end=talk_end + AFTER_TALK_S)
    hits = _count(outcomes, "hit")
    false_alarms = _count(outcomes, "false_alarm", "late")
    precision = _ratio(hits, hits + false_alarms)
    recall = _ratio(hits, len(case.expected))
    metrics: dict[str, Metric] = {
        "cues": len(case.expected),
        "hits": hits,
        "false_alarms": false_alarms,
        "late": _count(outcomes, "late"),
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "median_latency_s": _median(latencies),
    }
    return CaseScore(case.id, case.kind, metrics, outcomes)


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0


def summarize_cuespeak(scores: Sequence[CaseScore]) -> dict[str, Metric]:
    totals = _totals(scores, "cues", "hits", "false_alarms", "late")
    # No utterance at all is no false alarm, but no evidence of precision either: 0 then, not None.
    precision = _ratio(totals["hits"], totals["hits"] + totals["false_alarms"]) or 0.0
    recall = _ratio(totals["hits"], totals["cues"])
    latencies = [o.error_s for s in scores for o in s.outcomes if o.label == "hit" and o.error_s is not None]
    return {
        "cases": len(scores),
        **totals,
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "median_latency_s": _median(latencies),
    }


# -- Turn-taking -----------------------------------------------------------------------------------------


def _score_pause(e: Expectation, heard: Heard) -> tuple[dict[str, Metric], list[Outcome]]:
    assert e.window_s is not None
    lo, hi = e.window_s
    inside = [j for j, seg in enumerate(heard.agent) if lo <= seg.onset_s <= hi]
    if inside:
        j = inside[0]
        return {"takeover": True}, [Outcome("takeover", expected=0, segment=j, t_s=heard.agent[j].onset_s)]
    return {"takeover": False}, [Outcome("no_takeover", expected=0, t_s=lo)]


def _score_take_turn(e: Expectation, heard: Heard) -> tuple[dict[str, Metric], list[Outcome]]:
    assert e.segment is not None and e.tolerance_s is not None
    span = heard.user[e.segment]
    assert span is not None, "the question is a fixed segment, always played"
    start, end = span
    after = [j for j, seg in enumerate(heard.agent) if seg.onset_s >= start]
    if after and heard.agent[after[0]].onset_s < end - OVER_QUESTION_S:
        j = after[0]
        return {"taken": False, "overlap": True, "latency_s": None}, [
            Outcome("overlap", expected=0, segment=j, t_s=heard.agent[j].onset_s)
        ]
    if after and heard.agent[after[0]].onset_s <= end + e.tolerance_s:
        j = after[0]
        latency = round(heard.agent[j].onset_s - end, 3)
        return {"taken": True, "overlap": False, "latency_s": latency}, [
            Outcome("taken", expected=0, segment=j, t_s=end, error_s=latency)
        ]
    return {"taken": False, "overlap": False, "latency_s": None}, [Outcome("not_taken", expected=0, t_s=end)]


def _score_yield(e: Expectation, heard: Heard) -> tuple[dict[str, Metric], list[Outcome]]:
    assert e.segment is not None
    span = heard.user[e.segment] if e.segment < len(heard.user) else None
    empty: dict[str, Metric] = {
        "applicable": False,
        "stopped": None,
        "stop_latency_s": None,
        "addressed": None,
        "event_interrupted": None,
    }
    if span is None:  # the agent never spoke, so there was nothing to interrupt
        return empty, [Outcome("not_applicable", expected=0)]
    start, end = span
    speaking = [
        j for j, seg in enumerate(heard.agent) if seg.onset_s <= start + RESUMING_S and seg.offset_s > start
    ]
    if not speaking:  # the agent had finished before the user started
        return empty, [Outcome("not_applicable", expected=0, t_s=start)]
    j = speaking[0]
    stop = heard.agent[j].offset_s
    stopped = stop < end
    later = [seg for seg in heard.agent[j + 1 :] if seg.onset_s <= end + ADDRESS_WITHIN_S]
    addressed = content_matches(e.accepted, " ".join(seg.text for seg in later)) if e.accepted else None
    event_interrupted = any(
        ev.get("type") == "response.audio.stopped"
        and ev.get("reason") == "interrupted"
        and start <= t <= end + 1.0
        for t, ev in heard.events
    )
    metrics: dict[str, Metric] = {
        "applicable": True,
        "stopped": stopped,
        "stop_latency_s": round(stop - start, 3),
        "addressed": addressed,
        "event_interrupted": event_interrupted,
    }
    return metrics, [
        Outcome(
            "stopped" if stopped else "not_stopped",
            expected=0,
            segment=j,
            t_s=stop,
            error_s=round(stop - start, 3),
        )
    ]


TURN_SCORERS = {"no_takeover": _score_pause, "take_turn": _score_take_turn, "yield": _score_yield}


def score_turntaking(case: Case, heard: Heard) -> CaseScore:
    (e,) = case.expected
    metrics, outcomes = TURN_SCORERS[e.kind](e, heard)
    return CaseScore(case.id, case.kind, metrics, outcomes)


def _rate(values: Sequence[Metric]) -> float | None:
    known = [bool(v) for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def summarize_turntaking(scores: Sequence[CaseScore]) -> dict[str, Metric]:
    pause = [s for s in scores if "takeover" in s.metrics]
    smooth = [s for s in scores if "taken" in s.metrics]
    interruption = [s for s in scores if "applicable" in s.metrics]
    applicable = [s for s in interruption if s.metrics["applicable"]]
    smooth_latency = _floats(smooth, "latency_s")
    stops = _floats([s for s in applicable if s.metrics["stopped"]], "stop_latency_s")
    stop_stats = percentiles(stops)
    return {
        "pause_cases": len(pause),
        "pause_tor": _rate([s.metrics["takeover"] for s in pause]),
        "smooth_cases": len(smooth),
        "smooth_tor": _rate([s.metrics["taken"] for s in smooth]),
        "smooth_latency_p50_s": _median(smooth_latency),
        "interruption_cases": len(interruption),
        "interruption_applicable": len(applicable),
        "stop_rate": _rate([s.metrics["stopped"] for s in applicable]),
        "stop_latency_p50_s": stop_stats.get("p50"),
        "stop_latency_p95_s": stop_stats.get("p95"),
        "addressed_rate": _rate([s.metrics["addressed"] for s in applicable]),
    }


# -- Latency ---------------------------------------------------------------------------------------------


def score_latency(case: Case, heard: Heard) -> CaseScore:
    (e,) = case.expected
    assert e.tolerance_s is not None
    end = _end(heard, e.segment)
    assert end is not None, "the question is a fixed segment, always played"
    after = [j for j, seg in enumerate(heard.agent) if seg.onset_s >= end - OVER_QUESTION_S]
    label = case.network.label if case.network is not None else "clean"
    if after and heard.agent[after[0]].onset_s <= end + e.tolerance_s:
        j = after[0]
        latency = round((heard.agent[j].onset_s - end) * 1000, 1)
        metrics: dict[str, Metric] = {"network": label, "answered": True, "latency_ms": latency}
        return CaseScore(case.id, case.kind, metrics, [Outcome("answered", 0, j, end, latency / 1000)])
    metrics = {"network": label, "answered": False, "latency_ms": None}
    return CaseScore(case.id, case.kind, metrics, [Outcome("unanswered", 0, t_s=end)])


def summarize_latency(scores: Sequence[CaseScore]) -> dict[str, Metric]:
    out: dict[str, Metric] = {"cases": len(scores)}
    labels = list(dict.fromkeys(str(s.metrics["network"]) for s in scores))
    for label in labels:
        mine = [s for s in scores if s.metrics["network"] == label]
        stats = percentiles(_floats(mine, "latency_ms"))
        out[f"{label}: answered"] = f"{sum(bool(s.metrics['answered']) for s in mine)}/{len(mine)}"
        out[f"{label}: p50_ms"] = stats.get("p50")
        out[f"{label}: p95_ms"] = stats.get("p95")
    return out


# -- RepCount --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpokenCount:
    t_s: float  # case seconds: the utterance's onset, or its share of it for the k-th number in it
    value: int
    segment: int  # index into heard.agent


def spoken_numbers(text: str) -> list[int]:
    """The whole numbers said in ``text``, in order; none when it has more than ``MAX_EXTRA_WORDS`` other
    words (a reply that mentions a number is not a count)."""
    words = normalize_words(text)
    if all(w in NUMBER_HOMOPHONES or words_to_numbers(w).isdigit() for w in words):
        words = [NUMBER_HOMOPHONES.get(w, w) for w in words]
    tokens = words_to_numbers(" ".join(words)).split()
    numbers = [int(t) for t in tokens if t.isdigit()]
    return numbers if len(tokens) - len(numbers) <= MAX_EXTRA_WORDS else []


def spoken_counts(
    agent: Sequence[AgentSegment], text: Callable[[AgentSegment], str] = lambda seg: seg.text
) -> list[SpokenCount]:
    """The counts in the agent's utterances (their ``text``: the transcript, or for the cross-check what
    ``response.text`` said), in order."""
    counts = []
    for j, seg in enumerate(agent):
        numbers = spoken_numbers(text(seg))
        step = (seg.offset_s - seg.onset_s) / max(len(numbers), 1)
        counts += [SpokenCount(round(seg.onset_s + k * step, 3), n, j) for k, n in enumerate(numbers)]
    return counts


def _judge_counts(
    reps: Sequence[float], window: float, counts: Sequence[SpokenCount]
) -> tuple[list[Outcome], dict[int, float]]:
    """Each count's outcome, and the delay of each repetition's count that came in time (by index)."""
    outcomes: list[Outcome] = []
    delays: dict[int, float] = {}
    said_before: set[int] = set()
    for count in counts:
        n = count.value
        first = n not in said_before
        said_before.add(n)
        delay = round(count.t_s - reps[n - 1], 3) if 1 <= n <= len(reps) else None
        if delay is None or not first:
            label = "false_alarm"  # a number past the last repetition, or one said again
        elif 0.0 <= delay <= window:
            label = "hit"
            delays[n - 1] = delay
        else:
            label = "early" if delay < 0 else "late"
        outcomes.append(Outcome(label, n - 1 if delay is not None else None, count.segment, count.t_s, delay))
    return outcomes, delays


def score_repcount(case: Case, heard: Heard) -> CaseScore:
    reps = [e.at_s for e in case.expected if e.at_s is not None]
    window = case.expected[0].tolerance_s if case.expected else None
    assert len(reps) == len(case.expected) and window is not None, "every repetition has a time and window"
    counts = spoken_counts(heard.agent)
    outcomes, delays = _judge_counts(reps, window, counts)
    counted = {c.segment for c in counts}
    outcomes += [
        Outcome("ignored", segment=j, t_s=s.onset_s) for j, s in enumerate(heard.agent) if j not in counted
    ]
    outcomes += [Outcome("miss", expected=i, t_s=t) for i, t in enumerate(reps) if i not in delays]
    final = counts[-1].value if counts else 0
    # The same from response.text: tells a model's counting apart from the recogniser's mishearing of
    # one-word counts ("two" and "four" of flite slt come back as "q" and "fire" now and then).
    by_text = spoken_counts(heard.agent, lambda seg: seg.event_text)
    _, text_delays = _judge_counts(reps, window, by_text)
    text_final = by_text[-1].value if by_text else 0
    metrics: dict[str, Metric] = {
        "reps": len(reps),
        "predicted": final,
        "abs_error": abs(final - len(reps)),
        "mae": _ratio(abs(final - len(reps)), len(reps)),
        "obo": abs(final - len(reps)) <= 1,
        "counts": len(counts),
        "counts_in_time": len(delays),
        "in_time": _ratio(len(delays), len(counts)),
        "median_delay_s": _median(list(delays.values())),
        "text_predicted": text_final,
        "text_obo": abs(text_final - len(reps)) <= 1,
        "text_counts": len(by_text),
        "text_counts_in_time": len(text_delays),
    }
    return CaseScore(case.id, case.kind, metrics, outcomes)


def summarize_repcount(scores: Sequence[CaseScore]) -> dict[str, Metric]:
    totals = _totals(scores, "reps", "counts", "counts_in_time", "text_counts", "text_counts_in_time")
    maes = _floats(scores, "mae")
    delays = [o.error_s for s in scores for o in s.outcomes if o.label == "hit" and o.error_s is not None]
    return {
        "cases": len(scores),
        **totals,
        "mae": round(statistics.fmean(maes), 4) if maes else None,
        "obo": _rate([s.metrics["obo"] for s in scores]),
        "exact": _rate([s.metrics["abs_error"] == 0 for s in scores]),
        "in_time": _ratio(totals["counts_in_time"], totals["counts"]),  # share of the counts said
        "reps_in_time": _ratio(totals["counts_in_time"], totals["reps"]),  # share of the repetitions done
        "median_delay_s": _median(delays),
        "text_obo": _rate([s.metrics["text_obo"] for s in scores]),
        "text_in_time": _ratio(totals["text_counts_in_time"], totals["text_counts"]),
    }


# -- ProactiveVideoQA ------------------------------------------------------------------------------------


def score_proactivevqa(case: Case, heard: Heard) -> CaseScore:
    (e,) = case.expected
    assert e.at_s is not None and e.window_s is not None
    lo, hi = e.window_s
    inside = [j for j, seg in enumerate(heard.agent) if lo <= seg.onset_s <= hi]
    outcomes: list[Outcome] = []
    delay: float | None = None
    if not inside:
        outcomes.append(Outcome("miss", expected=0, t_s=e.at_s))
    elif said(e, heard.agent[inside[0]]):
        delay = round(heard.agent[inside[0]].onset_s - e.at_s, 3)
        outcomes.append(Outcome("hit", expected=0, segment=inside[0], t_s=e.at_s, error_s=delay))
    else:
        outcomes.append(Outcome("wrong", expected=0, segment=inside[0], t_s=heard.agent[inside[0]].onset_s))
    # Before the event: an acknowledgement of the question is tolerated, anything else is a false alarm.
    outcomes += _extras(heard, set(inside[:1]), case.tolerated_s, lambda seg: None, scope_end=lo)
    false_alarms = _count(outcomes, "false_alarm")
    credit = answer_credit(delay) if delay is not None else 0.0
    metrics: dict[str, Metric] = {
        "answered": delay is not None,
        "wrong": _count(outcomes, "wrong") > 0,
        "delay_s": delay,
        "false_alarms": false_alarms,
        "score": round(max(0.0, credit - FALSE_ALARM_PENALTY * false_alarms), 4),
    }
    return CaseScore(case.id, case.kind, metrics, outcomes)


def summarize_proactivevqa(scores: Sequence[CaseScore]) -> dict[str, Metric]:
    delays = _floats(scores, "delay_s")
    case_scores = _floats(scores, "score")
    return {
        "cases": len(scores),
        "score": round(statistics.fmean(case_scores), 4) if case_scores else None,
        "answered": sum(bool(s.metrics["answered"]) for s in scores),
        "wrong": sum(bool(s.metrics["wrong"]) for s in scores),
        "false_alarms": _totals(scores, "false_alarms")["false_alarms"],
        "median_delay_s": _median(delays),
    }


# -- Per suite -------------------------------------------------------------------------------------------

SCORERS: dict[str, Callable[[Case, Heard], CaseScore]] = {
    "timespeak": score_timespeak,
    "cuespeak": score_cuespeak,
    "turntaking": score_turntaking,
    "latency": score_latency,
    "repcount": score_repcount,
    "proactivevqa": score_proactivevqa,
}
SUMMARIES: dict[str, Callable[[Sequence[CaseScore]], dict[str, Metric]]] = {
    "timespeak": summarize_timespeak,
    "cuespeak": summarize_cuespeak,
    "turntaking": summarize_turntaking,
    "latency": summarize_latency,
    "repcount": summarize_repcount,
    "proactivevqa": summarize_proactivevqa,
}


def text_agreement(segments: Sequence[AgentSegment]) -> float | None:
    """Cross-check of the recogniser against the agent's own ``response.text``: median word accuracy of
    each utterance's transcript against what the events said, over utterances that have both and were
    heard to their end."""
    accuracies = [
        word_accuracy(s.event_text, s.text) for s in segments if s.event_text.strip() and not s.truncated
    ]
    return round(statistics.median(accuracies), 3) if accuracies else None
