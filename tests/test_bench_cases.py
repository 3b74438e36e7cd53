"""Benchmark cases: deterministic generation, the visible case files, the lexicon's disjointness from the
interaction model's training words, and the timing rules the scorers rely on (real flite)."""

from __future__ import annotations

import importlib
import itertools
import re

import numpy as np
import pytest

from bench.suite import generate as generate_module
from bench.suite import lexicon
from bench.suite.cases import CASES_DIR, SUITES, Case, by_suite, load_cases
from bench.suite.generate import VISIBLE_SEED, generate
from bench.suite.speech import FLITE_VOICES, audible, synthesize, word_span
from model.asr import normalize_words
from model.video.synthetic import make_clip


@pytest.fixture(scope="module")
def visible() -> dict[str, list[Case]]:
    return by_suite(load_cases(CASES_DIR))


def test_generation_is_deterministic_and_seeds_differ() -> None:
    first = [c.to_dict() for c in generate("timespeak", seed=5, count=4)]
    again = [c.to_dict() for c in generate("timespeak", seed=5, count=4)]
    other = [c.to_dict() for c in generate("timespeak", seed=6, count=4)]
    assert first == again
    assert [c["summary"] for c in first] != [c["summary"] for c in other]


@pytest.mark.slow
def test_visible_case_files_are_the_visible_seed(visible: dict[str, list[Case]]) -> None:
    """bench/cases holds exactly what the generator makes from VISIBLE_SEED (regenerate with
    `microturn bench all --seed 1 --save-cases bench/cases --no-run` after changing the generator)."""
    assert set(visible) == set(SUITES)
    for suite in SUITES:
        assert [c.to_dict() for c in visible[suite]] == [c.to_dict() for c in generate(suite, VISIBLE_SEED)]


def test_cases_round_trip_through_json(visible: dict[str, list[Case]]) -> None:
    for cases in visible.values():
        for case in cases:
            assert Case.from_dict(case.to_dict()) == case


def test_every_suite_has_quick_cases(visible: dict[str, list[Case]]) -> None:
    for suite, cases in visible.items():
        quick = [c for c in cases if c.quick]
        assert 1 <= len(quick) <= 4, suite
        assert sum(c.duration_s for c in quick if c.suite != "latency") < 40.0, suite


def test_bench_lexicon_is_disjoint_from_the_training_lexicon() -> None:
    """The CueSpeak cue words are held out: none of them is in the part of model/lexicon.py the
    interaction model is trained on, and the runtime lexicon knows each foreign one with our meaning."""
    try:
        trained = importlib.import_module("model.lexicon")
    except ImportError:
        pytest.skip("model/lexicon.py does not exist (yet): nothing to be disjoint from")
    train_words = {e.word for e in trained.TRAIN_ENTRIES}
    meanings = {e.word: e.meaning for e in trained.FOREIGN_ENTRIES}
    ours = {word: accepted for table in lexicon.LANGUAGES.values() for word, accepted in table.items()}
    assert not set(ours) & train_words
    assert not set(lexicon.COLOURS) & set(trained.TRAIN_CATEGORY_WORDS["colour"])
    for word, accepted in ours.items():
        assert meanings.get(word) in accepted, word
    if hasattr(trained, "BENCH_WORDS"):
        assert set(ours) | set(lexicon.COLOURS) <= trained.BENCH_WORDS


def _phrasing(template: str) -> str:
    """A template as the recogniser would spell it, slots blanked ("{n} seconds" and "{p}" alike)."""
    text = re.sub(r"\{[a-z]+\}( seconds?)?", "{}", template.lower().replace("colour", "color"))
    return " ".join(re.sub(r"[^a-z{}' ]+", " ", text).split())


def test_instruction_phrasings_are_not_training_templates() -> None:
    """Held out in wording too: no instruction or stop phrasing of the cases is one the interaction model's
    scenario generator (model/scenarios.py) renders in training."""
    try:
        scenarios = importlib.import_module("model.scenarios")
    except ImportError:
        pytest.skip("model/scenarios.py does not exist (yet)")
    names = ("PERIODIC", "TIMES", "ONE_SHOT", "COUNT_DOWN", "COUNT_UP", "STOP", "FOREIGN_RULE",
             "CATEGORY_SAY_RULE", "CATEGORY_REPEAT_RULE", "WORD_RULE")  # fmt: skip
    training = {_phrasing(t) for name in names for t in getattr(scenarios, name, ())}
    assert training, "model/scenarios.py renamed its template lists: update this test"
    ours = [
        *generate_module.EVERY_TEMPLATES, *generate_module.STOP_PHRASES, *generate_module.IN_TEMPLATES,
        *generate_module.COUNTDOWN_TEMPLATES, *generate_module.COUNT_UP_TEMPLATES,
        *generate_module.TRANSLATE_TEMPLATES, *generate_module.COLOUR_STOP_TEMPLATES,
        *generate_module.COLOUR_REPEAT_TEMPLATES, *generate_module.NUMBER_TEMPLATES,
    ]  # fmt: skip
    for template in ours:
        phrasing = _phrasing(template)
        # The category, its answer and "it" are slots in the training templates.
        variants = {phrasing, re.sub(r"\ba (color|number)\b", "a {}", phrasing)}
        variants |= {
            v.replace(" stop", " {}").replace("the color", "it").replace("the number", "it") for v in variants
        }
        assert not variants & training, template


def test_filler_talk_has_no_cue_words() -> None:
    numbers = {w for words in lexicon.NUMBER_WORDS.values() for w in words if w.isalpha()} - {"to", "for"}
    foreign = {w for table in lexicon.LANGUAGES.values() for w in table}
    colours = set(lexicon.COLOURS) | {"red", "blue", "green", "yellow", "orange", "purple", "pink", "white"}
    for sentence in lexicon.FILLER_SENTENCES:
        words = set(normalize_words(sentence))
        assert not words & (numbers | foreign | colours), sentence


def test_timespeak_targets_count_from_the_end_of_the_instruction(visible: dict[str, list[Case]]) -> None:
    for case in visible["timespeak"]:
        end = case.events[0].t_s if case.events else case.segments[0].speech_end_s
        assert end is not None
        targets = [e.at_s for e in case.expected]
        assert all(t is not None and t > end + 0.9 for t in targets), case.id
        if case.kind == "every":
            stop = case.segments[-1]
            assert stop.role == "stop" and stop.start_s is not None
            assert max(t for t in targets if t is not None) < stop.start_s


def test_cuespeak_talk_is_continuous_and_cues_are_well_placed(visible: dict[str, list[Case]]) -> None:
    for case in visible["cuespeak"]:
        spans = [(s.speech_start_s or 0.0, s.speech_end_s or 0.0) for s in case.segments if s.role == "talk"]
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
        assert max(gaps) <= 0.3 + 1e-6, case.id
        talk_start, talk_end = spans[0][0], spans[-1][1]
        assert 15.0 <= talk_end - talk_start <= 45.0, case.id
        ends = [e.at_s or 0.0 for e in case.expected]
        assert ends[0] - talk_start >= 3.0
        assert talk_end - ends[-1] >= 2.5
        assert all(b - a >= 3.5 for a, b in itertools.pairwise(ends))
        for e in case.expected:
            assert (
                e.segment is not None and e.window_s is not None and e.cue is not None and e.at_s is not None
            )
            segment = case.segments[e.segment]
            assert e.cue in segment.text.split()
            assert (
                (segment.speech_start_s or 0.0)
                < e.window_s[0]
                < e.at_s
                <= (segment.speech_end_s or 0.0) + 0.02
            )


@pytest.mark.parametrize("voice", FLITE_VOICES)
def test_word_timings_match_the_audio(voice: str) -> None:
    """A sentence-final word ends where the audible speech ends; a mid-sentence one inside it."""
    text = "Yesterday I finally found the mariposa"
    span = word_span(voice, text, 5)
    start, end = audible(voice, text)
    assert span.end_s == pytest.approx(end, abs=0.03)
    middle = word_span(voice, "I saw a mariposa near the old bridge today", 3)
    assert (
        start
        < middle.start_s
        < middle.end_s
        < audible(voice, "I saw a mariposa near the old bridge today")[1] - 0.5
    )


def test_espeak_voice_is_the_harder_variant() -> None:
    pcm = synthesize("espeak:en-us", "count down from five")
    assert pcm.dtype == np.int16 and len(pcm) > 8000
    cases = generate("turntaking", seed=2, count=3, espeak_share=1.0)
    assert {s.voice for c in cases for s in c.segments} == {"espeak:en-us"}


@pytest.mark.parametrize("suite", ["repcount", "proactivevqa"])
def test_video_cases_hold_the_clip_and_its_truth_in_case_time(
    visible: dict[str, list[Case]], suite: str
) -> None:
    """The clip is the bench split's, from seeds clear of those the video features were tuned and checked
    on; it starts after the instruction; the expectations are the clip's own truth, shifted to case time."""
    for case in visible[suite]:
        video = case.video
        assert video is not None and video.split == "bench" and video.seed >= generate_module.CLIP_SEED_BASE
        clip = make_clip(video.kind, seed=video.seed, split="bench", reps=video.reps, fps=video.fps)
        assert clip.size == (video.width, video.height) and clip.duration == pytest.approx(
            video.duration_s, abs=1e-3
        )
        instruction_end = case.tolerated_s[0][0]
        assert video.start_s > instruction_end + 0.4
        if suite == "repcount":
            truth = [video.start_s + t for t in clip.rep_times]
            assert [e.kind for e in case.expected] == ["rep"] * len(truth) and video.reps == len(truth)
            assert [e.at_s for e in case.expected] == pytest.approx(truth, abs=2e-3)
            assert generate_module.REPS_RANGE[0] <= len(truth) <= generate_module.REPS_RANGE[1]
        else:
            (e,) = case.expected
            event = next(ev for ev in clip.events if e.at_s == pytest.approx(video.start_s + ev.t, abs=2e-3))
            assert event.answer.split()[0] in " ".join(e.accepted)
            assert e.window_s is not None and e.window_s[1] <= case.duration_s
            assert all(ev.answer != event.answer for ev in clip.events if ev.t < event.t)  # its first time
        assert case.duration_s >= max(e.at_s or 0.0 for e in case.expected) + 1.0


def test_video_instruction_phrasings_are_not_training_phrasings() -> None:
    """Held out in wording: the RepCount and ProactiveVideoQA instructions are none of the phrasings the
    interaction model is trained to follow on video (model/scenarios.py VIDEO_TRAIN_PHRASINGS)."""
    scenarios = importlib.import_module("model.scenarios")
    trained = getattr(scenarios, "VIDEO_TRAIN_PHRASINGS", None)
    if trained is None:
        pytest.skip("model/scenarios.py has no VIDEO_TRAIN_PHRASINGS (yet): nothing to be disjoint from")
    flat = [p for group in trained.values() for p in group] if isinstance(trained, dict) else list(trained)
    training = {_phrasing(t) for t in flat}
    ours = [
        *generate_module.REPCOUNT_TEMPLATES,
        *(
            template
            for templates in generate_module.PROACTIVE_TEMPLATES.values()
            for template, _ in templates
        ),
    ]
    for template in ours:
        assert _phrasing(template) not in training, template
        for name in generate_module.EXERCISE_NAMES.values():  # the exercise may be a slot there or not
            assert _phrasing(template.replace("{exercise}", name)) not in training, template
