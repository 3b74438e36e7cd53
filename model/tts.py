"""Speech synthesis with flite, the Debian package's command-line synthesiser.

One ``flite`` process per phrase: it starts and speaks a 3 s sentence in ~40 ms, far below the
200 ms micro-turn, so a library binding would buy nothing but a build dependency. The text goes in as one
argument of an argument list (never through a shell) after cleaning, and the WAV comes back on a pipe.

Replies are spoken phrase by phrase (:func:`split_phrases`) so that the first phrase plays while the rest of
the reply is still being written, and so that an interruption cuts the reply at a phrase the listener heard.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import unicodedata
import wave

import av
import numpy as np

from model.vad import FRAME_SAMPLES, frame_levels_dbfs
from service.microturn import SAMPLE_RATE, PcmArray

# flite's output for even a very long sentence is far below this; the limit only catches a hung process.
SYNTH_TIMEOUT_S = 30.0
# A reply longer than this (about 5 minutes of speech) is a caller bug, and a single argument has to stay
# well below Linux's 128 KiB limit on one argv string.
MAX_TEXT_CHARS = 5000
# flite opens every utterance with ~200 ms of near-silence: pure latency before the agent is heard, so it is
# trimmed to this margin. The closing silence stays: it is the natural pause before the next phrase.
LEAD_MARGIN_MS = 20
LEAD_SILENCE_BELOW_PEAK_DB = 45.0  # dB under the loudest frame that count as leading silence

# Phrases shorter than this many words are joined to the next clause of their sentence: a lone "Well," or
# "So," synthesised on its own gets a full phrase-final intonation and pause, which sounds halting.
MIN_CLAUSE_WORDS = 3
# Abbreviations whose full stop does not end a sentence (lower case, without the final dot).
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "approx"})

# Typographic punctuation an LLM likes, mapped to the ASCII that flite phrases on. flite's English front end
# silently skips every non-ASCII byte ("café" comes out as "caf"), so accents are stripped to keep the
# letter, and what is left (emoji, other scripts) is dropped.
_ASCII_PUNCTUATION = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": ",", "—": ",", "…": "..."})
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+[-–—]+\s+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")  # "- ", "* ", "• ", "1. ", "2) "
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[,.;:!?])")


def clean_text(text: str) -> str:
    """Reduce ``text`` to printable ASCII words for flite: accents stripped, control characters,
    emoji and other scripts removed, whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_PUNCTUATION))
    kept = [
        ch if ch.isascii() and ch.isprintable() else " "
        for ch in decomposed
        if not unicodedata.combining(ch)  # the accent of a decomposed letter: "é" -> "e"
    ]
    return _SPACE_BEFORE_PUNCTUATION.sub("", " ".join("".join(kept).split()))


def split_phrases(text: str) -> list[str]:
    """Split a reply into speakable phrases at line, sentence and clause boundaries.

    Sentences always stand alone; clauses (after ``,`` ``;`` ``:`` or a spaced dash) are joined until they
    have :data:`MIN_CLAUSE_WORDS` words. Punctuation stays with its phrase because flite reads intonation
    from it. Pieces with nothing to say (no letter or digit) are dropped.
    """
    phrases: list[str] = []
    for line in text.splitlines():
        for sentence in _sentences(_LIST_MARKER.sub("", line)):
            phrases.extend(_clauses(sentence))
    return [p for p in phrases if any(ch.isalnum() for ch in p)]


def _sentences(line: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(line):
        words = line[start : match.start()].split()
        last_word = words[-1] if words else ""
        is_initial = len(last_word) == 1 and last_word.isupper() and last_word != "I"  # "J. R. R. Tolkien"
        if match.group().startswith(".") and (last_word.lower() in _ABBREVIATIONS or is_initial):
            continue
        sentences.append(line[start : match.end()])
        start = match.end()
    sentences.append(line[start:])
    return [" ".join(s.split()) for s in sentences if s.strip()]


def _clauses(sentence: str) -> list[str]:
    clauses: list[str] = []
    pending = ""
    for piece in _CLAUSE_END.split(sentence):
        pending = f"{pending} {piece}".strip() if pending else piece.strip()
        if len(pending.split()) >= MIN_CLAUSE_WORDS:
            clauses.append(pending)
            pending = ""
    if pending:  # a short tail joins the clause before it rather than standing alone
        if clauses:
            clauses[-1] = f"{clauses[-1]} {pending}"
        else:
            clauses.append(pending)
    return clauses


def available_voices(binary: str = "flite") -> list[str]:
    """The voices compiled into the installed flite (``flite -lv``)."""
    listing = subprocess.run(
        [binary, "-lv"], capture_output=True, text=True, check=True, timeout=SYNTH_TIMEOUT_S
    )
    # "Voices available: kal awb_time kal16 awb rms slt"
    return listing.stdout.partition(":")[2].split()


class FliteSynthesizer:
    """Text to 16 kHz mono int16 speech with one flite voice. Stateless per call, so thread-safe."""

    def __init__(self, voice: str = "slt") -> None:
        binary = shutil.which("flite")
        if binary is None:
            raise RuntimeError("flite is not installed; install it with: apt-get install flite")
        voices = available_voices(binary)
        # Only built-in names: flite would also take a path or a URL to a voice file here.
        if voice not in voices:
            raise ValueError(f"unknown flite voice {voice!r}; available: {', '.join(voices)}")
        self.voice = voice
        self._binary = binary

    def synthesize(self, text: str) -> PcmArray:
        """Speak ``text``; an empty array when there is nothing speakable in it."""
        cleaned = clean_text(text)
        if not any(ch.isalnum() for ch in cleaned):
            return np.zeros(0, dtype=np.int16)
        if len(cleaned) > MAX_TEXT_CHARS:
            raise ValueError(
                f"text of {len(cleaned)} characters is over the {MAX_TEXT_CHARS} limit; split it"
            )
        # "-t" takes the next argument verbatim, so text that looks like an option is still spoken.
        command = [self._binary, "-voice", self.voice, "-t", cleaned, "-o", "/dev/stdout"]
        result = subprocess.run(command, capture_output=True, timeout=SYNTH_TIMEOUT_S, check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"flite exited with {result.returncode}: {stderr}")
        pcm, rate = _read_wav(result.stdout)
        if rate != SAMPLE_RATE:
            pcm = _resample(pcm, rate)
        return _trim_leading_silence(pcm)


def _read_wav(data: bytes) -> tuple[PcmArray, int]:
    with wave.open(io.BytesIO(data)) as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise RuntimeError(f"flite wrote {wav.getnchannels()} channels of {wav.getsampwidth()} bytes")
        frames = wav.readframes(wav.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.int16), wav.getframerate()


def _resample(pcm: PcmArray, rate: int) -> PcmArray:
    """Resample to SAMPLE_RATE with libswresample (PyAV): band-limited, unlike sample repetition."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frames = resampler.resample(frame) + resampler.resample(None)  # None flushes the filter's tail
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)


def _trim_leading_silence(pcm: PcmArray) -> PcmArray:
    whole = pcm[: pcm.size - pcm.size % FRAME_SAMPLES]
    if whole.size == 0:
        return pcm
    levels = frame_levels_dbfs(whole)
    first_loud = int(np.argmax(levels > levels.max() - LEAD_SILENCE_BELOW_PEAK_DB))
    start = max(0, first_loud * FRAME_SAMPLES - SAMPLE_RATE * LEAD_MARGIN_MS // 1000)
    return pcm[start:]
