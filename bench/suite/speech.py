"""The user's side of a case as audio: synthesis (flite, espeak-ng), word timings, the mixed timeline.

flite voices (slt, rms, awb, kal) speak through :class:`model.tts.FliteSynthesizer`, the synthesiser the
agent uses too; ``espeak:<voice>`` names an espeak-ng voice, the harder variant (pocketsphinx recognises
it poorly). Both are deterministic, so a case file plus the same synthesiser versions give the same audio.

Word timings come from flite itself (``-psdur``: the end time of every phone) -- no recogniser in the loop,
so a cue word's end is where flite put it, also for foreign words pocketsphinx has never heard.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import cache

import av
import numpy as np

from bench.suite.audio import speech_span
from model.tts import SYNTH_TIMEOUT_S, FliteSynthesizer, clean_text
from service.audio import PcmResampler
from service.microturn import SAMPLE_RATE, PcmArray

FLITE_VOICES = ("slt", "rms", "awb", "kal")
ESPEAK_PREFIX = "espeak:"


class EspeakSynthesizer:
    """Text to 16 kHz mono int16 speech with espeak-ng (the harder variant of the user's voice)."""

    def __init__(self, voice: str = "en-us") -> None:
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise RuntimeError("espeak-ng is not installed; install it with: apt-get install espeak-ng")
        self.voice = voice
        self._binary = binary

    def synthesize(self, text: str) -> PcmArray:
        command = [self._binary, "-v", self.voice, "--stdout", "--", clean_text(text)]
        result = subprocess.run(command, capture_output=True, timeout=SYNTH_TIMEOUT_S, check=True)
        to_pcm = PcmResampler()
        with av.open(io.BytesIO(result.stdout), mode="r", format="wav") as container:
            chunks = [pcm for frame in container.decode(audio=0) for pcm in to_pcm(frame)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


@cache
def _synthesizer(voice: str) -> FliteSynthesizer | EspeakSynthesizer:
    if voice.startswith(ESPEAK_PREFIX):
        return EspeakSynthesizer(voice.removeprefix(ESPEAK_PREFIX))
    return FliteSynthesizer(voice)


@cache
def synthesize(voice: str, text: str) -> PcmArray:
    """The user's speech for ``text`` (cached, so read-only: every caller shares it)."""
    pcm = _synthesizer(voice).synthesize(text)
    pcm.flags.writeable = False
    return pcm


@dataclass(frozen=True)
class WordSpan:
    word: str
    start_s: float  # seconds from the start of the synthesised (leading-silence-trimmed) audio
    end_s: float


def _flite_phones(voice: str, text: str) -> tuple[list[tuple[str, float]], float]:
    """flite's phones of ``text`` with their end times, and the duration of the untrimmed audio."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as wav_file:
        result = subprocess.run(
            ["flite", "-voice", voice, "-psdur", "-t", clean_text(text), "-o", wav_file.name],
            capture_output=True,
            text=True,
            timeout=SYNTH_TIMEOUT_S,
            check=True,
        )
        with wave.open(wav_file.name) as wav:
            duration = wav.getnframes() / wav.getframerate()
    phones = []
    for item in result.stdout.split():
        name, _, end = item.rpartition(":")
        phones.append((name, float(end)))
    return phones, duration


def _inner_phones(voice: str, text: str) -> list[str]:
    """Phone names of ``text`` without the pauses flite puts before and after an utterance."""
    names = [name for name, _ in _flite_phones(voice, text)[0]]
    while names and names[0] == "pau":
        names.pop(0)
    while names and names[-1] == "pau":
        names.pop()
    return names


def word_span(voice: str, text: str, index: int) -> WordSpan:
    """Where word ``index`` (of ``text.split()``) is in :func:`synthesize`'s audio of ``text``.

    flite speaks a prefix of a sentence with the same phones as the sentence's beginning, so the word
    ends after as many phones as the prefix through it has, and starts as many phones earlier as the
    word alone has. Times are anchored at the start: flite's leading silence is what
    :class:`FliteSynthesizer` trims (kal's WAV also lacks its final pause). Raises ValueError when the
    phones do not line up (context changed them): pick another sentence then.
    """
    if voice not in FLITE_VOICES:
        raise ValueError(f"word timings need a flite voice, not {voice!r}")
    tokens = text.split()
    phones, raw_duration = _flite_phones(voice, text)
    names = [name for name, _ in phones]
    lead = 1 if names and names[0] == "pau" else 0
    through = _inner_phones(voice, " ".join(tokens[: index + 1]))
    word = _inner_phones(voice, tokens[index])
    if not word or names[lead : lead + len(through)] != through or through[-len(word) :] != word:
        raise ValueError(f"flite's phones of {tokens[index]!r} in {text!r} differ from the word's alone")
    trimmed = len(synthesize(voice, text)) / SAMPLE_RATE
    cut = raw_duration - trimmed  # leading silence removed by the synthesiser
    first = lead + len(through) - len(word)  # index of the word's first phone
    start = phones[first - 1][1] if first > 0 else 0.0
    end = phones[lead + len(through) - 1][1]
    return WordSpan(tokens[index], round(start - cut, 3), round(end - cut, 3))


def render(parts: list[tuple[float, PcmArray]]) -> PcmArray:
    """Mix ``(start_s, pcm)`` parts into one timeline from 0 to the end of the last part."""
    if not parts:
        return np.zeros(0, dtype=np.int16)
    length = max(round(start * SAMPLE_RATE) + len(pcm) for start, pcm in parts)
    mix = np.zeros(length, dtype=np.int32)
    for start, pcm in parts:
        at = round(start * SAMPLE_RATE)
        mix[at : at + len(pcm)] += pcm
    return np.clip(mix, -32768, 32767).astype(np.int16)


def audible(voice: str, text: str) -> tuple[float, float]:
    """Seconds from the start of the synthesised audio to where its speech starts and ends."""
    return speech_span(synthesize(voice, text))
