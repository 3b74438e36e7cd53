"""The scenario generator: deterministic, well-formed, fast, and blind to the benchmark cases."""

from __future__ import annotations

import re
import time
from functools import cache
from itertools import pairwise

import pytest

from model.background import route
from model.lexicon import BENCH_WORDS, TRAIN_ENTRIES, number_words
from model.scenarios import (
    ASK_ARITHMETIC,
    ASK_CLOCK,
    ASK_DOCS,
    ASK_TIMER,
    BENCH_PHRASINGS,
    CATEGORY_REPEAT_RULE,
    CATEGORY_SAY_RULE,
    COUNT_DOWN,
    COUNT_UP,
    DATA_VERSION,
    EXERCISE_NAMES,
    FOREIGN_RULE,
    MAX_PERIOD_S,
    MAX_SECONDS,
    MIN_SECONDS,
    ONE_SHOT,
    PERIODIC,
    REPLY_LATENCY_TICKS,
    STOP,
    TEMPLATE_WORDS,
    TICK_S,
    TIME_KINDS,
    TIMES,
    VIDEO_TRAIN_PHRASINGS,
    WORD_RULE,
    generate,
    generate_labelled,
    say_tick,
    say_ticks,
    schedule_targets,
)
from model.ticks import (
    MAX_SAY_WORDS,
    REP,
    REP_RESTART_S,
    SEE_PREFIX,
    SPECIAL_TOKENS,
    TYPED,
    TYPED_END,
    VIDEO_OFF,
    VIDEO_ON,
    VIDEO_TOKENS,
    Act,
    Scenario,
    TickOutput,
)
from model.video.palette import NAMED_COLOURS
from model.video.synthetic import SHAPES

SEED = 11
COUNT = 40


@cache
def scenarios() -> list[Scenario]:
    return generate(SEED, COUNT)


@cache
def many() -> list[tuple[Scenario, dict[int, str]]]:
    """A larger sample, with the labels of the <say> targets (seed 3's first 200 serve other tests too)."""
    return generate_labelled(3, 400)


def test_the_same_seed_gives_the_same_scenarios() -> None:
    again = generate(SEED, 5)
    assert again == scenarios()[:5]
    assert generate(SEED + 1, 5) != again
    assert generate_labelled(SEED, 5) == generate_labelled(SEED, 5)
    assert [scenario for scenario, _ in generate_labelled(SEED, 5)] == again
    assert DATA_VERSION == 3


def test_say_targets_are_labelled_with_what_asked_for_them() -> None:
    """Every <say> target has a label, nothing else has one; every kind is there, TimeSpeak spoken and
    typed; counts say numbers."""
    numbers = {number_words(n) for n in range(100)}
    seen = set()
    for scenario, kinds in many():
        assert set(kinds) == {k for k, tick in enumerate(scenario) if tick.output.act is Act.SAY}
        seen |= set(kinds.values())
        for k, kind in kinds.items():
            if kind.startswith(("count", "rep")):
                assert " ".join(scenario[k].output.words) in numbers, (k, kind, scenario[k].output)
    time_kinds = {kind + typed for kind in TIME_KINDS for typed in ("", "_typed")}
    assert seen == time_kinds | {"cue", "rep", "watch"}


def _is_timespeak(kind: str) -> bool:
    return kind.removesuffix("_typed") in TIME_KINDS


def test_timespeak_has_a_larger_share() -> None:
    """Data version 3 has TimeSpeak in more sessions, more one-shots and more typed instructions than
    version 2 (44 % of sessions, 0.22 one-shots a session, 14 % typed); its targets outnumber any other
    kind's."""
    kinds = [kind for _, labels in many() for kind in labels.values()]
    timespeak = [kind for kind in kinds if _is_timespeak(kind)]
    assert len(timespeak) / len(kinds) >= 0.35, len(timespeak) / len(kinds)
    assert all(len(timespeak) > kinds.count(kind) for kind in ("cue", "rep", "watch"))
    with_timespeak = sum(any(map(_is_timespeak, labels.values())) for _, labels in many())
    assert with_timespeak / len(many()) >= 0.5, with_timespeak / len(many())
    assert sum(kind.startswith("one_shot") for kind in kinds) / len(many()) >= 0.26
    assert sum(kind.endswith("_typed") for kind in timespeak) / len(timespeak) >= 0.18


def test_periods_cover_one_to_thirty_seconds_evenly() -> None:
    """ "every N seconds", "in N seconds" ...: every N from 1 to 30 is in the data, none much rarer than
    another, so that only reading N gets the timing right (counts, "one every N seconds", keep to 10)."""
    number = "|".join(sorted(_NUMBERS, key=len, reverse=True))
    period = re.compile(
        rf"(?<!one )(?<!number )\b(?:every|in|after) ({number}) seconds|\b({number}) seconds from"
    )
    found: dict[int, int] = {}
    for scenario, _ in many():
        words = " ".join(t for tick in scenario for t in tick.input.tokens if not t.startswith("<"))
        for match in period.finditer(words):
            n = _NUMBERS[match[1] or match[2]]
            found[n] = found.get(n, 0) + 1
    assert set(range(2, MAX_PERIOD_S + 1)) <= set(found), sorted(found)
    longer = sum(count for n, count in found.items() if n > MAX_PERIOD_S)
    assert longer <= 0.02 * sum(found.values()), "only a misheard number now and then"
    low = sum(found.get(n, 0) for n in range(2, 11))
    high = sum(found.get(n, 0) for n in range(21, 30))
    assert 0.5 <= high / low <= 2, (low, high)


def test_scenarios_are_well_formed() -> None:
    for scenario in scenarios():
        assert MIN_SECONDS / TICK_S - 1 <= len(scenario) <= MAX_SECONDS / TICK_S
        for tick in scenario:
            out = tick.output
            assert TickOutput.from_tokens(out.to_tokens()) == out  # every output parses back
            if out.act is Act.SAY:
                assert 1 <= len(out.words) <= MAX_SAY_WORDS
                assert not set(out.words) & set(SPECIAL_TOKENS)
            assert tick.input.to_tokens()[0] == "<tick>"


def test_every_kind_of_behaviour_is_in_the_data() -> None:
    acts = {tick.output.act for scenario in scenarios() for tick in scenario}
    assert acts == set(Act)
    tokens = {t for scenario in scenarios() for tick in scenario for t in tick.input.tokens}
    assert {"<means>", "<result>", "<typed>", "<cat:colour>"} <= tokens
    both = sum(tick.input.user_speaking and tick.input.agent_speaking for s in scenarios() for tick in s)
    assert both, "the agent answers cues while the user keeps talking"


def test_agent_flag_follows_from_what_the_model_said() -> None:
    """<agent> is set right after a <say> for as long as the words play, is cleared right after a <stop>,
    and is never set unless something was said or answered shortly before."""
    for scenario in scenarios():
        agent = [t.input.agent_speaking for t in scenario]
        acts = [t.output for t in scenario]
        for k, out in enumerate(acts[:-1]):
            if out.act is Act.SAY:
                assert agent[k + 1], k
                n = say_ticks(out.words)
                later = [a.act for a in acts[k + 1 : k + 1 + n]]
                if all(a is Act.WAIT for a in later) and k + n + 1 < len(agent):
                    assert agent[k + 1 : k + 1 + n] == [True] * n, (k, out)
                    # Nothing else to play (no reply in the pipeline): the flag ends with the words.
                    earlier = {a.act for a in acts[max(0, k - 60) : k]}
                    if not earlier & {Act.ANSWER, Act.NEWS, Act.SAY}:
                        assert not agent[k + 1 + n], (k, out)
            if out.act is Act.STOP:
                assert not agent[k + 1], k
        latency = REPLY_LATENCY_TICKS[1] + 40  # a reply may wait for a <say> to finish
        for k in range(1, len(agent)):
            if agent[k] and not agent[k - 1]:
                recent = {a.act for a in acts[max(0, k - latency) : k]}
                assert recent & {Act.SAY, Act.ANSWER, Act.NEWS}, k


def test_barge_in_stops_a_reply_at_once() -> None:
    stops = 0
    for scenario in scenarios():
        for k, tick in enumerate(scenario):
            if tick.output.act is Act.STOP and tick.input.user_speaking and tick.input.agent_speaking:
                stops += 1
                before = scenario[k - 1]
                talked_over = before.input.user_speaking and before.input.agent_speaking
                assert not (talked_over and before.output.act is Act.WAIT and _reply_before(scenario, k - 1))
    assert stops > 0


def _reply_before(scenario: Scenario, k: int) -> bool:
    """Whether what plays at micro-turn ``k`` is a reply (the last act that started speech)."""
    for tick in reversed(scenario[:k]):
        if tick.output.act in (Act.ANSWER, Act.NEWS):
            return True
        if tick.output.act in (Act.SAY, Act.STOP):
            return False
    return False


_NUMBERS = {number_words(n): n for n in range(1, 61)}


def test_typed_reminders_are_said_on_schedule() -> None:
    """A typed "every N seconds say W" is said at say_tick(end of its micro-turn + j * N) until stopped."""
    checked = 0
    for scenario, _ in many():
        for k, tick in enumerate(scenario):
            tokens = list(tick.input.tokens)
            if TYPED not in tokens:
                continue
            text = " ".join(tokens[tokens.index(TYPED) + 1 : tokens.index(TYPED_END)])
            match = re.fullmatch(r"every (?P<p>\w+(?: \w+)?) seconds (?:please )?say (?P<w>.+)", text) or (
                re.fullmatch(r"(?:please )?say (?P<w>.+?)(?: once)? every (?P<p>\w+(?: \w+)?) seconds", text)
            )
            if not match or match["p"] not in _NUMBERS or " times" in text or " until " in text:
                continue
            period = _NUMBERS[match["p"]]
            words = tuple(match["w"].removeprefix("the word ").split())
            said = [j for j in range(k, len(scenario)) if scenario[j].output.words == words]
            stop = next((j for j in range(k + 1, len(scenario)) if scenario[j].output.act is Act.STOP), None)
            expected = [
                say_tick(t)
                for t in schedule_targets("periodic", period, 100, (k + 1) * TICK_S)
                if say_tick(t) < (stop if stop is not None else len(scenario))
            ]
            assert len(said) == len(expected), (text, said, expected)
            assert all(abs(a - b) <= 1 for a, b in zip(said, expected, strict=True)), (text, said, expected)
            checked += 1
    assert checked >= 2


def test_schedule_timing() -> None:
    assert schedule_targets("periodic", 4.0, 3, 10.0) == [14.0, 18.0, 22.0]
    assert schedule_targets("one_shot", 10.0, 1, 2.5) == [12.5]
    # The output of micro-turn k is heard SAY_LEAD_S after it ends: (k + 1) * 0.2 + 0.2 == 14.0.
    assert say_tick(14.0) == 68
    assert say_ticks(("breathe",)) >= 3


def _bench_patterns() -> list[re.Pattern[str]]:
    """BENCH_PHRASINGS as regular expressions, each slot matching anything."""
    return [
        re.compile(re.sub(r"\\\{\w+\\\}", "(.+)", re.escape(p)))
        for phrasings in BENCH_PHRASINGS.values()
        for p in phrasings
    ]


def test_benchmark_entries_and_phrasings_never_appear_in_training_data() -> None:
    for scenario in scenarios():
        for tick in scenario:
            assert not BENCH_WORDS & set(tick.input.tokens)
            assert not BENCH_WORDS & set(tick.output.words)
    bench = _bench_patterns()
    training = (
        *PERIODIC, *TIMES, *ONE_SHOT, *COUNT_DOWN, *COUNT_UP, *STOP, *FOREIGN_RULE, *CATEGORY_SAY_RULE,
        *CATEGORY_REPEAT_RULE, *WORD_RULE,
    )  # fmt: skip
    slots = {"p": "four seconds", "w": "breathe", "k": "three", "n": "five", "lang": "spanish",
             "cat": "color", "x": "stop", "y": "pizza"}  # fmt: skip
    for template in training:
        rendered = template.format(**slots)
        assert not any(b.fullmatch(rendered) for b in bench), template
    assert not set(training) & {p for ps in BENCH_PHRASINGS.values() for p in ps}
    used = {e.word for e in TRAIN_ENTRIES}
    assert not used & BENCH_WORDS


@pytest.mark.parametrize("templates", [ASK_ARITHMETIC, ASK_CLOCK, ASK_TIMER, ASK_DOCS])
def test_ask_questions_are_what_the_background_router_sends_to_a_tool(templates: tuple[str, ...]) -> None:
    for template in templates:
        text = template.format(a="twelve", b="three", city="tokyo", t="ten seconds", n="parking")
        assert route(text) is not None, text


def test_template_words_are_closed_class() -> None:
    assert {"every", "seconds", "say", "stop", "count", "down", "five", "um", "what"} <= TEMPLATE_WORDS
    assert len(TEMPLATE_WORDS) < 800
    # What the agent is asked to say comes from the large word list, mostly outside the templates.
    said = [w for s in scenarios() for t in s if t.output.act is Act.SAY for w in t.output.words]
    unknown = [w for w in said if w not in TEMPLATE_WORDS]
    assert len(set(unknown)) > 50


def test_generation_is_fast() -> None:
    started = time.perf_counter()
    generate(99, 50)
    per_minute = 50 / (time.perf_counter() - started) * 60
    assert per_minute > 1000, f"{per_minute:.0f} scenarios a minute"


@cache
def video_scenarios(count: int = 200) -> list[Scenario]:
    return [s for s, _ in many()[:count] if any(tick.input.video for tick in s)]


def _events(tokens: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """A micro-turn's video tokens as (marker, value words without annotations)."""
    events: list[tuple[str, list[str]]] = []
    for t in tokens:
        if t in VIDEO_TOKENS:
            events.append((t, []))
        elif not t.startswith("<"):
            events[-1][1].append(t)
    return events


def test_about_one_session_in_seven_has_a_camera_and_is_deterministic() -> None:
    assert 0.1 <= len(video_scenarios()) / 200 <= 0.3
    again = [s for s in generate(3, 40) if any(tick.input.video for tick in s)]
    assert (
        again and again == video_scenarios()[: len(again)]
    )  # the i-th scenario is the same whatever the count


def test_video_tokens_are_well_formed() -> None:
    """Markers first (after the flags, before the words), each with its value as words: a count, a colour,
    a colour and a shape, a number; <video:on>/<video:off> alone, alternating, starting with on."""
    numbers = {number_words(n) for n in range(100)}
    kinds = set()
    for scenario in video_scenarios():
        camera = []
        for tick in scenario:
            tokens = tick.input.to_tokens()
            if tick.input.video:
                assert tokens[1 + tick.input.user_speaking + tick.input.agent_speaking] in VIDEO_TOKENS
            for marker, words in _events(tick.input.video):
                kinds.add(marker)
                value = " ".join(words)
                if marker in (VIDEO_ON, VIDEO_OFF):
                    assert not words
                    camera.append(marker)
                elif marker in (REP, f"{SEE_PREFIX}number>"):
                    assert value in numbers, value
                elif marker == f"{SEE_PREFIX}colour>":
                    assert value in NAMED_COLOURS, value
                else:
                    assert len(words) == 2 and words[0] in NAMED_COLOURS and words[1] in SHAPES, value
        assert camera[0] == VIDEO_ON
        assert all(a != b for a, b in pairwise(camera)), "on the change only"
    assert kinds == set(VIDEO_TOKENS)


def test_counts_are_said_when_the_repetitions_are_seen() -> None:
    """A count is said in the micro-turn its <rep> arrives (as long as counting was asked for), also
    while the user talks; counts go up by one, or start at one after a long rest."""
    numbers = {number_words(n): n for n in range(100)}
    said = silent = over_talk = 0
    for scenario in video_scenarios():
        last: tuple[int, int] | None = None
        for k, tick in enumerate(scenario):
            for marker, words in _events(tick.input.video):
                if marker != REP:
                    continue
                count = numbers[" ".join(words)]
                if last is not None and (k - last[0]) * TICK_S < REP_RESTART_S:
                    assert count == last[1] + 1, (k, count, last)
                elif last is not None and (k - last[0]) * TICK_S > REP_RESTART_S + 1.0:
                    assert count == 1, (k, count, last)
                last = (k, count)
                out = tick.output
                if out.act is Act.SAY:
                    assert out.words == tuple(words), (k, out)
                    said += 1
                    over_talk += tick.input.user_speaking
                else:
                    silent += 1  # nobody asked to count, or stopped
    assert said > 100 and silent > 20 and over_talk > 5, (said, silent, over_talk)


def test_video_phrasings_are_disjoint_from_the_benchmarks() -> None:
    """No rendering of a training camera phrasing is a benchmark one (held out in wording too)."""
    bench = _bench_patterns()
    for template in VIDEO_TRAIN_PHRASINGS:
        for e, c, shape in zip(EXERCISE_NAMES, [*NAMED_COLOURS] * 2, [*SHAPES] * 3, strict=False):
            rendered = template.format(e=e, c=c, s=shape, x="now")
            assert not any(b.fullmatch(rendered) for b in bench), (template, rendered)
    assert not set(VIDEO_TRAIN_PHRASINGS) & {p for ps in BENCH_PHRASINGS.values() for p in ps}
    assert "reps" not in EXERCISE_NAMES, "count my {e} would render the benchmark's count my reps"
