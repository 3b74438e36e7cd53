"""The benchmark suite's scoring and reporting on hand-made time lines: no server, no audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.suite.audio import AgentSegment, segments_from_levels, speech_span
from bench.suite.cases import Case, Expectation, Network, Segment, Trigger, Video
from bench.suite.cli import rescore
from bench.suite.report import CaseResult, Run, load_run, write
from bench.suite.scoring import (
    Heard,
    content_matches,
    score_cuespeak,
    score_latency,
    score_proactivevqa,
    score_repcount,
    score_timespeak,
    score_turntaking,
    spoken_numbers,
    summarize_cuespeak,
    summarize_latency,
    summarize_proactivevqa,
    summarize_repcount,
    summarize_timespeak,
    summarize_turntaking,
    text_agreement,
)
from service.microturn import SAMPLE_RATE


def seg(onset: float, offset: float, text: str = "", event_text: str = "") -> AgentSegment:
    return AgentSegment(onset, offset, text, event_text)


def timespeak_case(
    *targets: tuple[float, list[str]], tolerated: list[tuple[float, float]] | None = None
) -> Case:
    return Case(
        id="ts-test",
        suite="timespeak",
        kind="every",
        seed=0,
        summary="every two seconds say breathe",
        segments=[Segment("every two seconds say breathe", "slt", "instruction", start_s=0.5)],
        expected=[Expectation("say", at_s=t, tolerance_s=0.5, accepted=a) for t, a in targets],
        duration_s=12.0,
        tolerated_s=tolerated or [],
    )


def labels(score: object) -> list[str]:
    return [o.label for o in score.outcomes]  # type: ignore[attr-defined]


# -- content ---------------------------------------------------------------------------------------------


def test_content_matches_words_homophones_and_partial_phrases() -> None:
    assert content_matches(["breathe", "breath"], "okay breath")
    assert content_matches(["four", "4", "for"], "for")
    assert not content_matches(["stop"], "stopping now")  # words, not substrings
    assert content_matches(["sit up straight"], "please sit up")  # two of three words: partial credit
    assert not content_matches(["sit up straight"], "straight")
    assert content_matches(["drink water"], "Drink some water!")
    assert not content_matches(["drink water"], "water")
    assert not content_matches([], "anything")
    # A count, a reminder, a cue's answer are short: a chatty reply that contains "for" is no "four".
    assert content_matches(["four", "4", "for"], "okay four", max_extra_words=4)
    assert not content_matches(["four", "4", "for"], "i'm sorry for the misunderstanding i'm here", 4)


def test_timespeak_a_long_reply_that_contains_the_word_is_no_hit() -> None:
    case = timespeak_case((5.0, ["four", "4", "for"]))
    reply = seg(4.9, 8.0, "and sorry for the misunderstanding and here to help with whatever you need")
    score = score_timespeak(case, Heard(user=[(0.5, 2.0)], agent=[reply]))
    assert sorted(labels(score)) == ["false_alarm", "miss"]


# -- TimeSpeak -------------------------------------------------------------------------------------------


def test_timespeak_hit_within_half_a_second() -> None:
    case = timespeak_case((5.0, ["breathe"]))
    score = score_timespeak(case, Heard(user=[(0.5, 2.0)], agent=[seg(5.3, 5.8, "breathe")]))
    assert labels(score) == ["hit"]
    assert score.metrics["score"] == 1.0
    assert score.metrics["median_abs_error_s"] == pytest.approx(0.3, abs=1e-3)


def test_timespeak_miss_when_silent() -> None:
    score = score_timespeak(timespeak_case((5.0, ["breathe"])), Heard(user=[(0.5, 2.0)], agent=[]))
    assert labels(score) == ["miss"]
    assert score.metrics["score"] == 0.0
    assert score.metrics["median_abs_error_s"] is None


def test_timespeak_false_alarm_lowers_the_score() -> None:
    case = timespeak_case((5.0, ["breathe"]))
    heard = Heard(user=[(0.5, 2.0)], agent=[seg(5.1, 5.5, "breathe"), seg(9.0, 10.0, "hello there")])
    score = score_timespeak(case, heard)
    assert sorted(labels(score)) == ["false_alarm", "hit"]
    assert score.metrics["score"] == 0.5  # 1 hit / (1 expected + 1 false alarm)


def test_timespeak_late_answer_is_a_miss_and_a_false_alarm_with_its_error() -> None:
    case = timespeak_case((5.0, ["breathe"]))
    score = score_timespeak(case, Heard(user=[(0.5, 2.0)], agent=[seg(6.2, 6.6, "breathe")]))
    assert sorted(labels(score)) == ["late", "miss"]
    assert score.metrics["late"] == 1 and score.metrics["false_alarms"] == 1
    assert score.metrics["score"] == 0.0
    assert score.metrics["median_abs_error_s"] == pytest.approx(1.2, abs=1e-3)


def test_timespeak_right_time_wrong_content_is_no_hit() -> None:
    case = timespeak_case((5.0, ["breathe"]))
    score = score_timespeak(case, Heard(user=[(0.5, 2.0)], agent=[seg(5.0, 5.5, "relax")]))
    assert sorted(labels(score)) == ["false_alarm", "miss"]


def test_timespeak_one_acknowledgement_per_window_is_tolerated() -> None:
    case = timespeak_case((5.0, ["breathe"]), tolerated=[(2.0, 4.0)])
    heard = Heard(
        user=[(0.5, 2.0)], agent=[seg(2.3, 2.6, "okay"), seg(3.0, 3.4, "sure"), seg(5.0, 5.4, "breathe")]
    )
    score = score_timespeak(case, heard)
    assert labels(score) == ["hit", "tolerated", "false_alarm"]
    assert score.metrics["score"] == 0.5


def test_timespeak_partial_credit_and_summary() -> None:
    case = timespeak_case((3.0, ["three", "3"]), (4.0, ["two", "to", "too"]), (5.0, ["one", "won"]))
    heard = Heard(
        user=[(0.5, 2.0)],
        agent=[seg(3.2, 3.5, "three"), seg(4.1, 4.4, "too"), seg(6.8, 7.0, "one"), seg(9.0, 9.5, "done")],
    )
    score = score_timespeak(case, heard)
    assert score.metrics["hits"] == 2
    assert score.metrics["false_alarms"] == 2  # "done", and "one" 1.8 s late
    assert score.metrics["score"] == pytest.approx(2 / 5, abs=1e-3)
    silent = score_timespeak(case, Heard(user=[(0.5, 2.0)], agent=[]))
    summary = summarize_timespeak([score, silent])
    assert summary["hits"] == 2 and summary["expected"] == 6 and summary["false_alarms"] == 2
    assert summary["score"] == pytest.approx(2 / 8, abs=1e-3)
    assert summary["mean_case_score"] == pytest.approx(0.2, abs=1e-3)
    assert summary["median_abs_error_s"] == pytest.approx(0.2, abs=1e-3)  # 0.2, 0.1, 1.8


# -- CueSpeak --------------------------------------------------------------------------------------------


def cuespeak_case() -> Case:
    talk = [Segment(f"sentence {i}", "slt", "talk", start_s=3.0 + 3 * i) for i in range(6)]
    cues = [(8.0, 8.6), (14.0, 14.5)]
    return Case(
        id="cs-test",
        suite="cuespeak",
        kind="translate-spanish",
        seed=0,
        summary="every time I say a Spanish word, give me the English word",
        segments=[Segment("instruction", "slt", "instruction", start_s=0.5), *talk],
        expected=[
            Expectation("cue", at_s=b, window_s=(a, b + 1.0), tolerance_s=1.0, accepted=[w], cue=c)
            for (a, b), (c, w) in zip(cues, [("gato", "cat"), ("chien", "dog")], strict=True)
        ],
        duration_s=22.0,
        tolerated_s=[(2.0, 4.0)],
    )


def test_cuespeak_hits_late_false_alarms_and_speech_after_the_talk() -> None:
    case = cuespeak_case()
    user = [(0.5, 2.0)] + [(3.0 + 3 * i, 5.8 + 3 * i) for i in range(6)]  # talk ends at 20.8
    heard = Heard(
        user=user,
        agent=[
            seg(2.5, 2.9, "okay"),  # acknowledgement: tolerated
            seg(9.1, 9.4, "cat"),  # 0.5 s after "gato" ends: hit
            seg(15.9, 16.3, "dog"),  # 1.4 s after "chien": late
            seg(18.0, 18.4, "hmm"),  # false alarm
            seg(22.5, 25.0, "that was a nice story"),  # after the talk: not scored
        ],
    )
    score = score_cuespeak(case, heard)
    assert labels(score) == ["hit", "miss", "tolerated", "late", "false_alarm", "ignored"]
    assert score.metrics["precision"] == pytest.approx(1 / 3, abs=1e-3)
    assert score.metrics["recall"] == 0.5
    assert score.metrics["f1"] == pytest.approx(0.4, abs=1e-3)
    assert score.metrics["median_latency_s"] == pytest.approx(0.5, abs=1e-3)


def test_cuespeak_answer_after_the_user_stopped_is_no_hit() -> None:
    case = cuespeak_case()
    user = [(0.5, 2.0), (3.0, 8.9)] + [None] * 5  # the talk stops right after the first cue
    score = score_cuespeak(case, Heard(user=user, agent=[seg(9.1, 9.4, "cat")]))
    assert score.metrics["hits"] == 0


def test_cuespeak_summary_counts_silence_as_zero_precision() -> None:
    case = cuespeak_case()
    user = [(0.5, 2.0)] + [(3.0 + 3 * i, 5.8 + 3 * i) for i in range(6)]
    silent = score_cuespeak(case, Heard(user=user, agent=[]))
    assert silent.metrics["precision"] is None
    perfect = score_cuespeak(case, Heard(user=user, agent=[seg(8.9, 9.2, "cat"), seg(14.8, 15.0, "dog")]))
    summary = summarize_cuespeak([silent, perfect])
    assert summary["precision"] == 1.0 and summary["recall"] == 0.5
    assert summarize_cuespeak([silent])["precision"] == 0.0


# -- Turn-taking -----------------------------------------------------------------------------------------


def turn_case(kind: str, expectation: Expectation, segments: list[Segment]) -> Case:
    return Case("tt-test", "turntaking", kind, 0, kind, segments, [expectation], duration_s=10.0)


def test_pause_takeover_and_holding_back() -> None:
    case = turn_case(
        "pause",
        Expectation("no_takeover", window_s=(2.0, 4.0), segment=0),
        [Segment("I was thinking about, um,", "slt", "thought", start_s=0.5)],
    )
    took = score_turntaking(case, Heard(user=[(0.5, 2.0)], agent=[seg(3.1, 4.0, "yes")]))
    held = score_turntaking(case, Heard(user=[(0.5, 2.0)], agent=[seg(6.0, 7.0, "the beach")]))
    assert took.metrics["takeover"] is True and held.metrics["takeover"] is False


def test_smooth_turn_taken_overlapping_and_not_taken() -> None:
    case = turn_case(
        "smooth",
        Expectation("take_turn", tolerance_s=5.0, segment=0),
        [Segment("Why is the sky blue?", "slt", "question", start_s=0.5)],
    )
    user: list[tuple[float, float] | None] = [(0.5, 2.0)]
    taken = score_turntaking(case, Heard(user=user, agent=[seg(3.2, 5.0, "because")]))
    assert taken.metrics == {"taken": True, "overlap": False, "latency_s": 1.2}
    overlap = score_turntaking(case, Heard(user=user, agent=[seg(1.0, 2.5, "the sky")]))
    assert overlap.metrics["taken"] is False and overlap.metrics["overlap"] is True
    silent = score_turntaking(case, Heard(user=user, agent=[seg(7.5, 8.0, "late")]))
    assert silent.metrics["taken"] is False and silent.metrics["overlap"] is False
    summary = summarize_turntaking([taken, overlap, silent])
    assert summary["smooth_tor"] == pytest.approx(1 / 3, abs=1e-3)
    assert summary["smooth_latency_p50_s"] == 1.2


def interruption_case() -> Case:
    return turn_case(
        "interruption",
        Expectation("yield", segment=1, accepted=["rome"]),
        [
            Segment("Tell me a long story.", "slt", "question", start_s=0.5),
            Segment("Wait, what is the capital of Italy?", "slt", "interruption", trigger=Trigger(2.0, 1.0)),
        ],
    )


def test_interruption_stops_and_addresses_it() -> None:
    events = [(7.3, {"type": "response.audio.stopped", "reason": "interrupted"})]
    heard = Heard(
        user=[(0.5, 2.0), (6.5, 8.5)],
        agent=[seg(5.0, 7.2, "once upon a time"), seg(9.5, 10.5, "it is rome")],
        events=events,
    )
    score = score_turntaking(interruption_case(), heard)
    assert score.metrics == {
        "applicable": True,
        "stopped": True,
        "stop_latency_s": 0.7,
        "addressed": True,
        "event_interrupted": True,
    }


def test_interruption_not_stopped_and_not_applicable() -> None:
    case = interruption_case()
    talked_on = score_turntaking(
        case, Heard(user=[(0.5, 2.0), (6.5, 8.5)], agent=[seg(5.0, 9.0, "and then")])
    )
    assert talked_on.metrics["stopped"] is False and talked_on.metrics["addressed"] is False
    never_spoke = score_turntaking(case, Heard(user=[(0.5, 2.0), None], agent=[]))
    finished = score_turntaking(case, Heard(user=[(0.5, 2.0), (6.5, 8.5)], agent=[seg(3.0, 4.0, "ok")]))
    assert never_spoke.metrics["applicable"] is False and finished.metrics["applicable"] is False
    stopped = score_turntaking(case, Heard(user=[(0.5, 2.0), (6.5, 8.5)], agent=[seg(5.0, 7.0, "x")]))
    summary = summarize_turntaking([talked_on, never_spoke, finished, stopped])
    assert summary["interruption_cases"] == 4 and summary["interruption_applicable"] == 2
    assert summary["stop_rate"] == 0.5
    assert summary["stop_latency_p50_s"] == 0.5


# -- Latency ---------------------------------------------------------------------------------------------


def latency_case(network: Network) -> Case:
    return Case(
        "lat-test",
        "latency",
        "question",
        0,
        "What do bees make?",
        [Segment("What do bees make?", "slt", "question", start_s=0.5)],
        [Expectation("answer", tolerance_s=10.0, segment=0)],
        duration_s=12.0,
        network=network,
    )


def test_latency_answered_unanswered_and_per_network_summary() -> None:
    clean, lossy = Network(), Network(loss=0.05)
    user: list[tuple[float, float] | None] = [(0.5, 1.5)]
    a = score_latency(latency_case(clean), Heard(user=user, agent=[seg(2.7, 4.0)]))
    b = score_latency(latency_case(clean), Heard(user=user, agent=[seg(3.5, 4.0)]))
    c = score_latency(latency_case(lossy), Heard(user=user, agent=[seg(13.0, 14.0)]))
    assert a.metrics == {"network": "clean", "answered": True, "latency_ms": 1200.0}
    assert c.metrics["answered"] is False
    summary = summarize_latency([a, b, c])
    assert summary["clean: answered"] == "2/2" and summary["clean: p50_ms"] == 2000.0
    assert summary["5% loss: answered"] == "0/1" and summary["5% loss: p50_ms"] is None


# -- Audio analysis --------------------------------------------------------------------------------------


def test_segments_from_levels_merges_short_gaps_and_drops_clicks() -> None:
    times = [i * 0.02 for i in range(200)]
    loud = [False] * 200
    for i in [*range(10, 30), *range(45, 60), *range(120, 121), *range(150, 170)]:
        loud[i] = True
    # 30..45 is a 0.3 s gap (merged), 120 is a 20 ms click (dropped), 150.. is a new utterance.
    spans = segments_from_levels(times, loud)
    assert [(round(a, 2), round(b, 2)) for a, b in spans] == [(0.2, 1.2), (3.0, 3.4)]


def test_speech_span_finds_the_audible_part() -> None:
    pcm = np.zeros(SAMPLE_RATE, dtype=np.int16)
    pcm[3200:8000] = 8000
    assert speech_span(pcm) == (0.2, 0.5)
    assert speech_span(np.zeros(100, dtype=np.int16)) == (0.0, 0.0)


def test_text_agreement_skips_utterances_cut_off_by_the_recording() -> None:
    whole = seg(1.0, 2.0, "the capital is paris", "The capital is Paris.")
    cut = AgentSegment(5.0, 6.0, "it is", "It is a beautiful city.", truncated=True)
    assert text_agreement([whole, cut, seg(3.0, 4.0, "hmm")]) == 1.0


# -- Report ----------------------------------------------------------------------------------------------


def test_report_writes_json_table_and_time_lines(tmp_path: Path) -> None:
    case = timespeak_case((5.0, ["breathe"]), (7.0, ["breathe"]), tolerated=[(2.0, 4.0)])
    run = Run(suites=["timespeak"], targets=["model-a", "model-b"], cases={"timespeak": [case]})
    heard_a = Heard(
        user=[(0.5, 2.0)], agent=[seg(5.2, 5.6, "breathe", "Breathe."), seg(9.0, 9.4, "hi", "Hi.")]
    )
    heard_b = Heard(user=[(0.5, 2.0)], agent=[])
    for target, heard in (("model-a", heard_a), ("model-b", heard_b)):
        run.add("timespeak", CaseResult(case, target, score_timespeak(case, heard), heard, target, 12.0))
    path = write(run, tmp_path)
    data = json.loads(path.read_text())
    assert set(data["summaries"]["timespeak"]) == {"model-a", "model-b"}
    assert data["summaries"]["timespeak"]["model-a"]["score"] == pytest.approx(1 / 3, abs=1e-3)
    assert data["versions"]["git_commit"]
    assert data["results"]["timespeak"]["model-a"][0]["agent"][0]["text"] == "breathe"
    table = (tmp_path / "table.md").read_text()
    assert "| model-a | 1 | 0.33 |" in table and "| model-b |" in table
    assert (tmp_path / "timelines" / "ts-test.png").stat().st_size > 1000

    again = rescore(path, tmp_path / "rescored", plots=False)
    assert json.loads(again.read_text())["summaries"] == data["summaries"]
    assert load_run(path).results["timespeak"]["model-a"][0].heard == heard_a


# -- RepCount --------------------------------------------------------------------------------------------


def repcount_case(*reps_s: float) -> Case:
    """Count my reps: repetitions complete at ``reps_s``; the instruction ends at 2.0 s."""
    return Case(
        "rc-test",
        "repcount",
        "squats",
        0,
        "count my squats",
        [Segment("count my squats", "slt", "instruction", start_s=0.5)],
        [Expectation("rep", at_s=t, tolerance_s=1.0, accepted=[str(n)]) for n, t in enumerate(reps_s, 1)],
        duration_s=reps_s[-1] + 3.0,
        tolerated_s=[(2.0, 4.0)],
        video=Video("squats", "bench", 7, 3.0, reps_s[-1], 15.0, 320, 240, reps=len(reps_s)),
    )


def test_spoken_numbers_reads_counts_not_chat() -> None:
    assert spoken_numbers("three") == [3]
    assert spoken_numbers("twenty one") == [21]
    assert spoken_numbers("five six") == [5, 6]
    assert spoken_numbers("and seven") == [7]
    assert spoken_numbers("for") == [4] and spoken_numbers("to for") == [2, 4]  # homophones of a bare count
    assert spoken_numbers("happy to help") == []  # "to" among other words is no two
    assert spoken_numbers("sure i can count your squats for you out loud") == []
    assert spoken_numbers("") == []


def test_repcount_counts_in_time_final_count_mae_and_obo() -> None:
    case = repcount_case(4.0, 6.0, 8.0, 10.0, 12.0)
    agent = [
        seg(2.5, 3.0, "okay"),  # acknowledgement: not a count
        seg(4.3, 4.7, "one"),  # in time
        seg(6.2, 6.6, "two"),  # in time
        seg(7.5, 7.9, "three"),  # 0.5 s before its repetition
        seg(11.4, 12.2, "four five"),  # four at 11.4 is 1.4 s late; five at 11.8 is before the 5th rep
        seg(13.6, 14.0, "five"),  # said again: not a count of anything new
    ]
    score = score_repcount(case, Heard(user=[(0.5, 2.0)], agent=agent))
    m = score.metrics
    assert m["reps"] == 5 and m["predicted"] == 5 and m["abs_error"] == 0 and m["mae"] == 0.0 and m["obo"]
    assert m["counts"] == 6 and m["counts_in_time"] == 2 and m["in_time"] == pytest.approx(2 / 6, abs=1e-3)
    assert m["median_delay_s"] == pytest.approx(0.25)
    assert labels(score) == [
        "hit",
        "hit",
        "early",
        "late",
        "early",
        "false_alarm",
        "ignored",
        "miss",
        "miss",
        "miss",
    ]


def test_repcount_silence_and_an_undercount() -> None:
    case = repcount_case(4.0, 6.0, 8.0, 10.0)
    silent = score_repcount(case, Heard(user=[(0.5, 2.0)], agent=[]))
    assert (
        silent.metrics["predicted"] == 0 and silent.metrics["mae"] == 1.0 and silent.metrics["obo"] is False
    )
    assert silent.metrics["in_time"] is None
    short = score_repcount(
        case,
        Heard(user=[(0.5, 2.0)], agent=[seg(4.5, 4.9, "one"), seg(6.5, 6.9, "two"), seg(8.5, 8.9, "three")]),
    )
    assert short.metrics["predicted"] == 3 and short.metrics["mae"] == 0.25 and short.metrics["obo"] is True
    summary = summarize_repcount([silent, short])
    assert summary["mae"] == pytest.approx(0.625) and summary["obo"] == 0.5 and summary["exact"] == 0.0
    assert summary["counts"] == 3 and summary["in_time"] == 1.0 and summary["reps_in_time"] == 0.375
    assert summary["median_delay_s"] == 0.5


def test_repcount_cross_check_reads_the_counts_from_response_text() -> None:
    case = repcount_case(4.0, 6.0, 8.0)
    agent = [seg(4.3, 4.7, "one", "One."), seg(6.3, 6.7, "q", "Two."), seg(8.3, 8.7, "three", "Three.")]
    score = score_repcount(case, Heard(user=[(0.5, 2.0)], agent=agent))
    m = score.metrics
    assert m["predicted"] == 3 and m["counts"] == 2 and m["counts_in_time"] == 2  # "q" is no count
    assert m["text_predicted"] == 3 and m["text_counts"] == 3 and m["text_counts_in_time"] == 3
    summary = summarize_repcount([score])
    assert summary["in_time"] == 1.0 and summary["reps_in_time"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["text_obo"] == 1.0 and summary["text_in_time"] == 1.0


# -- ProactiveVideoQA ------------------------------------------------------------------------------------


def proactive_case(event_s: float = 8.0) -> Case:
    """Tell me when the light turns red: it does at ``event_s``; the question ends at 2.0 s."""
    return Case(
        "pv-test",
        "proactivevqa",
        "light",
        0,
        "tell me when the light turns red",
        [Segment("tell me when the light turns red", "slt", "instruction", start_s=0.5)],
        [
            Expectation(
                "event", at_s=event_s, window_s=(event_s, event_s + 3.0), tolerance_s=3.0, accepted=["red"]
            )
        ],
        duration_s=event_s + 4.0,
        tolerated_s=[(2.0, 4.0)],
        video=Video("light", "bench", 3, 2.5, 9.0, 15.0, 320, 240),
    )


def test_proactive_score_decays_with_delay_and_pays_for_false_alarms() -> None:
    case = proactive_case()
    user: list[tuple[float, float] | None] = [(0.5, 2.0)]

    def score(*agent: AgentSegment) -> dict[str, object]:
        return dict(score_proactivevqa(case, Heard(user=user, agent=list(agent))).metrics)

    assert score(seg(8.4, 8.8, "red"))["score"] == 1.0  # within 0.5 s
    assert score(seg(9.75, 10.1, "it is red now"))["score"] == 0.5  # halfway from 0.5 to 3 s
    assert score(seg(11.2, 11.5, "red"))["score"] == 0.0  # too late: outside the window
    wrong = score(seg(8.3, 8.6, "green"), seg(9.0, 9.3, "red"))  # the first answer counts
    assert wrong["score"] == 0.0 and wrong["wrong"] is True and wrong["answered"] is False
    ack = score(seg(2.5, 2.9, "okay"), seg(8.4, 8.8, "red"))  # one acknowledgement is free
    assert ack["score"] == 1.0 and ack["false_alarms"] == 0
    early = score(seg(2.5, 2.9, "okay"), seg(5.0, 5.4, "red"), seg(8.4, 8.8, "red"))
    assert early["false_alarms"] == 1 and early["score"] == 0.5
    spam = score(*(seg(t, t + 0.3, "red") for t in (3.0, 4.0, 5.0, 6.0, 8.2)))
    assert spam["score"] == 0.0 and spam["false_alarms"] == 3  # 3.0 is the tolerated acknowledgement
    assert score()["score"] == 0.0 and score()["answered"] is False


def test_proactive_summary_and_report_rows(tmp_path: Path) -> None:
    case = proactive_case()
    run = Run(suites=["proactivevqa"], targets=["model-a"], cases={"proactivevqa": [case]})
    heard = Heard(user=[(0.5, 2.0)], agent=[seg(8.4, 8.8, "red", "Red!")])
    run.add(
        "proactivevqa", CaseResult(case, "model-a", score_proactivevqa(case, heard), heard, "model-a", 12.0)
    )
    summary = summarize_proactivevqa([r.score for r in run.results["proactivevqa"]["model-a"]])
    assert summary == {
        "cases": 1,
        "score": 1.0,
        "answered": 1,
        "wrong": 0,
        "false_alarms": 0,
        "median_delay_s": 0.4,
    }
    write(run, tmp_path)
    assert "| model-a | 1 | 1.00 | 1 / 0 | 0 | 0.40 |" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "timelines" / "pv-test.png").stat().st_size > 1000
    assert load_run(tmp_path / "results.json").cases["proactivevqa"][0] == case
