"""The scenario generator: synthetic, time-aligned sessions to train the interaction model on.

A scenario is one session written as :class:`model.ticks.Tick` s -- one per 200 ms micro-turn -- with what
the runtime's encoders would report (speech activity, committed words with their lexicon annotations,
typed text, background results, the agent's own playback) and what the model should do. ``generate(seed,
count)`` is deterministic: the same seed and count give the same scenarios, on any machine;
``generate_labelled(seed, count)`` gives the same scenarios with what asked for each ``<say>`` target
(:data:`SayKinds`), for validation to report each kind apart.

**What is in it.** Sessions of 30-120 s mixing

- TimeSpeak: periodic reminders ("every four seconds say breathe", until "stop" or N times), delayed
  one-shots ("in ten seconds say stand up"), count-downs and count-ups, spoken or typed; periods and
  delays of 1-30 s, each whole number as likely (data version 3: the network must read N), in many word
  orders ("remind me every six seconds to stretch", "blink, every nine seconds", "say hello after twelve
  seconds");
- CueSpeak: an instruction ("whenever i use a spanish word tell me what it means in english", "if i name
  an animal say bingo", "when i say pizza you say yes") then a monologue with cue words inside, answered
  while the user keeps talking; foreign words carry ``<means>``, category words ``<cat:...>``;
- turn-taking: questions and requests (``<answer>`` at the end of the turn), statements (``<answer>`` only
  after a longer silence, never while a cue rule runs), pauses inside a thought after a filler or
  unfinished syntax (``<wait>``), barge-in (``<stop>`` in the first micro-turn the user talks over a
  reply), backchannels (``<stop>``, then ``<answer>`` resumes the reply);
- background work: tool questions (arithmetic, time and date, timers, documents -- what
  :func:`model.background.route` sends to a tool) get ``<ask>``; their results arrive later inside
  ``<result> ... </result>`` and are said with ``<news>`` at a fitting moment (the agent silent, the
  user silent for 0.6 s and not in the middle of a thought);
- idle stretches, where the right action is ``<wait>``;
- video (about one session in seven has a camera; data version 2): RepCount ("count my squats": the agent
  says each ``<rep>`` count in the micro-turn it is seen, also while the user talks, until "stop
  counting"), watching ("let me know when the light goes green", "say go as soon as you see a red
  square", "read me the number on the card whenever it changes": the matching ``<see:...>`` event is
  answered with its value or the asked word, the others get silence), repetitions and scene changes
  nobody asked about (silence), questions about what the camera shows (``<answer>``: the LLM reads the
  camera lines of the conversation), and the camera dropping out (``<video:off>`` / ``<video:on>``).

**Recogniser-like noise**, modelled on what model/listening.py produces on flite speech: words committed
one to four micro-turns after they end (the partial hypothesis must grow two more words, or the user fall
silent), substitutions, drops and insertions, missed foreign words, speech-activity flicker; one session in
four has a hard voice, up to 3.5 times the noise (data version 3, see :data:`P_HARD_VOICE`). Targets follow
what the model can see: a cue word the recogniser missed has no answer.

**The agent's own voice.** ``<agent>`` follows from the targets: a ``<say>`` plays for
:func:`say_seconds` (flite slt's duration, fitted), a reply (``<answer>``, ``<news>``) starts after the
LLM's latency and plays for a few seconds, ``<stop>`` ends it in the next micro-turn.

**What the camera's features report** (:meth:`_Session.video_events`, modelled on the measurements of
model/video/features.py in docs/vision.md): an event reaches the model 0.1-0.4 s after it happens (now and
then up to 0.7 s), a repetition or an event is missed now and then, the first movement of a set sometimes
looks like a colour change or an appearance, a person in a scene sometimes makes a repetition; nothing is
seen while the camera is off or for a second after it is back; a count restarts at one after
:data:`model.ticks.REP_RESTART_S` without a repetition, as the runtime counts.

**Benchmarks stay unseen.** Only :data:`model.lexicon.TRAIN_ENTRIES` (:data:`CUE_ENTRIES`) and the
training category words are used, no benchmark cue word appears anywhere (not even as a meaning), and
:data:`BENCH_PHRASINGS` lists instruction phrasings reserved for benchmark cases: no template here renders
to one of them (tests/test_scenarios.py checks both).

**Timing of spoken targets** (:func:`schedule_targets`, :func:`say_tick`): the first reminder of "every N
seconds" is due N seconds after the instruction ends (the end of its speech, or the end of the micro-turn
its typed text arrived in), then every N seconds; "in N seconds" once, N seconds after; counting says the
first number one period after. A target at T seconds is said in the micro-turn whose output is heard
closest to T: the audio released at the end of micro-turn k reaches the listener :data:`SAY_LEAD_S` later.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

from model.lexicon import (
    BENCH_WORDS,
    TRAIN_CATEGORY_WORDS,
    TRAIN_ENTRIES,
    Entry,
    Lexicon,
    english_words,
    number_words,
    split_words,
    spoken_words,
)
from model.ticks import (
    MAX_SAY_WORDS,
    REP,
    REP_RESTART_S,
    RESULT,
    RESULT_END,
    SEE_KINDS,
    TYPED,
    TYPED_END,
    VIDEO_OFF,
    VIDEO_ON,
    Act,
    Scenario,
    Tick,
    TickInput,
    TickOutput,
    see_token,
)
from model.video.features import STALE_S, WARMUP_S
from model.video.palette import NAMED_COLOURS
from model.video.synthetic import MAX_REP_S, MIN_REP_S, SHAPES

DATA_VERSION = 3  # bump when what generate() produces for a seed changes

# What asked for each <say> target, by micro-turn (generate_labelled()): a label outside the token
# contract, for validation to report TimeSpeak apart from CueSpeak. TimeSpeak: "periodic", "times",
# "one_shot", "count", each with "_typed" when the instruction was typed; "cue" (a CueSpeak rule), "rep"
# (a repetition counted), "watch" (something seen that was asked about).
SayKinds = dict[int, str]
TIME_KINDS = ("periodic", "times", "one_shot", "count")

TICK_S = 0.2  # one micro-turn
SPEECH_MIN_S = 0.06  # speech in a micro-turn that sets <user> (model/listening.py SPEECH_MIN_MS)
SAY_LEAD_S = 0.2  # from the end of a micro-turn to its audio being heard: step, transport, jitter buffer
MIN_SECONDS, MAX_SECONDS = 30.0, 120.0  # length of a scenario
MAX_PERIOD_S = 30  # "every N seconds" and "in N seconds": N from 1 to this, each as likely
MAX_RESULT_WORDS = 8  # words of a background result shown to the model: it needs to know news came, not all

# The agent's voice (flite slt, model/tts.py), least squares on 120 random phrases of 1-4 words of the
# English list (mean absolute error 0.11 s, worst 0.4 s), see say_seconds().
SAY_BASE_S = 0.32  # s per utterance: phrase-final lengthening and flite's closing silence
SAY_PER_WORD_S = 0.02  # s per word
SAY_PER_LETTER_S = 0.065  # s per letter
# A reply the LLM writes: its first phrase is ready after this many micro-turns, and it plays this long.
REPLY_LATENCY_TICKS = (2, 6)
REPLY_SECONDS = (1.5, 8.0)
NEWS_LATENCY_TICKS = (1, 2)  # a background result is synthesised, not generated
NEWS_SECONDS = 2.2  # how long one result phrase plays
# When a statement (not a question) gets a reply: after this much silence, and never while a cue rule runs.
STATEMENT_SILENCE_TICKS = 7
# A thought left unfinished ("so i was thinking um") gets a reply after this much silence.
ABANDONED_SILENCE_TICKS = 18
FITTING_SILENCE_TICKS = 3  # silence before background news is said

# The user's voices (flite slt/rms/awb/kal at different rates): seconds per word and per letter, as the
# agent's voice inside a phrase.
USER_WORD_BASE_S = 0.03
USER_PER_LETTER_S = 0.06
USER_RATE = (0.8, 1.25)  # slower or faster speakers

# Recogniser noise per word (measured on flite speech, see model/listening.py: 16 % of words substituted,
# ~1 % dropped, ~1 % inserted; kept lower here, as most substitutions hit short function words).
P_SUBSTITUTE = 0.08
P_DROP = 0.02
P_INSERT = 0.02
# Some voices are much harder: pocketsphinx (tuned, quiet room, docs/benchmarks.md) gets 88 % of flite slt's
# words right, 94 % of rms's, 89 % of awb's, 61 % of kal's (8 kHz, like a telephone). The rates above make
# ~12 % word errors, like slt; kal's ~39 % is about 3.3 times that. One session in four (one benchmark
# voice in four is that hard) has its rates multiplied by a factor drawn from HARD_VOICE_SCALE: 18-42 %
# word errors, up to a kal-like voice.
P_HARD_VOICE = 0.25
HARD_VOICE_SCALE = (1.5, 3.5)
# Instruction key words (numbers, the words to say) are garbled at this fraction of the session's rates:
# ~1 % a word on a clear voice, up to ~4 % on the hardest. Not zero, so that the network meets a misheard
# number now and then; low, because the targets follow what was said (the schedule of a misheard "ten"
# is still ten seconds), and those targets teach the network to guess.
P_KEY_NOISE = 0.1
P_FOREIGN_MISSED = 0.15  # foreign words the taught recogniser misses (40 of 45 heard in a flite monologue)
P_FALSE_FOREIGN = 0.06  # of substitutions, a foreign word
P_FLAG_DROP = 0.01  # a speech micro-turn reported silent
P_FLAG_BLIP = 0.003  # a silent micro-turn reported as speech (breath, a knock)
# Micro-turns from a word's end to its commit (model/listening.py on flite speech: 2 % 0, 18 % 1,
# 51 % 2, 25 % 3, 4 % 4+), used when the user falls silent right after it; otherwise a word waits for
# two more words in the partial hypothesis.
COMMIT_JITTER_S = (0.05, 0.3)

# The camera (docs/vision.md, "Measured"): from an event on camera to the end of the micro-turn whose
# features carry it, 0.1-0.4 s (median ~0.22, p95 ~0.37 s); a few later.
SEEN_DELAY_S = (0.1, 0.4)
P_SEEN_LATE = 0.05
SEEN_LATE_S = (0.4, 0.7)
P_REP_MISSED = 0.02  # 98 % of the counts were in time on held-out clips; a miss shifts the later counts
P_EVENT_MISSED = 0.02  # 1 of 71 held-out scene events was late or missed
P_SET_FALSE_SIGHT = 0.4  # a colour/appear event at the first movement of a set (~0.5 per squat clip)
P_SCENE_FALSE_REP = 0.1  # a repetition counted in a scene (the person standing by, a distractor)
P_CAMERA_GAP = 0.15  # per counting or watching stretch: the camera drops out for a while
CAMERA_GAP_S = (2.0, 8.0)
P_DARK_GAP = 0.3  # ... as a black picture (told at once) rather than no frames (told after STALE_S)
REP_BASE_PERIOD_S = (0.9, 2.6)  # as model/video/synthetic.py: a base period drifting +-35 %, +-6 % jitter
REP_DRIFT = 0.35
REP_JITTER = 0.06
SET_PAUSE_S = (1.5, 4.0)  # between the sets of one exercise
P_LONG_REST = 0.2  # ... or a rest long enough that the count starts again at one
RECENT_SIGHT_TICKS = 75  # "which number is on the card" is answered at once if it was read this recently


# ----------------------------------------------------------------------------------------------------
# Phrasings. Slots: {n} a number, {w} words to say, {k} a count, {p} a period, {lang} a language,
# {cat} a category name, {x} a word to say, {y} a cue word. Everything else is a template word.

PERIODIC = (
    "every {p} say {w}",
    "say {w} every {p}",
    "every {p} please say {w}",
    "please say {w} every {p}",
    "say {w} every {p} until i tell you to stop",
    "every {p} say {w} until i tell you to stop",
    "every {p} say the word {w}",
    "can you say {w} every {p}",
    "could you say {w} every {p} please",
    "i want you to say {w} every {p}",
    "keep saying {w} every {p}",
    "every {p} tell me {w}",
    "remind me to {w} every {p}",
    "every {p} remind me to {w}",
    "say {w} once every {p}",
    "start saying {w} every {p}",
    # Other word orders for the same instruction: the benchmarks' wordings are held out, not their variety.
    "remind me every {p} to {w}",
    "every {p} i want you to say {w}",
    "{w} every {p}",
    "{w}, every {p}",
    "every {p} just say {w}",
    "every {p} tell me to {w}",
    "keep reminding me to {w} every {p}",
    "i need you to say {w} every {p}",
    "every {p} you say {w}",
    "say {w} every {p} and keep going",
    "would you say {w} every {p}",
    "every {p} could you tell me {w}",
    "tell me {w} every {p} please",
)
TIMES = (
    "say {w} {k} times every {p}",
    "say {w} {k} times with {p} in between",
    "every {p} say {w} {k} times",
    "please say {w} {k} times one every {p}",
    "remind me to {w} {k} times every {p}",
    "say {w} every {p} {k} times",
    "every {p} tell me {w} until you've said it {k} times",
)
ONE_SHOT = (
    "in {p} say {w}",
    "say {w} in {p}",
    "after {p} say {w}",
    "wait {p} and then say {w}",
    "in {p} remind me to {w}",
    "remind me to {w} in {p}",
    "{p} from now say {w}",
    "in {p} from now tell me {w}",
    "please say {w} in {p}",
    # More ways to give a delay (the v1 checkpoint said none of its validation one-shots).
    "say {w} after {p}",
    "{p} from now remind me to {w}",
    "say {w} {p} from now",
    "wait {p} then say {w}",
    "in {p} just say {w}",
    "after {p} remind me to {w}",
    "in exactly {p} say {w}",
    "once {p} have passed say {w}",
    "let {p} pass and then say {w}",
    "in {p} tell me {w}",
    "remind me after {p} to {w}",
    "{w} in {p}",
)
COUNT_DOWN = (
    "count down from {n}",
    "count down from {n} please",
    "count backwards from {n}",
    "count down from {n} one number every {p}",
    "please count down from {n} one every {p}",
    "can you count down from {n}",
    "count down from {n} with one number every {p}",
    "count down from {n} to one",
    "start counting down from {n}",
    "do a countdown from {n} one every {p}",
)
COUNT_UP = (
    "count to {n}",
    "count from one to {n}",
    "count up to {n} one number every {p}",
    "please count to {n}",
    "can you count to {n} one every {p}",
    "count slowly to {n} one number every {p}",
    "count up to {n}",
    "start counting to {n}",
    "count from one to {n} one every {p}",
)
STOP = (
    "stop",
    "okay stop",
    "please stop",
    "stop now",
    "you can stop now",
    "that's enough",
    "okay that's enough",
    "stop it",
    "alright you can stop",
    "stop saying that",
    "thanks you can stop",
    "stop please",
)
FOREIGN_RULE = (
    "whenever i use a {lang} word tell me what it means in english",
    "translate every {lang} word i say",
    "if i say a word in {lang} say it in english",
    "when i say something in {lang} give me the english",
    "tell me the english for any {lang} word i use",
    "whenever you hear a {lang} word say the english word",
    "please translate any {lang} words i use",
    "each time you hear {lang} tell me the english",
)
CATEGORY_SAY_RULE = (
    "whenever i mention a {cat} say {x}",
    "every time i say a {cat} say {x}",
    "if i name a {cat} say {x}",
    "say {x} every time you hear a {cat}",
    "when you hear me say a {cat} say {x}",
    "whenever you hear a {cat} just say {x}",
    "if i mention any {cat} please say {x}",
)
CATEGORY_REPEAT_RULE = (
    "whenever i mention a {cat} repeat it",
    "every time i name a {cat} say it back",
    "repeat every {cat} i say",
    "if i say a {cat} repeat the word",
    "say back any {cat} i mention",
)
WORD_RULE = (
    "say {x} whenever i say {y}",
    "when i say {y} you say {x}",
    "every time you hear {y} say {x}",
    "if i say the word {y} say {x}",
    "whenever you hear the word {y} say {x}",
)
# The camera. Slots: {e} an exercise, {c} a colour, {s} a shape, {x} a word to say.
REP_COUNT = (
    "count my {e}",
    "count my {e} out loud",
    "please count my {e}",
    "count my reps out loud",
    "keep count of my {e}",
    "count the {e} i do",
    "count my {e} as i do them",
    "i'm doing {e} count them for me",
    "watch me do {e} and count them",
    "could you count my {e} out loud",
)
REP_STOP = (
    "stop counting",
    "you can stop counting",
    "okay stop counting now",
    "that's enough counting",
    "stop counting please",
    "i'm done you can stop",
)
# Watching for a colour: with {c} only that colour is answered; {x}: the word to say (else the colour).
WATCH_COLOUR = (
    "let me know when the light goes {c}",
    "say {x} when the lamp turns {c}",
    "as soon as the light is {c} tell me",
    "watch the light and tell me when it's {c}",
    "tell me the color whenever the light changes",
    "say the new color each time the light changes",
    "let me know what color the light turns",
)
# Watching for something to appear: {c} and {s} narrow it down; {x}: the word to say (else what it is).
WATCH_APPEAR = (
    "say {x} as soon as you see a {c} {s}",
    "let me know when a {c} {s} shows up",
    "tell me if you see a {c} {s}",
    "say {x} when a {s} shows up",
    "say {x} when something new shows up",
    "tell me what shows up on the screen",
    "let me know if anything pops up",
)
WATCH_NUMBER = (
    "read me the number on the card whenever it changes",
    "tell me each new number on the card",
    "let me know when the card shows a new number",
    "keep reading the numbers on the card",
)
NUMBER_QUESTION = (
    "which number is on the card",
    "what does the card say",
    "read me the card",
)  # answered once
# Questions about what the camera shows: the LLM answers from the camera lines of the conversation.
VIDEO_QUESTIONS = (
    "how many have i done",
    "what color is the light now",
    "can you see me",
    "what do you see",
    "how many was that",
    "is the camera working",
    "what did the card show",
    "can you still see me",
)
# What the user says while exercising or watching (no reply: a rule runs).
VIDEO_CHATTER = (
    "this is getting hard",
    "okay here we go",
    "i can do a few more",
    "my arms are tired",
    "almost there",
    "just a couple more",
    "let's keep going",
    "okay watching now",
)
EXERCISE_NAMES = (
    "push ups", "squats", "jumping jacks", "sit ups", "lunges", "burpees", "pull ups", "curls", "repetitions",
)  # fmt: skip
# Every camera phrasing generate() renders, for checks against benchmark phrasings (tests, bench/).
VIDEO_TRAIN_PHRASINGS: tuple[str, ...] = (
    *REP_COUNT, *REP_STOP, *WATCH_COLOUR, *WATCH_APPEAR, *WATCH_NUMBER, *NUMBER_QUESTION, *VIDEO_QUESTIONS,
)  # fmt: skip

# Instruction phrasings reserved for benchmark cases: generate() never renders one. Same slots.
BENCH_PHRASINGS: dict[str, tuple[str, ...]] = {
    "periodic": (
        "every {p} say {w} until i say stop",
        "repeat {w} every {p}",
        "say {w} to me every {p}",
    ),
    "times": ("say {w} {k} times once every {p}",),
    "one_shot": (
        "in {p} tell me to {w}",
        "tell me to {w} in {p}",
    ),
    "count_down": ("count down from {n} one number a second",),
    "count_up": ("count up to {n} one number a second",),
    "stop": ("alright stop now",),
    "foreign": (
        "every time i say a {lang} word give me the english word",
        "give me the english word whenever i say a {lang} word",
    ),
    "category_say": (
        "say {x} when i mention a {cat}",
        "when i mention a {cat} say {x}",
    ),
    "category_repeat": ("when i mention a {cat} repeat it",),
    "word": ("each time i say {y} say {x}",),
    # The camera (RepCount and ProactiveVideoQA, /work/shared/BENCHMARKS.md).
    "rep_count": ("count my reps", "count my {e} for me", "can you count my reps"),
    "rep_stop": ("alright stop counting",),
    "watch_colour": (
        "tell me when the light turns {c}",
        "say {x} when the light turns {c}",
        "tell me what color the light changes to",
    ),
    "watch_appear": ("say now when a {c} {s} appears", "tell me when something appears"),
    "watch_number": ("say the number on the card when it changes", "tell me when the number changes"),
    "number_question": ("what number is on the card",),
}

LANGUAGE_NAMES = {"spanish": "spanish", "french": "french"}
# Category names as the recogniser spells them (US spelling: pocketsphinx's LM has "color").
CATEGORY_NAMES: dict[str, tuple[str, ...]] = {
    "colour": ("color",),
    "number": ("number",),
    "animal": ("animal",),
    "fruit": ("fruit", "kind of fruit"),
    "day": ("day of the week", "weekday"),
    "body": ("body part", "part of the body"),
    "weather": ("weather word", "kind of weather"),
}

QUESTIONS = (
    "what is the {n} of {n}",
    "what do you know about {n}",
    "how do i {v} a {n}",
    "why is the {n} so {a}",
    "can you tell me about {n}",
    "do you know any good {n}",
    "where can i find a {a} {n}",
    "who invented the {n}",
    "what's your favorite {n}",
    "is it {a} to {v} the {n}",
    "could you explain how a {n} works",
    "tell me a story about a {n}",
    "give me some ideas for {n}",
    "what should i {v} for {n}",
    "how long does it take to {v} a {n}",
    "which {n} is the most {a}",
    "can you help me {v} my {n}",
    "do you think the {n} is {a}",
    "what does {x} mean",
    "how do you spell {x}",
    "what would you do with a {n}",
    "should i {v} the {n} or the {n}",
    "are {n} {a}",
    "what happens if you {v} a {n}",
    "tell me something about {x}",
    "can you recommend a {a} {n}",
    "how many {n} are there in a {n}",
    "what is the best way to {v} {n}",
    "why do people {v} {n}",
    "is there a {a} way to {v} the {n}",
)
STATEMENTS = (
    "i {v} the {n} yesterday",
    "my {n} is really {a}",
    "we went to the {n} last week",
    "i think {n} is {a}",
    "i just got back from the {n}",
    "my {n} wants to {v} a {n}",
    "the {n} was {a} today",
    "i really like {n}",
    "i have been trying to {v} my {n}",
    "we had {n} for dinner",
    "it was a {a} day",
    "i am not sure about the {n}",
    "my friend told me about the {n}",
    "that sounds {a}",
    "i need a new {n}",
)
# Unfinished thoughts: the user pauses after these and goes on (a filler may follow).
INCOMPLETE = (
    "so i was thinking about",
    "i want to {v} the",
    "can you tell me about the",
    "what do you think about",
    "my {n} is",
    "i went to the {n} and",
    "the thing is",
    "i was wondering if",
    "we could {v} the {n} but",
    "so yesterday i",
    "i need to {v} a {n} because",
    "do you know if the",
    "what if we",
    "i think that",
    "the problem with {n} is that",
    "and then my {n}",
    "it's like",
    "i'm trying to",
    "how do i",
    "let me think about",
)
FILLERS = ("um", "uh", "hmm", "so", "well", "like", "you know", "i mean", "um so", "uh well")
CONTINUATIONS = (
    "the {n}",
    "{v} a {n}",
    "my {n} and the {n}",
    "whether the {n} is {a}",
    "a {a} {n}",
    "{n} i guess",
    "going to the {n}",
)
BACKCHANNELS = ("uh huh", "yeah", "mm hmm", "okay", "right", "i see", "yes", "sure", "wow", "really")
# Tool questions: what model.background.route() sends to a tool (tests check every rendering routes).
ASK_ARITHMETIC = (
    "what is {a} times {b}",
    "what's {a} plus {b}",
    "how much is {a} minus {b}",
    "what is {a} divided by {b}",
    "calculate {a} times {b}",
    "what is {a} plus {b}",
    "how much is {a} times {b}",
)
ASK_CLOCK = (
    "what time is it",
    "what's the time",
    "what time is it in {city}",
    "what day is it today",
    "what's the date today",
    "tell me the time",
    "what is the current time",
)
ASK_TIMER = (
    "set a timer for {t}",
    "start a timer for {t}",
    "please set a timer for {t}",
    "set a {t} timer",
)
ASK_DOCS = (
    "what do the docs say about {n}",
    "search the documents for {n}",
    "according to my notes when is the {n}",
    "look up {n} in the manual",
    "what does the documentation say about the {n}",
)
CITIES = ("tokyo", "london", "paris", "new york", "berlin", "sydney", "chicago", "madrid", "rome", "toronto")
# Monologue sentences: {c} is where a cue word (or a distractor) goes.
MONOLOGUE = (
    "so yesterday i went to the market and bought a {c} for my sister",
    "then we talked about the {c} for a long time",
    "my neighbour says the {c} is the best thing in town",
    "honestly i think the {c} was a little too expensive",
    "and after that we had dinner with the {c}",
    "i keep thinking about that {c} we saw",
    "there was a {c} right in the middle of the road",
    "my grandmother always had a {c} in her kitchen",
    "we looked everywhere for the {c} but it was gone",
    "last summer i saw a {c} near the lake",
    "she told me the {c} reminded her of home",
    "i never understood why people like the {c} so much",
    "anyway the {c} was the first thing i noticed",
    "we painted the {c} on the wall",
    "my brother wants a {c} for his birthday",
    "it was {c} and we stayed inside",
    "i found an old {c} in the attic",
    "the kids drew a {c} at school today",
    "do you remember the {c} from last year",
    "we should get a {c} for the garden",
)
PLAIN_SENTENCES = (
    "we walked along the river for an hour",
    "the meeting went on for much longer than anyone expected",
    "i forgot my umbrella so i got completely soaked",
    "my neighbour has a huge collection of old records",
    "the train was late again this morning",
    "we spent the whole afternoon cleaning the house",
    "she plays the piano every evening after dinner",
    "i have no idea where i left my keys",
    "the printer at work has been broken for a week",
    "they moved to a small village near the coast",
    "the coffee in that place is really good",
    "i need to call the dentist tomorrow",
    "we watched a documentary about the history of the city",
    "the kids were playing outside until it got dark",
)

# Hand lists for grammatical slots; half the time a random word of the English list fills a slot instead,
# so that the network learns to handle words it has never seen.
NOUNS = tuple(
    split_words(
        "book car house garden kitchen phone computer movie song game party trip job school teacher "
        "doctor friend family city country river mountain beach forest island bridge road train plane "
        "boat bike coffee tea bread cake pizza soup salad dinner lunch breakfast music guitar piano "
        "picture camera letter window door table chair bed shirt jacket shoe bag box bottle cup plate "
        "clock map ticket museum library market shop office meeting project plan idea story question "
        "problem answer weekend holiday birthday present garden neighbour brother sister mother "
        "father baby kid team class lesson recipe computer program website email message battery "
        "engine wheel bottle candle blanket pillow"
    )
)
VERBS = tuple(
    split_words(
        "make fix cook clean paint build write read find buy sell learn teach watch play open close "
        "move carry wash plant grow bake start finish change check call visit choose order repair "
        "draw sing practice organize plan pack borrow return share"
    )
)
ADJECTIVES = tuple(
    split_words(
        "good bad big small old new fast slow easy hard cheap expensive quiet loud warm cold bright "
        "dark strange simple heavy light healthy famous popular dangerous safe useful funny boring "
        "beautiful interesting important difficult"
    )
)


def _template_words(templates: Sequence[str]) -> set[str]:
    words: set[str] = set()
    for template in templates:
        words.update(w for w in re.sub(r"\{\w+\}", " ", template).split())
    return words


_ALL_TEMPLATES: tuple[str, ...] = (
    *PERIODIC, *TIMES, *ONE_SHOT, *COUNT_DOWN, *COUNT_UP, *STOP, *FOREIGN_RULE, *CATEGORY_SAY_RULE,
    *CATEGORY_REPEAT_RULE, *WORD_RULE, *QUESTIONS, *STATEMENTS, *INCOMPLETE, *FILLERS, *CONTINUATIONS,
    *BACKCHANNELS, *ASK_ARITHMETIC, *ASK_CLOCK, *ASK_TIMER, *ASK_DOCS, *MONOLOGUE, *PLAIN_SENTENCES,
    *(name for names in CATEGORY_NAMES.values() for name in names), *LANGUAGE_NAMES.values(),
    *VIDEO_TRAIN_PHRASINGS, *VIDEO_CHATTER, *EXERCISE_NAMES, *SHAPES,
)  # fmt: skip
# Result phrasings (what the background model says back), see _result_text().
_RESULT_TEMPLATES = (
    "is", "times", "plus", "minus", "divided", "by", "it", "in", "today", "timer", "set", "for", "your",
    "done", "according", "to", "the", "notes", "sorry", "i", "could", "not", "finish", "that", "point",
    "seconds", "second", "minutes", "minute", "am", "pm", "o'clock",
)  # fmt: skip
_NUMBER_WORDS = frozenset(w for n in range(0, 100) for w in number_words(n).split()) | {"hundred", "thousand"}
# The closed-class words the templates use: the network's known vocabulary. Every other word of a scenario
# (what to say, cue words, meanings, nouns of a question) is a slot word drawn from a large list.
TEMPLATE_WORDS: frozenset[str] = frozenset(
    _template_words(_ALL_TEMPLATES) | set(_RESULT_TEMPLATES) | _NUMBER_WORDS
    | {"seconds", "second", "minute", "minutes", "a", "half"}
)  # fmt: skip
# Days a date result names; a benchmark cue word (a day) among them is left out, as everywhere else.
_WEEKDAYS = tuple(
    d
    for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    if d not in BENCH_WORDS
)
_MONTHS = split_words("january february march april may june july august september october november december")


# ----------------------------------------------------------------------------------------------------
# Timing


def say_seconds(words: Sequence[str]) -> float:
    """How long flite slt plays ``words`` (the agent's voice), closing silence included."""
    letters = sum(len(w) for w in words)
    return SAY_BASE_S + SAY_PER_WORD_S * len(words) + SAY_PER_LETTER_S * letters


def say_ticks(words: Sequence[str]) -> int:
    """Micro-turns during which ``<agent>`` is set after a ``<say>`` of ``words`` (from the next one)."""
    return max(1, math.ceil(say_seconds(words) / TICK_S))


def say_tick(target_s: float) -> int:
    """The micro-turn whose output is heard closest to ``target_s`` (session seconds)."""
    return max(0, round((target_s - SAY_LEAD_S) / TICK_S) - 1)


def schedule_targets(kind: str, period_s: float, count: int, start_s: float) -> list[float]:
    """Session seconds of the spoken targets of an instruction that ended at ``start_s``.

    ``kind``: "periodic" (``count`` reminders, or as many as fit when the scenario is that long),
    "one_shot" (one), "count" (``count`` numbers). The first is one period after the instruction.
    """
    if kind == "one_shot":
        return [start_s + period_s]
    return [start_s + period_s * (i + 1) for i in range(count)]


# schedule_targets() kinds of the TimeSpeak segments that are not one.
_SCHEDULE_KINDS = {"times": "periodic", "count_down": "count", "count_up": "count"}


# ----------------------------------------------------------------------------------------------------
# The session being written


@dataclass
class _Word:
    text: str
    start: float
    end: float
    key: bool = False  # an instruction's key word: numbers, the words to say
    foreign: bool = False


@dataclass(frozen=True)
class _At:
    """When something happens: in micro-turn ``tick``, or -- with ``utterance`` set -- in the micro-turn
    the last word of that utterance is committed in (known once the recogniser noise is drawn)."""

    tick: int = 0
    utterance: int | None = None


@dataclass
class _Schedule:
    ticks: list[int]  # micro-turns to say at, ascending
    words: list[tuple[str, ...]]  # what to say at each
    kind: str  # its <say> targets' label (see SayKinds)


@dataclass
class _Rule:
    """A CueSpeak rule (what to say when a committed word matches), or a camera rule (when an event is)."""

    kind: str  # "foreign" | "category" | "word" | "rep" (say each count) | "see" (say when seen)
    category: str = ""
    answer: tuple[str, ...] = ()  # () for "say the meaning" / "repeat the word" / "say what was seen"
    cue: str = ""
    event: str = ""  # "see": the event kind watched for (model.ticks.SEE_KINDS)
    target: tuple[str, ...] = ()  # "see": words the event's value must have ("green"; "red", "square")
    once: bool = False  # "see": a question ("which number is on the card"), answered once

    @property
    def label(self) -> str:
        """The label of the <say> targets it makes (see SayKinds)."""
        return {"rep": "rep", "see": "watch"}.get(self.kind, "cue")


@dataclass
class _Turn:
    """A user turn the model should take: ``act`` at micro-turn ``tick`` (or as soon after as it can)."""

    at: _At
    act: Act
    latency: int = 0  # reply: micro-turns until its first phrase plays
    ticks: int = 0  # reply: micro-turns it plays
    job: list[tuple[int, str]] = field(default_factory=list)  # ask: (micro-turns after, result text)
    # Statements and abandoned thoughts: taken only after this many silent micro-turns; the user talking
    # again meanwhile means the turn went on.
    silence: int = 0


@dataclass
class _Session:
    rng: random.Random
    n_ticks: int
    noise: float = 1.0  # this voice's recogniser noise: a factor on P_SUBSTITUTE, P_DROP and P_INSERT
    speech: list[list[_Word]] = field(default_factory=list)  # utterances
    typed: dict[int, list[list[str]]] = field(default_factory=dict)
    turns: list[_Turn] = field(default_factory=list)
    schedules: list[tuple[_At, _Schedule]] = field(default_factory=list)
    rules: list[tuple[_At, _Rule | None]] = field(default_factory=list)  # None: rules off
    stops: list[_At] = field(default_factory=list)  # stop commands
    commits: dict[int, list[str]] = field(default_factory=dict)  # micro-turn -> words committed in it
    last_commit: list[int] = field(default_factory=list)  # per utterance: micro-turn of its last commit
    blips: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    rule_active: bool = False  # while writing: a cue rule is on
    cursor: float = 0.5  # seconds: where the next thing happens
    # The camera: on from camera_from (None: no camera); what happens on it, as the features would report
    # it before delays and misses: repetitions completing, and (time, kind, value) visual events.
    camera_from: float | None = None
    reps: list[float] = field(default_factory=list)
    sights: list[tuple[float, str, str]] = field(default_factory=list)
    camera_gaps: list[tuple[float, float, bool]] = field(default_factory=list)  # (from, to, dark picture)

    # -- user speech --------------------------------------------------------------------------------
    def speak(self, text: str, rate: float, keys: frozenset[str] = frozenset(), gap: float = 0.0) -> _At:
        """Place an utterance at the cursor; return when the model has heard all of it. Commas in ``text``
        are short pauses."""
        words: list[_Word] = []
        t = self.cursor + gap
        for chunk in text.split(","):
            for w in chunk.split():
                duration = rate * (USER_WORD_BASE_S + USER_PER_LETTER_S * len(w))
                words.append(_Word(w, t, t + duration, key=w in keys, foreign=w in _FOREIGN_WORDS))
                t += duration + self.rng.uniform(0.0, 0.04)
            t += self.rng.uniform(0.15, 0.35)  # a phrase break
        self.speech.append(words)
        self.cursor = words[-1].end
        return _At(utterance=len(self.speech) - 1)

    def type_text(self, words: list[str]) -> _At:
        tick = self._tick(self.cursor)
        self.typed.setdefault(tick, []).append(words)
        self.cursor = (tick + 1) * TICK_S
        return _At(tick)

    def resolve(self, at: _At) -> int:
        return at.tick if at.utterance is None else self.last_commit[at.utterance]

    @staticmethod
    def _tick(t: float) -> int:
        return int(t / TICK_S)

    def wait(self, seconds: float) -> None:
        self.cursor += seconds

    # -- rendering ---------------------------------------------------------------------------------
    def user_flags(self) -> list[bool]:
        speech = [0.0] * (self.n_ticks + 1)
        for utterance in self.speech:
            for w in utterance:
                k = self._tick(w.start)
                while k < self.n_ticks and k * TICK_S < w.end:
                    speech[k] += min(w.end, (k + 1) * TICK_S) - max(w.start, k * TICK_S)
                    k += 1
        flags = [s >= SPEECH_MIN_S for s in speech[: self.n_ticks]]
        for k in range(self.n_ticks):
            if flags[k] and self.rng.random() < P_FLAG_DROP:
                self.dropped.add(k)
                flags[k] = False
            elif not flags[k] and k in self.blips:
                flags[k] = True
        return flags

    def commit_words(self, flags: list[bool]) -> None:
        """When each word is committed (see model/listening.py), with recogniser noise."""
        for utterance in self.speech:
            heard = self._noisy(utterance)
            tick = 0
            for i, (word, real) in enumerate(heard):
                source = utterance[-1] if real is None else real
                # At the first silent micro-turn after the word (sometimes one later) ...
                k = self._tick(source.end)
                while k < self.n_ticks and flags[k]:
                    k += 1
                by_silence = k + (1 if self.rng.random() < 0.15 else 0)
                # ... or once two more words are in the partial hypothesis, if that is sooner.
                if i + 2 < len(heard):
                    after = heard[i + 2][1] or source
                    by_growth = self._tick(after.start + self.rng.uniform(*COMMIT_JITTER_S))
                    by_silence = min(by_silence, max(by_growth, self._tick(source.end)))
                tick = max(tick, by_silence)  # words are committed in order
                if tick < self.n_ticks:
                    self.commits.setdefault(tick, []).append(word)
            self.last_commit.append(tick if heard else self._tick(utterance[-1].end) + 1)

    def _noisy(self, utterance: list[_Word]) -> list[tuple[str, _Word | None]]:
        """The words the recogniser commits for ``utterance``: (word, the spoken word it stands for, or
        None for an insertion)."""
        out: list[tuple[str, _Word | None]] = []
        for w in utterance:
            p = (P_KEY_NOISE if w.key else 1.0) * self.noise
            if w.foreign and self.rng.random() < P_FOREIGN_MISSED:
                out.append((self._english(), w))  # heard as some English word, without annotation
                continue
            roll = self.rng.random()
            if roll < P_DROP * p:
                continue
            if roll < (P_DROP + P_SUBSTITUTE) * p and not w.foreign:
                out.append((self._substitute(w.text), w))
            else:
                out.append((w.text, w))
            if self.rng.random() < P_INSERT * p:
                out.append((self.rng.choice(_INSERTIONS), None))
        return out

    def _substitute(self, word: str) -> str:
        # A taught foreign word now and then (model/listening.py on flite speech: 1-2 in 237 words); the
        # model cannot tell, so under a translation rule it translates it like any other.
        if self.rng.random() < P_FALSE_FOREIGN:
            return self.rng.choice(CUE_ENTRIES).word
        # Recognisers mostly confuse words that sound alike: one with the same beginning, else any.
        similar = _BY_PREFIX.get(word[:2], ())
        if similar and self.rng.random() < 0.7:
            return self.rng.choice(similar)
        return self._english()

    def _english(self) -> str:
        return self.rng.choice(_slot_words())

    def video_events(self) -> dict[int, list[tuple[str, str]]]:
        """What the camera's features report in each micro-turn: ("on"|"off", "") when the camera comes
        and goes, ("rep", count), ("colour"|"appear"|"number", value); with the measured delays, misses
        and restarts (see the module docstring)."""
        out: dict[int, list[tuple[str, str]]] = {}
        if self.camera_from is None:
            return out

        def report(t: float, kind: str, value: str = "") -> None:
            k = self._tick(t)
            if 0 <= k < self.n_ticks:
                out.setdefault(k, []).append((kind, value))

        # The detectors see nothing while the camera is off, nor in the first WARMUP_S after it came (back).
        blind = [
            (-math.inf, self.camera_from + WARMUP_S),
            *((a, b + WARMUP_S) for a, b, _ in self.camera_gaps),
        ]

        def seen(t: float) -> bool:
            return not any(a <= t < b for a, b in blind)

        def delay() -> float:
            late = self.rng.random() < P_SEEN_LATE
            return self.rng.uniform(*(SEEN_LATE_S if late else SEEN_DELAY_S))

        report(self.camera_from, "on")
        for a, b, dark in self.camera_gaps:
            report(a if dark else a + STALE_S + self.rng.uniform(0.0, TICK_S), "off")
            report(b, "on")
        count, last = 0, -math.inf
        for t in sorted(self.reps):
            if not seen(t) or self.rng.random() < P_REP_MISSED:
                continue
            at = t + delay()
            count = 1 if at - last > REP_RESTART_S else count + 1  # counted as the runtime counts
            last = at
            report(at, "rep", str(count))
        for t, kind, value in sorted(self.sights):
            if seen(t) and self.rng.random() >= P_EVENT_MISSED:
                report(t + delay(), kind, value)
        return out


# Words a recogniser inserts on a breath or a click.
_INSERTIONS = ("a", "the", "and", "i", "in", "it", "uh", "oh", "to", "of")


@cache
def _slot_words() -> tuple[str, ...]:
    """Open-class words to fill slots with: the English list, without benchmark cue words."""
    return tuple(w for w in english_words()[:12000] if w not in BENCH_WORDS and len(w) > 1)


def _by_prefix() -> dict[str, tuple[str, ...]]:
    groups: dict[str, list[str]] = {}
    for w in english_words()[:5000]:
        if w not in BENCH_WORDS:
            groups.setdefault(w[:2], []).append(w)
    return {k: tuple(v) for k, v in groups.items()}


_BY_PREFIX = _by_prefix()
# Foreign words scenarios use: training entries, less those whose meaning is a benchmark cue word ("oveja"
# means "sheep", a benchmark animal), so that no benchmark cue word ever appears in training data.
CUE_ENTRIES: tuple[Entry, ...] = tuple(e for e in TRAIN_ENTRIES if e.meaning not in BENCH_WORDS)
_FOREIGN_WORDS = frozenset(e.word for e in CUE_ENTRIES)
_LEXICON = Lexicon()


# ----------------------------------------------------------------------------------------------------
# Segments: each writes a stretch of the session at the cursor


# How often each segment of _Writer.write() comes, per theme: time, cue, question, pause, ask, idle,
# plain, monologue; count, watch, exercise, scene, video_question (a camera only in the video theme).
_THEME_WEIGHTS = {
    "time": (6, 1, 2, 1, 1, 2, 1, 0, 0, 0, 0, 0, 0),
    "cue": (1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),
    "talk": (1, 1, 5, 3, 3, 2, 2, 1, 0, 0, 0, 0, 0),
    "video": (1, 1, 1, 1, 1, 1, 1, 0, 4, 6, 1, 1, 1.5),
}
_SIGHT_COLOURS = tuple(NAMED_COLOURS)  # what the features name a lamp or an object


class _Writer:
    def __init__(self, rng: random.Random, seconds: float) -> None:
        self.rng = rng
        noise = rng.uniform(*HARD_VOICE_SCALE) if rng.random() < P_HARD_VOICE else 1.0
        self.s = _Session(rng, n_ticks=int(seconds / TICK_S), noise=noise)
        self.rate = rng.uniform(*USER_RATE)
        # Three users in ten type their instructions (seven times in ten; the benchmarks type 30 % where a
        # task allows it): typed text shows N exactly, so it teaches reading the period apart from the noise.
        self.typing = rng.random() < 0.3

    # -- slot fillers -------------------------------------------------------------------------------
    def noun(self) -> str:
        return self.rng.choice(NOUNS) if self.rng.random() < 0.5 else self.rng.choice(_slot_words())

    def fill(self, template: str, **slots: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in slots:
                return slots[name]
            if name == "n":
                return self.noun()
            if name == "v":
                return self.rng.choice(VERBS) if self.rng.random() < 0.6 else self.rng.choice(_slot_words())
            if name == "a":
                return (
                    self.rng.choice(ADJECTIVES) if self.rng.random() < 0.6 else self.rng.choice(_slot_words())
                )
            if name == "x":
                return self.rng.choice(_slot_words())
            raise KeyError(name)

        return re.sub(r"\{(\w+)\}", one, template)

    def say_words(self) -> tuple[str, ...]:
        n = self.rng.choices((1, 2, 3), (0.7, 0.2, 0.1))[0]
        return tuple(self.rng.choice(_slot_words()) for _ in range(n))

    def seconds(self, n: int, template: str) -> str:
        """``n`` seconds in words for ``template``'s {p}; one second is also "second" after "every"."""
        if n == 1:
            return self.rng.choice(("second", "one second")) if "every {p}" in template else "one second"
        return f"{number_words(n)} seconds"

    # -- the user says or types something ---------------------------------------------------------
    def instruct(self, text: str, keys: frozenset[str]) -> tuple[float, _At]:
        """The user gives an instruction: (session seconds its timing counts from, when it is heard)."""
        if self.typing and self.rng.random() < 0.7:
            at = self.s.type_text(text.replace(",", "").split())
            return (at.tick + 1) * TICK_S, at
        at = self.s.speak(text, self.rate, keys)
        return self.s.cursor, at

    def heard_tick(self) -> int:
        """Roughly when the model will have heard what was just said: the first silent micro-turn."""
        return int(self.s.cursor / TICK_S) + 1

    # -- segments -----------------------------------------------------------------------------------
    def timespeak(self) -> None:
        # Periodic reminders and one-shots most (the kinds with a period to read), counts less.
        kind = self.rng.choices(("periodic", "times", "one_shot", "count_down", "count_up"), (6, 1, 6, 2, 2))[
            0
        ]
        if kind in ("count_down", "count_up"):
            n = self.rng.choice(
                (3, 4, 5, 5, 6, 7, 8, 10) if kind == "count_down" else (3, 4, 5, 6, 8, 10, 12)
            )
            template = self.rng.choice(COUNT_DOWN if kind == "count_down" else COUNT_UP)
            # A count lasts n periods: keep it within ~40 s (a countdown from ten, one every four seconds).
            period = self.rng.randint(1, max(1, min(10, 40 // n))) if "{p}" in template else 1
            text = self.fill(template, n=number_words(n), p=self.seconds(period, template))
            keys = frozenset(text.split())
            numbers = range(n, 0, -1) if kind == "count_down" else range(1, n + 1)
            say = [tuple(number_words(i).split()) for i in numbers]
        else:
            template = self.rng.choice({"periodic": PERIODIC, "times": TIMES, "one_shot": ONE_SHOT}[kind])
            words = self.say_words()
            count = self.rng.randint(2, 6)
            # Every whole period or delay up to MAX_PERIOD_S equally likely: only reading N gets the timing
            # right. "N times" keeps within a minute.
            period = self.rng.randint(1, min(MAX_PERIOD_S, 60 // count) if kind == "times" else MAX_PERIOD_S)
            p = self.seconds(period, template)
            text = self.fill(template, p=p, w=" ".join(words), k=number_words(count))
            keys = frozenset(words) | frozenset(p.split())
            if kind == "times":
                keys |= {number_words(count)}
            say = [words] * {"periodic": int(MAX_SECONDS / period) + 1, "times": count, "one_shot": 1}[kind]
        start, at = self.instruct(text, keys)
        targets = schedule_targets(_SCHEDULE_KINDS.get(kind, kind), period, len(say), start)
        label = ("count" if kind.startswith("count") else kind) + ("_typed" if at.utterance is None else "")
        self.s.schedules.append((at, _Schedule([say_tick(t) for t in targets], say, label)))
        # Meanwhile: silence, or some talk; a periodic schedule runs until stopped, 2.5-7.5 periods later but
        # within ~50 s (long periods would fill the session), and never before its first reminder.
        if kind == "periodic":
            self.fill_time(min(period * self.rng.uniform(2.5, 7.5), max(1.5 * period, 50.0)))
            if self.rng.random() < 0.85:
                self.stop_command()
        else:
            self.fill_time(max(0.0, targets[-1] - self.s.cursor) + self.rng.uniform(0.5, 2.0))

    def fill_time(self, seconds: float) -> None:
        end = self.s.cursor + seconds
        while self.s.cursor < end - 1.0:
            roll = self.rng.random()
            if roll < 0.6:
                self.s.wait(min(end - self.s.cursor, self.rng.uniform(1.0, 6.0)))
            elif roll < 0.8:
                self.s.wait(self.rng.uniform(0.5, 1.5))
                self.plain_talk(sentences=1)
            else:
                self.s.wait(self.rng.uniform(0.5, 1.5))
                self.question()
        self.s.cursor = max(self.s.cursor, end)

    def stop_command(self, phrasings: Sequence[str] = STOP) -> None:
        self.s.wait(self.rng.uniform(0.3, 1.5))
        text = self.rng.choice(phrasings)
        if self.typing and self.rng.random() < 0.5:
            at = self.s.type_text(text.split())
        else:
            at = self.s.speak(text, self.rate, frozenset(text.split()))
        self.s.stops.append(at)
        self.s.rules.append((at, None))
        self.s.rule_active = False
        self.s.wait(self.rng.uniform(0.5, 2.0))

    def cuespeak(self) -> None:
        kind = self.rng.choices(("foreign", "category", "repeat", "word"), (4, 3, 2, 1))[0]
        language = self.rng.choice(("spanish", "french"))
        category = self.rng.choice([c for c, ws in TRAIN_CATEGORY_WORDS.items() if ws])
        cues: list[str]
        if kind == "foreign":
            text = self.fill(self.rng.choice(FOREIGN_RULE), lang=language)
            rule = _Rule("foreign")
            cues = [e.word for e in CUE_ENTRIES if e.language == language]
        elif kind in ("category", "repeat"):
            name = self.rng.choice(CATEGORY_NAMES[category])
            if kind == "category":
                answer = self.say_words()[:2]
                text = self.fill(self.rng.choice(CATEGORY_SAY_RULE), cat=name, x=" ".join(answer))
                rule = _Rule("category", category=category, answer=answer)
            else:
                text = self.fill(self.rng.choice(CATEGORY_REPEAT_RULE), cat=name)
                rule = _Rule("category", category=category)
            cues = list(TRAIN_CATEGORY_WORDS[category])
        else:
            cue = self.rng.choice(_slot_words())
            answer = self.say_words()[:2]
            text = self.fill(self.rng.choice(WORD_RULE), y=cue, x=" ".join(answer))
            rule = _Rule("word", answer=answer, cue=cue)
            cues = [cue]
        _, at = self.instruct(text, frozenset(text.split()))
        self.s.rules.append((at, rule))
        self.s.rule_active = True
        self.s.wait(self.rng.uniform(0.8, 2.5))
        self.monologue(cues, seconds=self.rng.uniform(12.0, 35.0))
        if self.rng.random() < 0.5:
            self.stop_command()

    def monologue(self, cues: Sequence[str], seconds: float) -> None:
        """The user talks on; about one sentence in two has a cue word, some have distractors."""
        end = self.s.cursor + seconds
        distractors = [e.word for e in CUE_ENTRIES] + [w for ws in TRAIN_CATEGORY_WORDS.values() for w in ws]
        while self.s.cursor < end:
            roll = self.rng.random()
            if roll < 0.55 and cues:
                text = self.rng.choice(MONOLOGUE).format(c=self.rng.choice(cues))
            elif roll < 0.7:
                text = self.rng.choice(MONOLOGUE).format(c=self.rng.choice(distractors))
            elif roll < 0.85:
                text = self.rng.choice(PLAIN_SENTENCES)
            else:
                text = self.rng.choice(MONOLOGUE).format(c=self.noun())
            if self.rng.random() < 0.15:  # a thought with a filler and a pause inside
                text = f"{self.rng.choice(FILLERS)}, {text}"
            self.s.speak(text, self.rate, gap=self.rng.uniform(0.25, 0.9))
        self.s.wait(self.rng.uniform(0.5, 2.0))

    def plain_talk(self, sentences: int) -> None:
        at = _At()
        for _ in range(sentences):
            at = self.s.speak(self.rng.choice(PLAIN_SENTENCES), self.rate, gap=self.rng.uniform(0.3, 0.8))
        self.reply_turn(at, self.heard_tick(), statement=True)

    def question(self) -> None:
        text = self.fill(self.rng.choice(QUESTIONS))
        if self.typing and self.rng.random() < 0.4:
            at = self.s.type_text(text.split())
            self.reply_turn(at, at.tick)
        else:
            at = self.s.speak(text, self.rate)
            self.reply_turn(at, self.heard_tick())

    def reply_turn(self, at: _At, tick: int, statement: bool = False) -> None:
        """The model answers the turn heard at ``at`` (about micro-turn ``tick``); meanwhile the user
        listens, interrupts with a new question, or backchannels."""
        if statement and self.s.rule_active:
            return  # a monologue for a cue rule: the user keeps the floor
        silence = STATEMENT_SILENCE_TICKS if statement else 0
        latency = self.rng.randint(*REPLY_LATENCY_TICKS)
        ticks = math.ceil(self.rng.uniform(*REPLY_SECONDS) / TICK_S)
        self.s.turns.append(_Turn(at, Act.ANSWER, latency, ticks, silence=silence))
        start = (tick + silence + latency) * TICK_S
        roll = self.rng.random()
        if roll < 0.15 and ticks > 6:  # barge-in with a new question
            self.s.cursor = start + self.rng.uniform(0.4, ticks * TICK_S - 0.6)
            self.question()
        elif roll < 0.27 and ticks > 6:  # a backchannel: the reply stops, then resumes
            played = self.rng.uniform(0.4, ticks * TICK_S - 0.6)
            self.s.cursor = start + played
            heard = self.s.speak(self.rng.choice(BACKCHANNELS), self.rate)
            rest = max(4, ticks - round(played / TICK_S))
            self.s.turns.append(_Turn(heard, Act.ANSWER, 1, rest))
            self.s.cursor = (self.heard_tick() + 1 + rest) * TICK_S + self.rng.uniform(0.5, 1.5)
        else:
            self.s.cursor = max(self.s.cursor, start + ticks * TICK_S) + self.rng.uniform(0.5, 2.0)

    def pause_turn(self) -> None:
        """A thought with a pause in the middle: no reply until it is finished."""
        first = self.fill(self.rng.choice(INCOMPLETE))
        if self.rng.random() < 0.6:
            first = f"{first} {self.rng.choice(FILLERS)}"
        at = self.s.speak(first, self.rate)
        if self.rng.random() < 0.1:  # trails off: eventually the model takes the turn
            latency = self.rng.randint(*REPLY_LATENCY_TICKS)
            self.s.turns.append(_Turn(at, Act.ANSWER, latency, 15, silence=ABANDONED_SILENCE_TICKS))
            self.s.cursor = (self.heard_tick() + ABANDONED_SILENCE_TICKS + latency + 16) * TICK_S
            return
        self.s.wait(self.rng.uniform(0.8, 2.6))
        self.s.speak(self.fill(self.rng.choice(CONTINUATIONS)), self.rate)
        self.reply_turn(_At(utterance=len(self.s.speech) - 1), self.heard_tick())

    def ask(self) -> None:
        roll = self.rng.random()
        job: list[tuple[int, str]]
        if roll < 0.35:
            a, b = self.rng.randint(2, 40), self.rng.randint(2, 20)
            template = self.rng.choice(ASK_ARITHMETIC)
            text = self.fill(template, a=number_words(a), b=number_words(b))
            op = (
                "times"
                if "times" in template
                else "plus"
                if "plus" in template
                else ("minus" if "minus" in template else "divided by")
            )
            value = {"times": a * b, "plus": a + b, "minus": a - b}.get(op)
            answer = f"{number_words(a)} {op} {number_words(b)} is " + (
                number_words(value) if value is not None and value >= 0 else "a number"
            )
            job = [(self.rng.randint(2, 8), answer)]
        elif roll < 0.6:
            text = self.fill(self.rng.choice(ASK_CLOCK), city=self.rng.choice(CITIES))
            hour, minute = self.rng.randint(1, 12), self.rng.randint(0, 59)
            if "time" in text:
                minutes = number_words(minute) if minute else "o'clock"
                answer = f"it is {number_words(hour)} {minutes} {self.rng.choice(('am', 'pm'))}"
            else:
                day, month = self.rng.choice(_WEEKDAYS), self.rng.choice(_MONTHS)
                answer = f"today is {day} {month} {number_words(self.rng.randint(1, 28))}"
            job = [(self.rng.randint(2, 6), answer)]
        elif roll < 0.8:
            seconds = self.rng.choice((5, 10, 15, 20, 30))
            spoken = f"{number_words(seconds)} seconds"
            text = self.fill(self.rng.choice(ASK_TIMER), t=spoken)
            job = [
                (self.rng.randint(2, 6), f"timer set for {spoken}"),
                (round(seconds / TICK_S) + 1, f"your {spoken} timer is done"),
            ]
        else:
            topic = self.noun()
            text = self.fill(self.rng.choice(ASK_DOCS), n=topic)
            words = " ".join(self.rng.choice(_slot_words()) for _ in range(self.rng.randint(4, 10)))
            job = [(self.rng.randint(4, 15), f"according to the notes the {topic} {words}")]
            if self.rng.random() < 0.3:
                job.append(
                    (
                        job[0][0] + self.rng.randint(1, 6),
                        " ".join(self.rng.choice(_slot_words()) for _ in range(6)),
                    )
                )
        if self.rng.random() < 0.05:
            job = [(self.rng.randint(3, 20), "sorry i could not finish that")]
        at = (
            self.s.type_text(text.split())
            if self.typing and self.rng.random() < 0.4
            else self.s.speak(text, self.rate)
        )
        self.s.turns.append(_Turn(at, Act.ASK, job=job))
        # The user waits for the answer, or goes on with something else meanwhile.
        self.s.wait(self.rng.uniform(0.5, 3.0))

    def idle(self) -> None:
        seconds = self.rng.uniform(2.0, 10.0)
        start = self.s._tick(self.s.cursor)
        for k in range(start, min(self.s.n_ticks, start + int(seconds / TICK_S))):
            if self.rng.random() < P_FLAG_BLIP:
                self.s.blips.add(k)
        self.s.wait(seconds)

    # -- the camera ----------------------------------------------------------------------------------
    def count_reps(self) -> None:
        """RepCount: "count my squats", then sets of repetitions; each count is said as it is seen, also
        while the user talks, until "stop counting" (sometimes in the middle of a set: the repetitions
        after it are seen, not counted)."""
        text = self.fill(self.rng.choice(REP_COUNT), e=self.rng.choice(EXERCISE_NAMES))
        _, at = self.instruct(text, frozenset(text.split()))
        self.s.rules.append((at, _Rule("rep")))
        self.s.rule_active = True
        # Mostly the exercise starts after the instruction; sometimes the user asks in the middle of it.
        early = self.rng.random() < 0.2
        start = (
            self.s.cursor - self.rng.uniform(1.0, 5.0)
            if early
            else self.s.cursor + self.rng.uniform(0.3, 2.5)
        )
        times = self.exercise(max(0.0, start))
        self.camera_gap(self.s.cursor, times[-1])
        stop_phrasings = REP_STOP if self.rng.random() < 0.6 else STOP
        if len(times) > 4 and self.rng.random() < 0.25:
            stop_at = times[self.rng.randrange(2, len(times) - 1)] + self.rng.uniform(0.1, 0.5)
            self.chatter(stop_at)
            self.s.cursor = max(self.s.cursor, stop_at - 0.3)
            self.stop_command(stop_phrasings)
            self.s.cursor = max(self.s.cursor, times[-1] + self.rng.uniform(0.5, 1.5))
            return
        self.chatter(times[-1])
        self.s.cursor = max(self.s.cursor, times[-1]) + self.rng.uniform(0.5, 2.0)
        if self.rng.random() < 0.7:
            self.stop_command(stop_phrasings)

    def exercise(self, start: float) -> list[float]:
        """Sets of repetitions from ``start``, timed as model/video/synthetic.py draws them; returns when
        each completes (the truth the features report)."""
        base = self.rng.uniform(*REP_BASE_PERIOD_S)
        drift = self.rng.uniform(-REP_DRIFT, REP_DRIFT)  # relative change of the period, first to last
        sets = [self.rng.randint(3, 12) for _ in range(self.rng.choices((1, 2, 3), (5, 3, 2))[0])]
        total = sum(sets)
        t = start
        times: list[float] = []
        for j, n in enumerate(sets):
            if j:
                long_rest = self.rng.random() < P_LONG_REST
                t += (
                    self.rng.uniform(REP_RESTART_S + 1.0, 25.0)
                    if long_rest
                    else self.rng.uniform(*SET_PAUSE_S)
                )
            if self.rng.random() < P_SET_FALSE_SIGHT:  # its first movement, taken for a visual change
                kind = self.rng.choice(("colour", "appear"))
                self.s.sights.append((t + self.rng.uniform(0.2, 0.8), kind, self.sight(kind)))
            for _ in range(n):
                x = 2 * len(times) / (total - 1) - 1 if total > 1 else 0.0
                period = base * (1 + drift * x) * (1 + self.rng.gauss(0.0, REP_JITTER))
                t += min(max(period, MIN_REP_S), MAX_REP_S)
                times.append(t)
        self.s.reps += times
        return times

    def sight(self, kind: str, like: Sequence[str] = (), unlike: str = "") -> str:
        """A value of a visual event of ``kind``: a colour, "red square", "42"; with the words of ``like``
        where given, never ``unlike`` (the value before a change)."""
        while True:
            colour = next((w for w in like if w in NAMED_COLOURS), self.rng.choice(_SIGHT_COLOURS))
            if kind == "colour":
                value = colour
            elif kind == "appear":
                value = f"{colour} {next((w for w in like if w in SHAPES), self.rng.choice(SHAPES))}"
            else:
                value = str(self.rng.randint(0, 99))
            if value != unlike:
                return value

    def watch(self) -> None:
        """ProactiveVideoQA: "let me know when the light goes green", then what happens on camera; what
        matches is said when it is seen (its value, or the word asked for), the rest gets silence."""
        kind = self.rng.choices(SEE_KINDS, (4, 3, 3))[0]
        if kind == "number" and self.rng.random() < 0.35:
            self.number_question()
            return
        template = self.rng.choice(
            {"colour": WATCH_COLOUR, "appear": WATCH_APPEAR, "number": WATCH_NUMBER}[kind]
        )
        slots = {
            "c": self.rng.choice(_SIGHT_COLOURS),
            "s": self.rng.choice(SHAPES),
            "x": " ".join(self.cue_reply()),
        }
        text = self.fill(template, **slots)
        target = tuple(slots[name] for name in ("c", "s") if f"{{{name}}}" in template)
        answer = tuple(slots["x"].split()) if "{x}" in template else ()
        _, at = self.instruct(text, frozenset(text.split()))
        self.s.rules.append((at, _Rule("see", answer=answer, event=kind, target=target)))
        self.s.rule_active = True
        # What happens: one to three events; a watched-for one among them four times in five.
        values: list[str] = []
        for _ in range(self.rng.randint(1, 3)):
            values.append(self.sight(kind, unlike=values[-1] if values else ""))
        if target and self.rng.random() < 0.8:
            values[self.rng.randrange(len(values))] = self.sight(kind, like=target)
            values = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]  # a change changes
        t = self.scene(self.s.cursor + self.rng.uniform(2.0, 5.0), kind, values)
        self.camera_gap(self.s.cursor, t)
        self.chatter(t)
        self.s.cursor = max(self.s.cursor, t) + self.rng.uniform(0.5, 2.0)
        if self.rng.random() < 0.5:
            self.stop_command()

    def number_question(self) -> None:
        """The question "which number is on the card": answered at once if the card was read lately, else
        when it is."""
        values = [self.sight("number") for _ in range(self.rng.randint(1, 2))]
        if self.rng.random() < 0.6:  # the card is up before the question
            self.s.cursor = self.scene(self.s.cursor + self.rng.uniform(1.0, 3.0), "number", values[:1])
            values = values[1:]
            self.s.wait(self.rng.uniform(0.5, 4.0))
        text = self.rng.choice(NUMBER_QUESTION)
        _, at = self.instruct(text, frozenset(text.split()))
        self.s.rules.append((at, _Rule("see", event="number", once=True)))
        self.s.cursor = self.scene(self.s.cursor + self.rng.uniform(1.5, 4.0), "number", values)
        self.s.wait(self.rng.uniform(0.5, 2.0))

    def scene(self, start: float, kind: str, values: Sequence[str]) -> float:
        """Visual events of ``values`` from ``start``, >= 1.5 s apart, now and then one of another kind or
        a repetition in between; returns when the last happened."""
        t = start
        for i, value in enumerate(values):
            if i:
                t += self.rng.uniform(1.5, 6.0)
            self.s.sights.append((t, kind, value))
            if self.rng.random() < 0.2:
                other = self.rng.choice([k for k in SEE_KINDS if k != kind])
                self.s.sights.append((t + self.rng.uniform(0.7, 1.4), other, self.sight(other)))
        if self.rng.random() < P_SCENE_FALSE_REP:
            self.s.reps.append(self.rng.uniform(start, t + 1.0))
        return t

    def camera_gap(self, start: float, end: float) -> None:
        """Now and then the camera drops out somewhere in [start, end)."""
        if end - start > 2.0 and self.rng.random() < P_CAMERA_GAP:
            t = self.rng.uniform(start, end - 1.0)
            self.s.camera_gaps.append(
                (t, t + self.rng.uniform(*CAMERA_GAP_S), self.rng.random() < P_DARK_GAP)
            )

    def chatter(self, until: float) -> None:
        """The user talks now and then while exercising or watching (a rule runs: no reply)."""
        while self.s.cursor < until - 2.0:
            self.s.wait(self.rng.uniform(1.0, 5.0))
            if self.rng.random() < 0.35:
                self.s.speak(self.rng.choice(VIDEO_CHATTER + PLAIN_SENTENCES), self.rate)

    def cue_reply(self) -> tuple[str, ...]:
        """A word to say when something is seen: a short cue word, or any word."""
        if self.rng.random() < 0.5:
            return (self.rng.choice(("now", "yes", "go", "there", "bingo", "look")),)
        return self.say_words()[:2]

    def unasked_exercise(self) -> None:
        """Repetitions nobody asked to count (silence, unless counting is still on)."""
        times = self.exercise(self.s.cursor + self.rng.uniform(0.5, 2.0))
        self.s.cursor = times[-1] + self.rng.uniform(0.5, 2.0)

    def unasked_scene(self) -> None:
        """Visual events nobody asked about."""
        kind = self.rng.choice(SEE_KINDS)
        values: list[str] = []
        for _ in range(self.rng.randint(1, 3)):
            values.append(self.sight(kind, unlike=values[-1] if values else ""))
        self.s.cursor = self.scene(self.s.cursor + self.rng.uniform(1.0, 3.0), kind, values)
        self.s.wait(self.rng.uniform(0.5, 2.0))

    def video_question(self) -> None:
        at = self.s.speak(self.rng.choice(VIDEO_QUESTIONS), self.rate)
        self.reply_turn(at, self.heard_tick())

    # -- the whole session -------------------------------------------------------------------------
    def write(self) -> None:
        # TimeSpeak sessions come most often (data version 3: 8 of 16.5, from 4 of 12.5): they need N read
        # from 30 values, CueSpeak only the rule and the annotations.
        theme = self.rng.choices(("time", "cue", "talk", "video"), (8, 3, 3, 2.5))[0]
        if theme == "video":
            self.s.camera_from = self.rng.uniform(0.0, 0.6)
        segments: dict[str, Callable[[], None]] = {
            "time": self.timespeak,
            "cue": self.cuespeak,
            "question": self.question,
            "pause": self.pause_turn,
            "ask": self.ask,
            "idle": self.idle,
            "plain": lambda: self.plain_talk(self.rng.randint(1, 3)),
            "monologue": lambda: self.monologue(
                [w for ws in TRAIN_CATEGORY_WORDS.values() for w in ws], self.rng.uniform(5.0, 15.0)
            ),
            "count": self.count_reps,
            "watch": self.watch,
            "exercise": self.unasked_exercise,
            "scene": self.unasked_scene,
            "video_question": self.video_question,
        }
        names = list(segments)
        weights = dict(zip(names, _THEME_WEIGHTS[theme], strict=True))
        end = self.s.n_ticks * TICK_S - 3.0
        self.s.wait(self.rng.uniform(0.0, 2.0))
        while self.s.cursor < end:
            segments[self.rng.choices(names, [weights[n] for n in names])[0]]()


# ----------------------------------------------------------------------------------------------------
# Resolving what the model does, micro-turn by micro-turn


@dataclass
class _Playback:
    start: int  # first micro-turn <agent> is set
    end: int  # one past the last
    reply: bool  # an <answer> or <news> (barge-in stops it); False for a <say>


def _render(s: _Session) -> tuple[Scenario, SayKinds]:
    flags = s.user_flags()
    s.commit_words(flags)
    stops = {s.resolve(at) for at in s.stops}
    schedule_starts = sorted(((s.resolve(at), sched) for at, sched in s.schedules), key=lambda x: x[0])
    rule_starts = sorted(((s.resolve(at), rule) for at, rule in s.rules), key=lambda x: x[0])
    turns = sorted(((s.resolve(t.at) + t.silence, t) for t in s.turns), key=lambda x: x[0])
    results: dict[int, list[str]] = {}
    say_queue: list[tuple[tuple[str, ...], str]] = []  # (words, label)
    say_kinds: SayKinds = {}
    schedules: list[_Schedule] = []
    rule: _Rule | None = None
    playback: list[_Playback] = []
    news_waiting = 0
    last_user = -100
    unfinished = False  # the user's last words were an unfinished thought
    video = s.video_events()
    last_sight: dict[str, tuple[int, str]] = {}  # event kind -> (micro-turn, value) last seen
    ticks: Scenario = []
    for k in range(s.n_ticks):
        user = flags[k]
        if user:
            last_user = k
        agent = any(p.start <= k < p.end for p in playback)
        reply_playing = any(p.reply and p.start <= k < p.end for p in playback)
        # -- what the encoders report
        tokens: list[str] = []
        heard = s.commits.get(k, [])
        for word in heard:
            tokens += [word, *_LEXICON.annotations(word)]
        for typed in s.typed.get(k, []):
            tokens += [TYPED, *typed, TYPED_END]
            heard = [*heard, *typed]
        for text in results.pop(k, []):
            tokens += [RESULT, *text.split()[:MAX_RESULT_WORDS], RESULT_END]
            news_waiting += 1
        if heard:
            unfinished = heard[-1] in _UNFINISHED_ENDINGS
        seen = video.get(k, [])
        camera = [t for kind, value in seen for t in video_tokens(kind, value)]
        for kind, value in seen:
            if kind == "off":
                last_sight.clear()  # what the camera showed before may have changed meanwhile
            elif kind != "on":
                last_sight[kind] = (k, value)
        # -- what the user asked for earlier comes due
        while schedule_starts and schedule_starts[0][0] <= k:
            schedules.append(schedule_starts.pop(0)[1])
        while rule_starts and rule_starts[0][0] <= k:
            rule = rule_starts.pop(0)[1]
            if rule is not None and rule.once and rule.event in last_sight:
                at, value = last_sight[rule.event]
                if k - at <= RECENT_SIGHT_TICKS:  # a question about what is on camera now: answered now
                    say_queue.append((tuple(spoken_words(value)), rule.label))
                    rule = None
        if rule is not None:
            say_queue += [(answer, rule.label) for word in heard if (answer := _cue_answer(rule, word))]
            for kind, value in seen:
                answer = _sight_answer(rule, kind, value)
                if answer:
                    say_queue.append((answer, rule.label))
                    if rule.once:
                        rule = None
                        break
        for sched in schedules:
            while sched.ticks and sched.ticks[0] <= k:
                sched.ticks.pop(0)
                say_queue.append((sched.words.pop(0), sched.kind))
        # -- the act: stop, say, take the turn, tell the news, or wait
        act: Act = Act.WAIT
        say: tuple[str, ...] = ()
        turn = turns[0][1] if turns and turns[0][0] <= k else None
        if turn is not None and turn.silence and last_user >= turns[0][0] - turn.silence:
            turns.pop(0)  # the user went on talking: it was not the end of the turn
            turn = None
        if k in stops:
            act = Act.STOP
            schedules.clear()
            say_queue.clear()
            rule = None
        elif reply_playing and user:
            act = Act.STOP  # barge-in, or a backchannel: the reply resumes when the user is done
        elif say_queue:
            act = Act.SAY
            say, say_kinds[k] = say_queue.pop(0)
        elif turn is not None and not user:
            turns.pop(0)
            act = turn.act
            if act is Act.ANSWER:
                # A new reply replaces the one playing or about to; a <say> playing finishes first.
                playback = [p for p in playback if p.start <= k or not p.reply]
                _cut_replies(playback, k + 1)
                start = max([k + turn.latency, *(p.end for p in playback if not p.reply)])
                playback.append(_Playback(start, start + turn.ticks, True))
            else:
                for after, text in turn.job:
                    results.setdefault(k + after, []).append(text)
        elif (
            news_waiting
            and not agent
            and not any(p.start > k for p in playback)
            and k - last_user > FITTING_SILENCE_TICKS
            and not (unfinished and k - last_user < ABANDONED_SILENCE_TICKS)
            and turn is None
        ):
            act = Act.NEWS
            start = k + s.rng.randint(*NEWS_LATENCY_TICKS)
            playback.append(_Playback(start, start + math.ceil(news_waiting * NEWS_SECONDS / TICK_S), True))
            news_waiting = 0
        if act is Act.STOP:
            _cut(playback, k + 1)
            playback = [p for p in playback if p.start <= k]
        elif act is Act.SAY:
            # A <say> cuts a reply short; after another <say> it waits its turn.
            _cut_replies(playback, k + 1)
            begin = max([k + 1, *(p.end for p in playback if not p.reply and p.end > k)])
            playback.append(_Playback(begin, begin + say_ticks(say), False))
        ticks.append(
            Tick(
                TickInput(
                    user_speaking=user, agent_speaking=agent, tokens=tuple(tokens), video=tuple(camera)
                ),
                TickOutput(act, say[:MAX_SAY_WORDS]),
            )
        )
    return ticks, say_kinds


# Words after which a thought is unfinished: the user will go on (fillers, conjunctions, articles...).
_UNFINISHED_ENDINGS = frozenset(
    split_words(
        "um uh hmm so well like mean know and but because the a an to of if that my is about with for "
        "i we what it's i'm"
    )
)


def _cut(playback: list[_Playback], at: int) -> None:
    for p in playback:
        p.end = min(p.end, at)


def _cut_replies(playback: list[_Playback], at: int) -> None:
    for p in playback:
        if p.reply:
            p.end = min(p.end, at)
            p.start = min(p.start, p.end)


def _cue_answer(rule: _Rule, word: str) -> tuple[str, ...]:
    if rule.kind == "foreign":
        meaning = _LEXICON.meaning(word)
        return (meaning,) if meaning is not None else ()
    if rule.kind == "category":
        if rule.category in _LEXICON.categories(word):
            return rule.answer or (word,)
        return ()
    return rule.answer if rule.kind == "word" and word == rule.cue else ()


def _sight_answer(rule: _Rule, kind: str, value: str) -> tuple[str, ...]:
    """What to say when the camera reports ``kind`` with ``value`` under ``rule``."""
    if rule.kind == "rep" and kind == "rep":
        return tuple(spoken_words(value))  # the count
    if rule.kind == "see" and kind == rule.event and set(rule.target) <= set(value.split()):
        return rule.answer or tuple(spoken_words(value))
    return ()


def video_tokens(kind: str, value: str = "") -> tuple[str, ...]:
    """The tokens of one thing the camera's features report (model/ticks.py), for the generator and the
    runtime alike: "on"/"off" (the camera came or went), "rep" with the count ("3" -> ``<rep> three``), or
    a visual event with its value ("red square" -> ``<see:appear> red <cat:colour> square``)."""
    if kind == "on":
        return (VIDEO_ON,)
    if kind == "off":
        return (VIDEO_OFF,)
    marker = REP if kind == "rep" else see_token(kind)
    return (marker, *_LEXICON.annotate(spoken_words(value)))


def generate_labelled(seed: int, count: int) -> list[tuple[Scenario, SayKinds]]:
    """``count`` scenarios, the same for the same ``seed`` and :data:`DATA_VERSION`, each with the label of
    each of its ``<say>`` targets (what asked for it: validation reports them apart)."""
    labelled = []
    for i in range(count):
        rng = random.Random(f"microturn-scenarios:{DATA_VERSION}:{seed}:{i}")
        writer = _Writer(rng, rng.uniform(MIN_SECONDS, MAX_SECONDS))
        writer.write()
        labelled.append(_render(writer.s))
    return labelled


def generate(seed: int, count: int) -> list[Scenario]:
    """The scenarios of :func:`generate_labelled`, without the labels."""
    return [scenario for scenario, _ in generate_labelled(seed, count)]
