"""Streaming recognition of real flite speech with pocketsphinx, fed in 200 ms chunks like a live session."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

from model.asr import RecognizerPool, StreamingRecognizer, normalize_words, word_accuracy
from model.tts import FliteSynthesizer
from service.microturn import SAMPLE_RATE, SAMPLES_PER_TURN, PcmArray

SENTENCES = [
    "what is the capital of france",
    "please turn on the lights in the kitchen",
    "can you tell me a joke",
    "set a timer for ten minutes",
    "what time is it in new york",
    "thank you that was very helpful",
]
PREROLL_S = 0.2  # audio from before the detected onset, as the policy hands it to start()
TAIL_S = 0.6  # quiet decoded after the words until the policy calls the utterance over


@cache
def live_audio(text: str, voice: str = "slt") -> tuple[PcmArray, PcmArray]:
    """(pre-roll, rest): flite speech in the faint noise of a quiet room (-70 dBFS), as a mic delivers it."""
    speech = FliteSynthesizer(voice).synthesize(text).astype(np.float64)
    preroll, tail = int(PREROLL_S * SAMPLE_RATE), int(TAIL_S * SAMPLE_RATE)
    signal = np.concatenate([np.zeros(preroll), speech, np.zeros(tail)])
    signal += np.random.default_rng(len(text)).normal(0.0, 32768.0 * 10 ** (-70 / 20), signal.size)
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    return pcm[:preroll], pcm[preroll:]


def chunks(pcm: PcmArray) -> Iterator[PcmArray]:
    for offset in range(0, pcm.size, SAMPLES_PER_TURN):
        yield pcm[offset : offset + SAMPLES_PER_TURN]


@dataclass
class Recognized:
    partials: list[str]  # the hypothesis after each chunk
    final: str


def recognize(recognizer: StreamingRecognizer, text: str, voice: str = "slt") -> Recognized:
    preroll, audio = live_audio(text, voice)
    recognizer.start(preroll)
    partials = [recognizer.accept(chunk) for chunk in chunks(audio)]
    return Recognized(partials, recognizer.finish())


@pytest.fixture(scope="module")
def recognizer() -> StreamingRecognizer:
    return StreamingRecognizer()  # loading the model takes ~0.3 s: share one


def test_recognizes_a_question_streaming(recognizer: StreamingRecognizer) -> None:
    result = recognize(recognizer, "what is the capital of france")
    assert {"capital", "france"} <= set(result.final.split())
    # Partial hypotheses grow while the user speaks, long before the utterance ends ...
    first_partial = next(i for i, p in enumerate(result.partials) if p)
    assert first_partial < len(result.partials) // 2
    assert any("capital" in p.split() for p in result.partials)
    # ... and the final one is at least as good as the last partial.
    assert word_accuracy(SENTENCES[0], result.final) >= word_accuracy(SENTENCES[0], result.partials[-1])


def test_word_accuracy_of_wideband_voices() -> None:
    """Measured on these sentences: slt 0.97, rms 0.89, awb 0.85 (0.86-0.94 over bench/asr_bench.py's 16).
    The bounds allow about two more wrong words per voice (each is ~3 points here).

    kal is left out: it is an 8 kHz voice, and the wideband en-us model loses a third or more of its words
    without the 4-8 kHz band (0.4-0.6 measured), too erratic for a threshold to tell from a regression.
    """
    recognizer = StreamingRecognizer()  # fresh: the result must not depend on which tests ran before
    finals = {
        (voice, text): recognize(recognizer, text, voice).final
        for voice in ("slt", "rms", "awb")
        for text in SENTENCES
    }
    per_voice = {
        voice: statistics.mean(
            word_accuracy(text, final) for (v, text), final in finals.items() if v == voice
        )
        for voice in ("slt", "rms", "awb")
    }
    assert statistics.mean(per_voice.values()) >= 0.85, (per_voice, finals)
    assert min(per_voice.values()) >= 0.78, (per_voice, finals)


def test_finish_resets_for_the_next_utterance(recognizer: StreamingRecognizer) -> None:
    first = recognize(recognizer, "what is the capital of france")
    assert not recognizer.active
    with pytest.raises(RuntimeError):
        recognizer.accept(live_audio("what time is it in new york")[1])
    second = recognize(recognizer, "what time is it in new york")
    assert "capital" in first.final and "capital" not in second.final
    assert {"time", "york"} <= set(second.final.split())
    assert all("capital" not in p for p in second.partials)  # no leftovers even mid-utterance


def test_misuse_is_an_error(recognizer: StreamingRecognizer) -> None:
    with pytest.raises(RuntimeError):
        recognizer.finish()
    recognizer.start()
    with pytest.raises(RuntimeError):
        recognizer.start()
    with pytest.raises(TypeError):
        recognizer.accept(np.zeros(SAMPLES_PER_TURN, dtype=np.float32))
    assert recognizer.accept(np.zeros(0, dtype=np.int16)) == ""
    assert recognizer.finish() == ""


def test_pool_keeps_sessions_independent() -> None:
    pool = RecognizerPool(max_spares=1)
    texts = {"alice": "what is the capital of france", "bob": "please turn on the lights in the kitchen"}
    audio = {sid: live_audio(text) for sid, text in texts.items()}
    for sid, (preroll, _) in audio.items():
        pool.start(sid, preroll)
    streams = {sid: list(chunks(rest)) for sid, (_, rest) in audio.items()}
    partials: dict[str, list[str]] = {sid: [] for sid in texts}
    for i in range(max(len(s) for s in streams.values())):
        # One batch per micro-turn, holding only the sessions whose speech still has a chunk.
        batch = {sid: stream[i] for sid, stream in streams.items() if i < len(stream)}
        for sid, partial in pool.accept_batch(batch).items():
            partials[sid].append(partial)
    finals = {sid: pool.finish(sid) for sid in texts}
    assert {"capital", "france"} <= set(finals["alice"].split())
    assert {"lights", "kitchen"} <= set(finals["bob"].split())
    assert not set(normalize_words(finals["alice"])) & {"lights", "kitchen"}
    assert not any("kitchen" in p for p in partials["alice"]) and not any(
        "france" in p for p in partials["bob"]
    )
    assert not pool.is_active("alice")


def test_pool_lifecycle() -> None:
    pool = RecognizerPool(max_spares=1)
    pool.warmup(1)
    with pytest.raises(RuntimeError, match="start"):
        pool.accept_batch({"carol": live_audio("can you tell me a joke")[1]})
    preroll, rest = live_audio("can you tell me a joke")
    pool.start("carol", preroll)
    assert pool.is_active("carol")
    pool.accept_batch({"carol": rest[:SAMPLES_PER_TURN]})
    pool.close("carol")  # mid-utterance: abandoned, and the recogniser goes back to the spares
    assert not pool.is_active("carol")
    pool.close("never-seen")  # unknown ids are ignored
    # A new session reuses the recycled recogniser and starts clean.
    pool.start("dave", preroll)
    for chunk in chunks(rest):
        pool.accept_batch({"dave": chunk})
    final = pool.finish("dave")
    assert {"tell", "joke"} <= set(final.split())
    with pytest.raises(RuntimeError):
        pool.finish("dave")


def test_word_accuracy() -> None:
    assert word_accuracy("What is the capital of France?", "what is the capital of france") == 1.0
    assert word_accuracy("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_accuracy("a b", "a b c d") == 0.0  # two insertions
    assert word_accuracy("", "") == 1.0
