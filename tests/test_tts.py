"""flite synthesis (the real binary) and phrase splitting."""

from __future__ import annotations

import io
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from model import tts
from model.tts import FliteSynthesizer, clean_text, split_phrases
from model.vad import FRAME_SAMPLES, frame_levels_dbfs
from service.microturn import SAMPLE_RATE, PcmArray

VOICES = ["slt", "rms", "awb", "kal"]
PANGRAM = "The quick brown fox jumps over the lazy dog near the river bank."  # 12 words


def duration_s(pcm: PcmArray) -> float:
    return pcm.size / SAMPLE_RATE


def levels(pcm: PcmArray) -> np.ndarray:
    return frame_levels_dbfs(pcm[: pcm.size - pcm.size % FRAME_SAMPLES])


@pytest.mark.parametrize("voice", VOICES)
def test_speech_is_loud_enough_and_as_long_as_its_words(voice: str) -> None:
    pcm = FliteSynthesizer(voice).synthesize(PANGRAM)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    # Conversational speech runs at 2-4 words per second; flite's voices fall inside 1.5-5.
    assert 12 / 5 < duration_s(pcm) < 12 / 1.5
    frame_levels = levels(pcm)
    assert frame_levels.max() > -25.0  # vowels near full scale, not a whisper
    assert np.mean(frame_levels > -40.0) > 0.6  # and mostly voiced, not a click followed by silence


def test_more_words_take_longer() -> None:
    synth = FliteSynthesizer()
    short = synth.synthesize("Hello there.")
    long = synth.synthesize("Hello there, it is lovely to meet you again after such a long and busy week.")
    assert duration_s(long) > 3 * duration_s(short)


@pytest.mark.parametrize("voice", VOICES)
def test_output_is_16_khz_whatever_the_voice_rate(voice: str) -> None:
    """kal speaks at 8 kHz: its output is resampled, so it lasts as long as flite's own WAV says."""
    raw = subprocess.run(
        ["flite", "-voice", voice, "-t", PANGRAM, "-o", "/dev/stdout"], capture_output=True, check=True
    )
    with wave.open(io.BytesIO(raw.stdout)) as wav:
        native_s = wav.getnframes() / wav.getframerate()
    pcm = FliteSynthesizer(voice).synthesize(PANGRAM)
    # Ours is shorter only by the trimmed leading silence (flite opens with ~0.2 s of it).
    assert native_s - 0.4 < duration_s(pcm) <= native_s + 0.01


def test_8_khz_voice_is_resampled_without_images() -> None:
    """Band-limited resampling leaves the 4-8 kHz band empty; repeating samples would mirror speech into it
    (1e-2 of the power there) and even linear interpolation leaves 1e-3."""
    pcm = FliteSynthesizer("kal").synthesize(PANGRAM).astype(np.float64)
    power = np.abs(np.fft.rfft(pcm)) ** 2
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    assert power[freqs > 4200].sum() / power.sum() < 1e-4


def test_leading_silence_is_trimmed() -> None:
    """flite's ~200 ms of lead-in silence would be latency before the agent is heard."""
    pcm = FliteSynthesizer().synthesize("Sure.")
    first_loud = int(np.argmax(levels(pcm) > -40.0))
    assert first_loud * FRAME_SAMPLES / SAMPLE_RATE < 0.08


def test_fast_enough_for_a_micro_turn() -> None:
    synth = FliteSynthesizer()
    synth.synthesize("warm up")
    started = time.perf_counter()
    pcm = synth.synthesize("I can help with that, the capital of France is Paris.")
    elapsed = time.perf_counter() - started
    assert duration_s(pcm) > 2.5
    assert elapsed < 0.5  # ~0.05 s on an idle core; the bound leaves room for a busy test machine


@pytest.mark.parametrize("text", ["", "   ", "\n\t\r", "😀🎉", "日本語", "...?!", "\x00\x07"])
def test_nothing_to_say_gives_empty_audio(text: str) -> None:
    pcm = FliteSynthesizer().synthesize(text)
    assert pcm.dtype == np.int16 and pcm.size == 0


@pytest.mark.parametrize(
    "text",
    [
        "-voice kal",  # looks like an option
        'Tom\'s "quoted" <tag> {brace} [bracket] back\\slash | pipe & amp ~ ^ `tick`',
        "NUL\x00in\x07the\x1bmiddle\rand\nnewlines",
        "Café naïve façade — “typographic” ‘quotes’…",
        "price: $3.50, 1,000,000 people; 5:30 pm; 100% sure",
        "a" * 300,
    ],
)
def test_odd_text_is_spoken(text: str) -> None:
    pcm = FliteSynthesizer().synthesize(text)
    assert pcm.dtype == np.int16
    assert duration_s(pcm) > 0.3 and levels(pcm).max() > -25.0


def test_text_never_reaches_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for text in (f"; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"' && touch {marker} '"):
        assert FliteSynthesizer().synthesize(text).size > 0
    assert not marker.exists()


def test_clean_text() -> None:
    assert clean_text("Café naïve — “quoted”…") == 'Cafe naive, "quoted"...'
    assert clean_text("tab\there\x00nul\nline 😀 end") == "tab here nul line end"


def test_too_long_text_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        FliteSynthesizer().synthesize("word " * tts.MAX_TEXT_CHARS)


def test_unknown_voice_or_voice_path_is_refused() -> None:
    for voice in ("nosuchvoice", "/etc/passwd", "http://example.com/v.flitevox"):
        with pytest.raises(ValueError, match=r"available: .*slt"):
            FliteSynthesizer(voice)


def test_missing_flite_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install flite"):
        FliteSynthesizer()


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("Hello there! How are you today? I'm fine.", ["Hello there!", "How are you today?", "I'm fine."]),
        # Clauses split at commas, semicolons, colons and spaced dashes ...
        (
            "I checked the forecast, and it will rain tomorrow; take an umbrella - or stay home.",
            ["I checked the forecast,", "and it will rain tomorrow;", "take an umbrella", "or stay home."],
        ),
        # ... but a clause under three words joins its neighbour instead of standing alone.
        ("Well, I think so, but not today.", ["Well, I think so,", "but not today."]),
        ("Sure, I can do that for you.", ["Sure, I can do that for you."]),
        # Abbreviations, initials, decimals and thousands do not end sentences or clauses.
        (
            "Dr. Smith paid $3.50 for 1,000 pens, e.g. blue ones. J. R. R. Tolkien wrote it.",
            ["Dr. Smith paid $3.50 for 1,000 pens,", "e.g. blue ones.", "J. R. R. Tolkien wrote it."],
        ),
        ("So do I. Then we go.", ["So do I.", "Then we go."]),
        # Lines are boundaries, list markers are not spoken.
        (
            "Options:\n- the red one\n- the blue one\n1. Buy milk",
            ["Options:", "the red one", "the blue one", "Buy milk"],
        ),
        ("  Unfinished sentence without an end", ["Unfinished sentence without an end"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("", []),
        ("... !! --", []),
    ],
)
def test_split_phrases(text: str, phrases: list[str]) -> None:
    assert split_phrases(text) == phrases


def test_split_phrases_keeps_every_word() -> None:
    reply = (
        "Paris is the capital of France, and, with about two million people, its largest city. Anything else?"
    )
    assert " ".join(split_phrases(reply)).split() == reply.split()
