"""What the interaction model sees and says in one micro-turn, as a short sequence of word tokens.

This is the contract between the three parts of the trained interaction model:

- the **scenario generator** (``model/scenarios.py``) writes whole sessions as lists of :class:`Tick` --
  what the encoders would report each micro-turn and what the model should do -- for training;
- the **network** (``model/interaction.py``) reads ticks as tokens and predicts the output tokens;
- the **runtime** (``model/microturn_agent.py``) turns live encoders (speech activity, streaming
  recognition, the lexicon annotator, the agent's own playback) into the same :class:`TickInput` every
  200 ms and carries out the :class:`TickOutput` the network decides.

One micro-turn is written as ``<tick> [<user>] [<agent>] [video] word ... <act> ACTION [word ... <end>]``:

- ``<tick>`` opens every micro-turn. Every token of a micro-turn gets the micro-turn's index as its
  position, so "how long ago" is a distance in micro-turns (200 ms each) whatever else was said.
- ``<user>``: the user is speaking during this micro-turn (speech activity, >= 60 ms of it).
- ``<agent>``: the agent's own voice is still playing during this micro-turn. What the model said is part
  of what it sees: it needs it to keep a rhythm and to know whether it was interrupted.
- video (data version 2 on): what the camera showed happening in this micro-turn, from the per-session
  features of :mod:`model.video.features` -- ``<rep> three`` (a repetition completed: the count as the
  word to say), ``<see:colour> red <cat:colour>`` (a light turned red), ``<see:appear> red <cat:colour>
  square`` (something appeared), ``<see:number> forty two`` (a card now shows 42), ``<video:off>`` /
  ``<video:on>`` (the camera went stale or black / is back; on the change only). Values are words
  with the lexicon's annotations, so a rule about colours heard applies to colours seen.
- words: what the recogniser committed in this micro-turn (lower case, as pocketsphinx spells them), each
  optionally followed by the lexicon's annotations (:data:`CATEGORY_PREFIX` and :data:`MEANS`, see
  below); typed text inside ``<typed> ... </typed>``; a background result inside
  ``<result> ... </result>``.
- ``<act>`` then one action (:class:`Act`); :attr:`Act.SAY` is followed by the words to say and ``<end>``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MAX_SAY_WORDS = 6  # words in one <say>: a cue answer, a count, a reminder -- longer replies go to the LLM

TICK = "<tick>"
USER = "<user>"
AGENT = "<agent>"
TYPED = "<typed>"
TYPED_END = "</typed>"
RESULT = "<result>"
RESULT_END = "</result>"
ACT = "<act>"
END = "<end>"
# Lexicon annotations follow the word they annotate: ``rojo <means> red`` (a foreign word and its English
# meaning), ``red <cat:colour>`` (the word is a colour). They come from a lookup table, not from the
# network, so words the network never saw in training still carry what it needs to react to them.
MEANS = "<means>"
CATEGORY_PREFIX = "<cat:"
CATEGORIES = ("colour", "number", "animal", "fruit", "day", "body", "weather")


def category_token(category: str) -> str:
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; choose one of: {', '.join(CATEGORIES)}")
    return f"{CATEGORY_PREFIX}{category}>"


class Act(enum.StrEnum):
    """What the model does in one micro-turn."""

    WAIT = "<wait>"  # nothing new: stay silent, or let what is playing play on
    SAY = "<say>"  # say the words that follow (a count, a reminder, a cue's answer) now
    STOP = "<stop>"  # stop speaking at once (interrupted, or told to stop)
    ANSWER = "<answer>"  # the user finished a turn that needs a reply: the LLM writes it, the agent says it
    ASK = "<ask>"  # hand the user's request to the background model (tools, longer reasoning)
    NEWS = "<news>"  # a fitting moment: say the background result that is waiting


# The camera (see the module docstring): event markers, each followed by its value as words.
REP = "<rep>"
SEE_PREFIX = "<see:"
SEE_KINDS = ("colour", "appear", "number")  # the VideoEvent kinds the model is shown (not "vanish")
VIDEO_OFF = "<video:off>"
VIDEO_ON = "<video:on>"
# A repetition count restarts at one after this long without a repetition: a new set, or a new exercise
# ("count my squats" after a rest). Shorter pauses (between sets of one clip, 1.5-4 s) keep counting.
REP_RESTART_S = 10.0


def see_token(kind: str) -> str:
    if kind not in SEE_KINDS:
        raise ValueError(f"unknown visual event {kind!r}; choose one of: {', '.join(SEE_KINDS)}")
    return f"{SEE_PREFIX}{kind}>"


VIDEO_TOKENS: tuple[str, ...] = (REP, *(see_token(k) for k in SEE_KINDS), VIDEO_OFF, VIDEO_ON)

# The special tokens of data version 1, in their order: checkpoints trained before the video tokens lay
# out their ids with exactly these (model/interaction.py's load_checkpoint), so the list never changes.
SPECIAL_TOKENS_V1: tuple[str, ...] = (
    TICK,
    USER,
    AGENT,
    TYPED,
    TYPED_END,
    RESULT,
    RESULT_END,
    ACT,
    END,
    MEANS,
    *(category_token(c) for c in CATEGORIES),
    *(a.value for a in Act),
)
# New tokens go at the end: the ids of the older ones stay what they were.
SPECIAL_TOKENS: tuple[str, ...] = (*SPECIAL_TOKENS_V1, *VIDEO_TOKENS)


@dataclass(frozen=True)
class TickInput:
    """What the encoders report for one micro-turn."""

    user_speaking: bool = False
    agent_speaking: bool = False
    # Recogniser words committed in this micro-turn with their lexicon annotations, typed text and
    # background results, already as tokens: ``("gato", "<means>", "cat")``.
    tokens: tuple[str, ...] = ()
    # What the camera showed, already as tokens (``("<rep>", "three")``); placed before the words.
    video: tuple[str, ...] = ()

    def to_tokens(self) -> list[str]:
        head = [TICK]
        if self.user_speaking:
            head.append(USER)
        if self.agent_speaking:
            head.append(AGENT)
        return [*head, *self.video, *self.tokens, ACT]


@dataclass(frozen=True)
class TickOutput:
    """What the model decides in one micro-turn."""

    act: Act = Act.WAIT
    words: tuple[str, ...] = field(default=())  # only with Act.SAY, at most MAX_SAY_WORDS

    def __post_init__(self) -> None:
        if self.words and self.act is not Act.SAY:
            raise ValueError(f"only {Act.SAY} carries words, not {self.act}")
        if len(self.words) > MAX_SAY_WORDS:
            raise ValueError(f"at most {MAX_SAY_WORDS} words in one {Act.SAY}, got {len(self.words)}")

    def to_tokens(self) -> list[str]:
        if self.act is Act.SAY:
            return [self.act.value, *self.words, END]
        return [self.act.value]

    @classmethod
    def from_tokens(cls, tokens: list[str]) -> TickOutput:
        """Parse what the network generated after ``<act>``; anything malformed reads as WAIT."""
        if not tokens:
            return cls()
        try:
            act = Act(tokens[0])
        except ValueError:
            return cls()
        if act is not Act.SAY:
            return cls(act)
        words = [t for t in tokens[1:] if t != END][:MAX_SAY_WORDS]
        if not words or any(t in SPECIAL_TOKENS for t in words):
            return cls()
        return cls(act, tuple(words))


@dataclass(frozen=True)
class Tick:
    """One micro-turn of a training scenario: what the encoders report, and what the model should do."""

    input: TickInput
    output: TickOutput = field(default_factory=TickOutput)


# A session: its micro-turns in order; the i-th tick starts at session time i * 200 ms.
Scenario = list[Tick]
