"""Deterministic case generation: the same suite and seed always give the same cases.

    microturn bench all --seed 7 --save-cases DIR --no-run   # write another seed's cases as JSON

The visible cases (``bench/cases/*.json``) are ``VISIBLE_SEED``'s; held-out cases come from other seeds or
other case files. Times are laid out from the synthesised audio itself (flite is deterministic), so every
target is exact relative to what the user says: an instruction's targets count from the end of its
audible speech.

Rules the scorers rely on (docs/benchmarks.md):

- TimeSpeak: a repeated or counted utterance is due one interval after the instruction ends ("every four
  seconds say breathe": the first at +4 s), a delayed one after its delay; ±0.5 s. One acknowledgement
  right after an instruction or a "stop" is tolerated.
- CueSpeak: the user talks without a gap over 0.3 s; the first cue comes >= 3 s into the talk, cues are
  >= 3.5 s apart, and the talk goes on >= 2.5 s after the last one.
- Turn-taking: pauses of 1.0-2.0 s inside a sentence; interruptions start 0.8-1.6 s after the agent starts
  speaking.
- RepCount and ProactiveVideoQA: the camera shows a synthetic clip of the ``bench`` split
  (model/video/synthetic.py: colours, backgrounds and distractors training never draws) whose first
  frame is shown still until 0.5-1.0 s after the instruction ends; the clip then plays. The case holds the
  clip's parameters and its truth in case time (each repetition's completion; the event the question asks
  about and its answer), not its frames.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.suite.cases import SUITES, Case, Expectation, Network, Segment, TextEvent, Trigger, Video
from bench.suite.lexicon import (
    COLOURS,
    CUE_SENTENCES,
    FILLER_SENTENCES,
    LANGUAGES,
    NUMBER_WORDS,
    REMINDER_WORDS,
    TASK_WORDS,
)
from bench.suite.speech import ESPEAK_PREFIX, FLITE_VOICES, audible, word_span
from model.lexicon import number_words
from model.video.evaluate import ONLINE_WINDOW_S, ZERO_SCORE_S
from model.video.synthetic import DEFAULT_FPS, DEFAULT_SIZE, EXERCISES, SCENES, Clip, make_clip

VISIBLE_SEED = 1
FULL_SIZES = {  # latency: per condition
    "timespeak": 18,
    "cuespeak": 8,
    "turntaking": 18,
    "latency": 10,
    "repcount": 8,
    "proactivevqa": 8,
}
LEAD_S = 0.5  # silence before the user's first word
TIMESPEAK_TOLERANCE_S = 0.5
CUE_MAX_DELAY_S = 1.0
TAKE_TURN_WITHIN_S = 5.0
ANSWER_WITHIN_S = 15.0  # a loaded 2-core machine makes the baseline's whole-reply generation slow
ACK_WINDOW_S = 2.0
REPLY_HEARD_S = 1.5  # latency and smooth turn-taking cases end this long after the reply starts
LATENCY_CONDITIONS = (Network(), Network(loss=0.02), Network(loss=0.05), Network(jitter_ms=30.0))
ESPEAK_VOICE = f"{ESPEAK_PREFIX}en-us"
TYPED_SHARE = 0.3  # share of instructions typed instead of spoken (where a task allows both)
# Clip seeds of the video cases: clear of the bench-split seeds the video features were tuned on (0-11) and
# checked on (1000-1011, docs/vision.md); the "bench" split keeps their pixels apart from training's.
CLIP_SEED_BASE = 1_000_000
# s from the end of the instruction to the clip's start (its first frame is shown still till then)
CLIP_GAP_S = (0.5, 1.0)
REPS_RANGE = (4, 12)  # repetitions per RepCount clip (the quick case does the fewest)

NUMBER_NAMES = {n: words[0] for n, words in NUMBER_WORDS.items()}

EVERY_TEMPLATES = [
    "Every {n} seconds, say {w} for me until I tell you to stop.",
    "Say {w} every {n} seconds until I say stop.",
    "Can you say {w} once every {n} seconds? Keep going until I say stop.",
    "Please remind me to {w} every {n} seconds, until I say stop.",
    "I need a rhythm. Say {w} every {n} seconds, and stop when I tell you.",
]
STOP_PHRASES = [
    "Okay, you can stop there.",
    "Stop now, thanks.",
    "That's enough, stop.",
    "Alright, stop there, thanks.",
]
IN_TEMPLATES = [
    "In {n} seconds, tell me to {w}.",
    "Remind me in {n} seconds to {w}.",
    "Wait {n} seconds, then tell me to {w}.",
    "After {n} seconds, tell me to {w}, please.",
    "Give me {n} seconds and then tell me to {w}.",
]
COUNTDOWN_TEMPLATES = [
    "Count down from {n}, one number a second.",
    "Please count down from {n} to one, one number per second.",
    "Give me a countdown from {n}, one second apart.",
]
COUNT_UP_TEMPLATES = [
    "Count to {n}, one number every {i} seconds.",
    "Please count up to {n}, saying one number every {i} seconds.",
]
TRANSLATE_TEMPLATES = [
    "Every time I say a {lang} word, give me the English word.",
    "Whenever I use a {lang} word, tell me what it means in English right away.",
    "I am going to talk for a while. When you hear a {lang} word, say the English word.",
    "Please translate every {lang} word I say into English, as soon as I say it.",
]
COLOUR_STOP_TEMPLATES = [
    "Say stop when I mention a colour.",
    "Whenever a colour comes up, say stop.",
    "Every time you hear me say a colour, just say stop.",
]
COLOUR_REPEAT_TEMPLATES = [
    "Whenever I mention a colour, say the colour back.",
    "Each time I say a colour, say that colour back to me.",
]
NUMBER_TEMPLATES = [
    "Every time I say a number, repeat the number.",
    "When I mention a number, say it back to me right away.",
]
PAUSE_THOUGHTS = [
    ("I was thinking about, um,", "going to the beach this weekend."),
    ("So what I really want to know is, uh,", "how far away the moon is from here."),
    ("My plan for tomorrow is to, hmm,", "finally clean out the garage."),
    ("The thing I keep forgetting is, um,", "where I parked the car last night."),
    ("Yesterday I went to the, uh,", "new museum downtown with my cousin."),
    ("I would like to hear more about, um,", "how bees make honey."),
    ("What I was going to say is, uh,", "that the meeting moved to Friday."),
    ("Could you tell me, um,", "what the tallest mountain in the world is?"),
    ("I am trying to decide whether to, hmm,", "take the train or drive to the city."),
    ("The best thing about my weekend was, um,", "the long walk in the forest."),
]
SMOOTH_QUESTIONS = [
    "What is the tallest mountain in the world?",
    "How do airplanes stay in the air?",
    "Can you recommend a good book for a rainy day?",
    "Why is the ocean salty?",
    "What should I cook for dinner tonight?",
    "How long does it take to boil an egg?",
    "What is the difference between a frog and a toad?",
    "Where is the Eiffel Tower?",
    "What makes a rainbow appear?",
    "Who painted the Mona Lisa?",
]
LONG_PROMPTS = [
    "Can you tell me a long story about a dragon who learns to bake bread?",
    "Tell me everything you know about the history of the bicycle.",
    "Please describe a perfect summer day in a small village, in detail.",
    "Explain how a steam engine works, step by step.",
    "Tell me a long story about a sailor who is lost at sea.",
    "Describe the city of Rome to me as if I had never heard of it.",
]
INTERRUPTIONS = [
    ("Wait, wait, stop. What is the capital of Italy?", ["rome"]),
    ("Sorry to interrupt, but how many legs does a spider have?", ["eight", "8"]),
    ("Hold on, stop please. What colour is grass?", ["green"]),
    ("Stop for a second. What is two plus three?", ["five", "5"]),
    ("Excuse me, stop. Which animal says moo?", ["cow", "cows"]),
    ("Hang on, stop talking. What do bees make?", ["honey"]),
]
LATENCY_QUESTIONS = [
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky?",
    "Can you tell me a joke?",
    "Where do penguins live?",
    "Who wrote Hamlet?",
    "How far away is the moon?",
    "What do bees make?",
    "What is the largest ocean?",
    "Why do cats purr?",
]


REPCOUNT_TEMPLATES = [
    "Here come my {exercise}. Say each number as I finish one.",
    "Track my {exercise} and say the count after each one.",
    "Can you count each one out loud while I do {exercise}?",
    "Say the number of every rep as soon as I finish it.",
]
EXERCISE_NAMES = {"pushups": "push-ups", "squats": "squats", "jumping_jacks": "jumping jacks"}
# ProactiveVideoQA questions per scene kind: (template, what it asks for). "colour": the colour of the
# event named in the question ({colour}; the first time the lamp turns it), "new colour" / "number": what
# the first change shows, "object" / "object colour": what appears (colour and shape, or the colour alone).
PROACTIVE_TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "light": [
        ("Let me know as soon as the lamp turns {colour}.", "colour"),
        ("Keep an eye on the lamp and speak up when it is {colour}.", "colour"),
        ("When the lamp changes colour, tell me the new colour.", "new colour"),
    ],
    "appear": [
        ("Tell me what it is if anything new comes into view.", "object"),
        ("Tell me the colour and shape of anything that appears.", "object"),
        ("Say the colour of whatever appears in the picture.", "object colour"),
    ],
    "number": [
        ("As soon as the card flips, tell me its new number.", "number"),
        ("When the number on the card changes, say it.", "number"),
    ],
}
# What the recogniser may write for the shapes the scenes draw (model/video/synthetic.py SHAPES).
SHAPE_WORDS = {
    "disc": ["circle", "disc", "disk", "ball", "dot"],
    "square": ["square", "box"],
    "triangle": ["triangle"],
}


class Script:
    """Lays the user's utterances out on the case's time line."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.t = LEAD_S  # where the last fixed utterance's audible speech ended

    def say(self, text: str, voice: str, role: str, gap_s: float = 0.0, at_s: float | None = None) -> Segment:
        """Say ``text``: audible ``gap_s`` after the previous utterance was, or starting at ``at_s``."""
        s0, s1 = audible(voice, text)
        start = round(self.t + gap_s - s0 if at_s is None else at_s, 3)
        segment = Segment(
            text,
            voice,
            role,
            start_s=start,
            speech_start_s=round(start + s0, 3),
            speech_end_s=round(start + s1, 3),
        )
        self.segments.append(segment)
        assert segment.speech_end_s is not None
        self.t = segment.speech_end_s
        return segment

    def case(
        self,
        ids: tuple[str, int],
        suite: str,
        kind: str,
        summary: str,
        expected: list[Expectation],
        duration_s: float,
        **fields: Any,
    ) -> Case:
        """The case of this script; ``ids``: its id and seed."""
        case_id, seed = ids
        return Case(
            id=case_id,
            suite=suite,
            kind=kind,
            seed=seed,
            summary=summary,
            segments=self.segments,
            expected=expected,
            duration_s=round(duration_s, 3),
            **fields,
        )

    def triggered(self, text: str, voice: str, role: str, trigger: Trigger) -> Segment:
        segment = Segment(text, voice, role, trigger=trigger)
        self.segments.append(segment)
        return segment


def _voice(rng: random.Random, espeak_share: float) -> str:
    return ESPEAK_VOICE if rng.random() < espeak_share else rng.choice(FLITE_VOICES)


def _end(segment: Segment) -> float:
    assert segment.speech_end_s is not None
    return segment.speech_end_s


def _instruct(rng: random.Random, script: Script, events: list[TextEvent], text: str, voice: str) -> float:
    """Say ``text``, or (``TYPED_SHARE`` of the time) type it at ``LEAD_S``; returns when it ends."""
    if rng.random() < TYPED_SHARE:
        events.append(TextEvent(LEAD_S, "input.text", text))
        return LEAD_S
    return _end(script.say(text, voice, "instruction"))


# -- TimeSpeak -------------------------------------------------------------------------------------------


def _spaced(end: float, interval: float, contents: list[list[str]]) -> list[Expectation]:
    """The k-th of ``contents`` is due k intervals after ``end``."""
    return [
        Expectation(
            "say", at_s=round(end + k * interval, 3), tolerance_s=TIMESPEAK_TOLERANCE_S, accepted=accepted
        )
        for k, accepted in enumerate(contents, 1)
    ]


def _timespeak(rng: random.Random, case_id: str, seed: int, index: int, espeak_share: float) -> Case:
    kind = ("every", "in", "count")[index % 3]
    voice = _voice(rng, espeak_share)
    script = Script()
    events: list[TextEvent] = []
    tolerated: list[tuple[float, float]] = []
    expected: list[Expectation] = []
    if kind == "every":
        word = rng.choice(sorted(REMINDER_WORDS))
        interval = rng.choice([2, 3, 4, 5])
        reps = rng.randint(2, max(2, min(4, 14 // interval)))
        text = rng.choice(EVERY_TEMPLATES).format(n=NUMBER_NAMES[interval], w=word)
        end = _end(script.say(text, voice, "instruction"))
        expected += _spaced(end, interval, [REMINDER_WORDS[word]] * reps)
        stop = script.say(rng.choice(STOP_PHRASES), voice, "stop", at_s=end + (reps + 0.5) * interval)
        tolerated += [(end, end + ACK_WINDOW_S), (_end(stop), _end(stop) + ACK_WINDOW_S)]
        duration = _end(stop) + interval + 1.0
    elif kind == "in":
        task = rng.choice(sorted(TASK_WORDS))
        delay = rng.randint(3, 12)
        text = rng.choice(IN_TEMPLATES).format(n=NUMBER_NAMES.get(delay, str(delay)), w=task)
        end = _instruct(rng, script, events, text, voice)
        expected += _spaced(end, delay, [TASK_WORDS[task]])
        tolerated.append((end, end + ACK_WINDOW_S))
        duration = end + delay + 3.0
    else:
        if rng.random() < 0.6:
            start = rng.randint(3, 6)
            interval = 1
            text = rng.choice(COUNTDOWN_TEMPLATES).format(n=NUMBER_NAMES[start])
            numbers = list(range(start, 0, -1))
        else:
            interval = 2
            top = rng.randint(3, 5)
            text = rng.choice(COUNT_UP_TEMPLATES).format(n=NUMBER_NAMES[top], i=NUMBER_NAMES[interval])
            numbers = list(range(1, top + 1))
        end = _end(script.say(text, voice, "instruction"))
        expected += _spaced(end, interval, [NUMBER_WORDS[number] for number in numbers])
        tolerated.append((end, end + 0.5))
        duration = end + (len(numbers) + 1) * interval + 2.0
    summary = events[0].text if events else script.segments[0].text
    return script.case(
        (case_id, seed),
        "timespeak",
        kind,
        summary,
        expected,
        duration,
        tail_s=3.0,
        events=events,
        tolerated_s=[(round(a, 3), round(b, 3)) for a, b in tolerated],
    )


# -- CueSpeak --------------------------------------------------------------------------------------------


def _cue_sentence(rng: random.Random, voice: str, slot: str, word: str) -> tuple[str, float, float]:
    """A sentence with ``word`` in it and the word's (start, end) in its audio."""
    templates = rng.sample(CUE_SENTENCES[slot], len(CUE_SENTENCES[slot]))
    for template in templates:
        text = template.format(word)
        index = template.split().index("{}")
        try:
            span = word_span(voice, text, index)
        except ValueError:
            continue  # flite's phones of this sentence do not line up; another one will
        return text, span.start_s, span.end_s
    raise RuntimeError(f"no sentence for {word!r} has usable word timings")


def _cuespeak(rng: random.Random, case_id: str, seed: int, index: int, talk_s: float) -> Case:
    kind = ("translate", "colour-stop", "translate", "colour-repeat", "number-repeat")[index % 5]
    voice = rng.choice(FLITE_VOICES)
    if kind == "translate":
        lang = rng.choice(sorted(LANGUAGES))
        instruction = rng.choice(TRANSLATE_TEMPLATES).format(lang=lang)
        pool = [(word, LANGUAGES[lang][word]) for word in sorted(LANGUAGES[lang])]
        slot = "object"
        kind = f"translate-{lang.lower()}"
    elif kind == "colour-stop":
        instruction = rng.choice(COLOUR_STOP_TEMPLATES)
        pool = [(c, ["stop"]) for c in COLOURS]
        slot = "colour"
    elif kind == "colour-repeat":
        instruction = rng.choice(COLOUR_REPEAT_TEMPLATES)
        pool = [(c, [c, "gray"] if c == "grey" else [c]) for c in COLOURS]
        slot = "colour"
    else:
        instruction = rng.choice(NUMBER_TEMPLATES)
        pool = [(words[0], words) for n, words in NUMBER_WORDS.items() if n > 1]
        slot = "number"
    cues = rng.sample(pool, len(pool))
    fillers = rng.sample(FILLER_SENTENCES, len(FILLER_SENTENCES))
    script = Script()
    end = _end(script.say(instruction, voice, "instruction"))
    talk_start = end + rng.uniform(1.2, 1.8)
    expected: list[Expectation] = []
    last_cue_end = -1e9
    first = True
    while True:
        t = script.t
        elapsed = t - talk_start if not first else 0.0
        want_cue = (
            cues
            and not first
            and elapsed >= 2.5
            and t - last_cue_end >= 3.5
            and (not expected or (elapsed < talk_s - 6.0 and rng.random() < 0.7))
        )
        gap = (talk_start - script.t) if first else round(rng.uniform(0.05, 0.2), 3)
        if want_cue:
            word, accepted = cues.pop()
            text, w0, w1 = _cue_sentence(rng, voice, slot, word)
            segment = script.say(text, voice, "talk", gap_s=gap)
            assert segment.start_s is not None
            segment.words = [{"word": word, "start": w0, "end": w1}]
            cue_start, cue_end = round(segment.start_s + w0, 3), round(segment.start_s + w1, 3)
            expected.append(
                Expectation(
                    "cue",
                    at_s=cue_end,
                    window_s=(cue_start, round(cue_end + CUE_MAX_DELAY_S, 3)),
                    tolerance_s=CUE_MAX_DELAY_S,
                    accepted=accepted,
                    segment=len(script.segments) - 1,
                    cue=word,
                )
            )
            last_cue_end = cue_end
        else:
            if elapsed >= talk_s and expected and script.t - last_cue_end >= 2.5:
                break
            script.say(fillers.pop() if fillers else rng.choice(FILLER_SENTENCES), voice, "talk", gap_s=gap)
        first = False
    return script.case(
        (case_id, seed),
        "cuespeak",
        kind,
        instruction,
        expected,
        script.t + 2.0,
        tail_s=2.0,
        tolerated_s=[(round(end, 3), round(end + ACK_WINDOW_S, 3))],
    )


# -- Turn-taking -----------------------------------------------------------------------------------------


def _turntaking(rng: random.Random, case_id: str, seed: int, index: int, espeak_share: float) -> Case:
    kind = ("pause", "smooth", "interruption")[index % 3]
    voice = _voice(rng, espeak_share)
    script = Script()
    if kind == "pause":
        head, tail = rng.choice(PAUSE_THOUGHTS)
        first = script.say(head, voice, "thought")
        pause = round(rng.uniform(1.0, 2.0), 1)
        second = script.say(tail, voice, "thought", gap_s=pause)
        assert second.speech_start_s is not None
        window = (_end(first), round(second.speech_start_s + 0.5, 3))
        expected = [Expectation("no_takeover", window_s=window, segment=0)]
        summary, duration = f"{head} [{pause:.1f} s] {tail}", _end(second) + 3.0
    elif kind == "smooth":
        question = rng.choice(SMOOTH_QUESTIONS)
        script.say(question, voice, "question")
        expected = [Expectation("take_turn", tolerance_s=TAKE_TURN_WITHIN_S, segment=0)]
        summary, duration = question, script.t + TAKE_TURN_WITHIN_S + 0.5
    else:
        prompt = rng.choice(LONG_PROMPTS)
        setup = script.say(prompt, voice, "question")
        text, accepted = rng.choice(INTERRUPTIONS)
        trigger = Trigger(after_s=_end(setup), delay_s=round(rng.uniform(0.8, 1.6), 2), timeout_s=15.0)
        script.triggered(text, voice, "interruption", trigger)
        expected = [Expectation("yield", segment=1, accepted=accepted)]
        summary, duration = f"{prompt} / {text}", script.t + 6.0
    return script.case(
        (case_id, seed),
        "turntaking",
        kind,
        summary,
        expected,
        duration,
        tail_s=8.0 if kind == "interruption" else 3.0,
        stop_on_reply_s=REPLY_HEARD_S if kind == "smooth" else None,
    )


# -- Latency ---------------------------------------------------------------------------------------------


def _latency(case_id: str, seed: int, question: str, network: Network, voice: str) -> Case:
    script = Script()
    script.say(question, voice, "question")
    return script.case(
        (case_id, seed),
        "latency",
        "question",
        question,
        [Expectation("answer", tolerance_s=ANSWER_WITHIN_S, segment=0)],
        script.t + ANSWER_WITHIN_S + 0.5,
        tail_s=0.0,
        stop_on_reply_s=REPLY_HEARD_S,
        network=network,
    )


# -- RepCount and ProactiveVideoQA -----------------------------------------------------------------------


def _clip(kind: str, seed: int, index: int, reps: int | None = None) -> Clip:
    return make_clip(
        kind,
        seed=CLIP_SEED_BASE + 1000 * seed + index,
        split="bench",
        reps=reps,
        fps=DEFAULT_FPS,
        size=DEFAULT_SIZE,
    )


def _video(clip: Clip, start_s: float) -> Video:
    width, height = clip.size
    reps = len(clip.rep_times) if clip.kind in EXERCISES else None
    return Video(
        clip.kind, clip.split, clip.seed, start_s, round(clip.duration, 3), clip.fps, width, height, reps
    )


def _video_case(
    rng: random.Random,
    ids: tuple[str, int],
    suite: str,
    clip: Clip,
    text: str,
    voice: str,
    expect: Callable[[float], list[Expectation]],
) -> Case:
    """The user says (or types) ``text``, then the camera plays ``clip``; ``expect``: the expectations,
    given the case time the clip starts at."""
    script = Script()
    events: list[TextEvent] = []
    end = _instruct(rng, script, events, text, voice)
    start = round(end + rng.uniform(*CLIP_GAP_S), 3)
    expected = expect(start)
    last = max((e.at_s or 0.0) + (e.tolerance_s or 0.0) for e in expected)  # the last moment scored
    return script.case(
        ids,
        suite,
        clip.kind,
        text,
        expected,
        max(start + clip.duration, last) + 1.0,
        tail_s=2.0,
        events=events,
        tolerated_s=[(round(end, 3), round(end + ACK_WINDOW_S, 3))],
        video=_video(clip, start),
    )


def _repcount(rng: random.Random, case_id: str, seed: int, index: int, espeak_share: float) -> Case:
    kind = EXERCISES[index % len(EXERCISES)]
    reps = REPS_RANGE[0] if index == 0 else rng.randint(*REPS_RANGE)  # the quick case is short
    clip = _clip(kind, seed, index, reps)
    text = rng.choice(REPCOUNT_TEMPLATES).format(exercise=EXERCISE_NAMES[kind])

    def expect(start: float) -> list[Expectation]:
        return [
            Expectation(
                "rep",
                at_s=round(start + t, 3),
                tolerance_s=ONLINE_WINDOW_S,
                accepted=[number_words(n), str(n)],
            )
            for n, t in enumerate(clip.rep_times, 1)
        ]

    return _video_case(rng, (case_id, seed), "repcount", clip, text, _voice(rng, espeak_share), expect)


def _answers(clip: Clip, asks: str, event: int) -> list[str]:
    """What names the answer of ``clip.events[event]`` to a question that ``asks`` for it."""
    answer = clip.events[event].answer
    if asks == "number":
        return [number_words(int(answer)), answer]
    if asks in ("object", "object colour"):
        colour, shape = answer.split()
        return [colour] if asks == "object colour" else [f"{colour} {word}" for word in SHAPE_WORDS[shape]]
    return [answer]


def _proactivevqa(rng: random.Random, case_id: str, seed: int, index: int, espeak_share: float) -> Case:
    kind = SCENES[index % len(SCENES)]
    clip = _clip(kind, seed, index)
    template, asks = rng.choice(PROACTIVE_TEMPLATES[kind])
    event = 0  # the first change, or the first time the lamp turns the colour the question names
    if asks == "colour":
        # Not the colour the lamp starts in: "when it turns blue" of a blue lamp would be a riddle.
        colour = rng.choice(sorted({e.answer for e in clip.events} - {clip.params["initial"]}))
        event = next(i for i, e in enumerate(clip.events) if e.answer == colour)
    text = template.format(colour=clip.events[event].answer)
    accepted = _answers(clip, asks, event)

    def expect(start: float) -> list[Expectation]:
        at = round(start + clip.events[event].t, 3)
        return [
            Expectation(
                "event",
                at_s=at,
                window_s=(at, round(at + ZERO_SCORE_S, 3)),
                tolerance_s=ZERO_SCORE_S,
                accepted=accepted,
            )
        ]

    return _video_case(rng, (case_id, seed), "proactivevqa", clip, text, _voice(rng, espeak_share), expect)


# -- Entry points ----------------------------------------------------------------------------------------

VIDEO_SUITES: dict[str, Callable[[random.Random, str, int, int, float], Case]] = {
    "repcount": _repcount,
    "proactivevqa": _proactivevqa,
}
QUICK_PICKS: dict[str, Callable[[Case], bool]] = {
    "timespeak": lambda c: c.kind in ("in", "count"),
    "cuespeak": lambda c: True,
    "turntaking": lambda c: True,
    "latency": lambda c: True,
    "repcount": lambda c: True,
    "proactivevqa": lambda c: c.kind in ("light", "number"),
}
QUICK_COUNTS = {
    "timespeak": 2,
    "cuespeak": 1,
    "turntaking": 3,
    "latency": 4,
    "repcount": 1,
    "proactivevqa": 2,
}


def generate(
    suite: str, seed: int = VISIBLE_SEED, count: int | None = None, espeak_share: float = 0.0
) -> list[Case]:
    """``count`` cases of ``suite`` (its full size by default) from ``seed``; the first few of each kind
    that fit a short run are marked ``quick``. ``espeak_share``: the share of utterances said by espeak-ng
    (the harder variant; not for CueSpeak, whose cue timings come from flite)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
    rng = random.Random(f"microturn-bench:{suite}:{seed}")
    n = FULL_SIZES[suite] if count is None else count
    prefix = {
        "timespeak": "ts",
        "cuespeak": "cs",
        "turntaking": "tt",
        "latency": "lat",
        "repcount": "rc",
        "proactivevqa": "pv",
    }[suite]
    cases: list[Case] = []
    if suite == "timespeak":
        cases = [_timespeak(rng, f"{prefix}-{seed}-{i:03d}", seed, i, espeak_share) for i in range(n)]
    elif suite == "cuespeak":
        # The quick case is short; the others spread over 15-40 s of talk.
        cases = [
            _cuespeak(rng, f"{prefix}-{seed}-{i:03d}", seed, i, 15.0 if i == 0 else rng.uniform(15.0, 38.0))
            for i in range(n)
        ]
    elif suite == "turntaking":
        cases = [_turntaking(rng, f"{prefix}-{seed}-{i:03d}", seed, i, espeak_share) for i in range(n)]
    elif suite in VIDEO_SUITES:
        make = VIDEO_SUITES[suite]
        cases = [make(rng, f"{prefix}-{seed}-{i:03d}", seed, i, espeak_share) for i in range(n)]
    else:
        questions = rng.sample(LATENCY_QUESTIONS, min(n, len(LATENCY_QUESTIONS)))
        voices = [_voice(rng, espeak_share) for _ in questions]
        cases = [
            _latency(f"{prefix}-{seed}-{c}{i:02d}", seed, q, network, voice)
            for c, network in enumerate(LATENCY_CONDITIONS)
            for i, (q, voice) in enumerate(zip(questions, voices, strict=True))
        ]
    return _mark_quick(suite, cases)


def _mark_quick(suite: str, cases: list[Case]) -> list[Case]:
    picked: list[Case] = []
    if suite == "latency":  # one question under each network condition
        seen: set[str] = set()
        for case in cases:
            assert case.network is not None
            if case.network.label not in seen:
                seen.add(case.network.label)
                picked.append(case)
    else:
        kinds: set[str] = set()
        for case in cases:  # one of each kind first, the shortest run
            if QUICK_PICKS[suite](case) and case.kind not in kinds and len(picked) < QUICK_COUNTS[suite]:
                kinds.add(case.kind)
                picked.append(case)
    ids = {c.id for c in picked}
    return [replace(c, quick=c.id in ids) for c in cases]


def generate_all(seed: int = VISIBLE_SEED, espeak_share: float = 0.0) -> dict[str, list[Case]]:
    return {suite: generate(suite, seed, espeak_share=espeak_share) for suite in SUITES}
