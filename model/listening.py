"""What the trained interaction model hears each micro-turn: speech activity and committed words.

The network (model/interaction.py) reads the user's words as they are *committed*: once a word is in the
sequence it is never taken back, because the network has already reacted to it. Streaming recognition
revises its hypothesis as audio arrives, so a word is committed only once it is unlikely to change:

- while the user speaks, every word of the partial hypothesis except the last two (pocketsphinx still
  revises those: "to" -> "today", "the cat" -> "the capital");
- at the first micro-turn without speech, the rest of the partial (the last word has ended);
- when the utterance ends (:data:`ENDPOINT_MS` of silence), whatever the final hypothesis adds beyond the
  words already committed.

A word therefore arrives one to four micro-turns (median two, 0.5 s) after it ends: two more words have
to show up in the partial first, or the user has to fall silent. The scenario generator
(model/scenarios.py) models this delay, so that what the network trains on looks like what it hears here.

:class:`Listening` is batch-shaped like :class:`model.asr.RecognizerPool`: one call per tick with every
session's audio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from model.asr import RecognizerPool
from model.vad import SpeechActivity
from service.microturn import MICRO_TURN_MS, PcmArray

SPEECH_MIN_MS = 60  # ms of speech-like frames in a micro-turn that count as the user speaking (ticks.USER)
PREROLL_TURNS = 2  # micro-turns of audio kept before speech onset: recognisers need the word's start
# Silence that ends an utterance (the decoder restarts). Longer than a pause between phrases, so that the
# language model keeps the sentence's context; the words are committed at the first silent micro-turn
# anyway, so this only decides when the recogniser resets, never when the network hears a word.
ENDPOINT_MS = 600
# A monologue with only short pauses is cut into utterances at a silent micro-turn after this long: a
# decoder's partial hypothesis costs more the longer its utterance.
MAX_UTTERANCE_MS = 12_000
# Words at the end of a partial hypothesis not yet committed while the user speaks. Measured on 24 flite
# slt sentences (237 words: a code-switched monologue, questions, pauses; faint noise), aligning committed
# words with the spoken ones: committing all but the last word got 167 words right, all but the last two
# 195 -- as many as the final hypotheses (197) -- at a median 0.53 s after the word's end instead of
# 0.32 s; all but the last where the previous partial agreed, 183 at 0.38 s.
UNSTABLE_WORDS = 2


@dataclass
class Ear:
    """One session's listening state."""

    vad: SpeechActivity = field(default_factory=SpeechActivity)
    preroll: deque[PcmArray] = field(default_factory=lambda: deque(maxlen=PREROLL_TURNS))
    recognizing: bool = False  # an utterance is being recognised
    utterance_ms: int = 0  # audio fed to the current utterance
    silence_ms: int = 0  # consecutive non-speech since the user last spoke
    partial: str = ""  # the recogniser's latest partial hypothesis
    committed: int = 0  # words of the current utterance already committed


@dataclass
class Heard:
    """What one session's encoders report for one micro-turn."""

    user_speaking: bool
    words: list[str] = field(default_factory=list)  # committed in this micro-turn, in order
    partial: str | None = None  # the partial hypothesis, when it changed (for transcript events)
    final: str | None = None  # the utterance ended: its final hypothesis ("" if nothing was recognised)


class Listening:
    """Speech activity and streaming recognition of many sessions, committed word by word."""

    def __init__(self, recognizers: RecognizerPool) -> None:
        self.recognizers = recognizers

    def listen(self, batch: Sequence[tuple[str, PcmArray, Ear]]) -> list[Heard]:
        """One micro-turn of audio per session: ``(session_id, pcm, ear)``; one :class:`Heard` each."""
        heard: list[Heard] = []
        feeding: dict[str, PcmArray] = {}
        for session_id, pcm, ear in batch:
            activity = ear.vad.update(pcm)
            speaking = activity.speech_ms >= SPEECH_MIN_MS
            heard.append(Heard(user_speaking=speaking))
            if speaking:
                ear.silence_ms = 0
                if not ear.recognizing:
                    preroll = np.concatenate(list(ear.preroll)) if ear.preroll else None
                    self.recognizers.start(session_id, preroll)
                    ear.recognizing, ear.utterance_ms, ear.committed, ear.partial = True, 0, 0, ""
            else:
                ear.silence_ms += MICRO_TURN_MS
            ear.preroll.append(pcm)
            if ear.recognizing:
                feeding[session_id] = pcm
                ear.utterance_ms += MICRO_TURN_MS
        # One batch call for every session inside an utterance (a GPU recogniser would batch it).
        partials = self.recognizers.accept_batch(feeding) if feeding else {}
        for (session_id, _, ear), out in zip(batch, heard, strict=True):
            if session_id not in partials:
                continue
            partial = partials[session_id]
            if partial and partial != ear.partial:
                ear.partial = partial
                out.partial = partial
            words = ear.partial.split()
            # While speaking, the last words of a partial are still being decided (see UNSTABLE_WORDS).
            stable = words[: max(0, len(words) - UNSTABLE_WORDS)] if out.user_speaking else words
            if len(stable) > ear.committed:
                out.words = stable[ear.committed :]
                ear.committed = len(stable)
            long_enough = ear.utterance_ms >= MAX_UTTERANCE_MS and ear.silence_ms > 0
            if ear.silence_ms >= ENDPOINT_MS or long_enough:
                final = self.recognizers.finish(session_id).strip()
                out.words += final.split()[ear.committed :]
                out.final = final
                ear.recognizing, ear.partial, ear.committed = False, "", 0
        return heard

    def close(self, session_id: str) -> None:
        self.recognizers.close(session_id)
