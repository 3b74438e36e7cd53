"""Speech activity on real flite speech, synthetic room noise and digital silence."""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import pytest

from model.tts import FliteSynthesizer
from model.vad import FRAME_SAMPLES, SILENCE_LEVEL_DBFS, Activity, SpeechActivity, frame_levels_dbfs
from service.microturn import SAMPLE_RATE, SAMPLES_PER_TURN, PcmArray

Signal = npt.NDArray[np.float64]


@cache
def speech() -> Signal:
    """A flite sentence (~3 s), cut to whole 20 ms frames."""
    pcm = FliteSynthesizer("slt").synthesize("What is the capital of France? It is Paris, of course.")
    return pcm[: pcm.size - pcm.size % FRAME_SAMPLES].astype(np.float64)


def noise(samples: int, dbfs: float, seed: int = 0) -> Signal:
    """White noise at an RMS level of ``dbfs``."""
    return np.random.default_rng(seed).normal(0.0, 32768.0 * 10.0 ** (dbfs / 20.0), samples)


def seconds(s: float) -> int:
    return int(s * SAMPLE_RATE)


def to_pcm(signal: Signal) -> PcmArray:
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def run(vad: SpeechActivity, signal: Signal, step: int = SAMPLES_PER_TURN) -> list[Activity]:
    """Feed ``signal`` in micro-turns (or ``step``-sample chunks), like the service does."""
    pcm = to_pcm(signal)
    return [vad.update(pcm[i : i + step]) for i in range(0, pcm.size, step)]


def speech_ms(activities: list[Activity]) -> int:
    return sum(a.speech_ms for a in activities)


def vowel_recall(vad: SpeechActivity, clean: Signal, mixed: Signal) -> float:
    """Share of the frames where the clean speech is loud (> -35 dBFS: vowels) that ``vad`` calls speech."""
    loud = frame_levels_dbfs(to_pcm(clean)) > -35.0
    judged = np.array([a.speech_ms > 0 for a in run(vad, mixed, step=FRAME_SAMPLES)])
    return float(judged[loud].mean())


def test_digital_silence_is_never_speech() -> None:
    activities = run(SpeechActivity(), np.zeros(seconds(2.0)))
    assert speech_ms(activities) == 0
    assert all(a.level_dbfs == SILENCE_LEVEL_DBFS for a in activities)


def test_room_noise_alone_is_not_speech() -> None:
    vad = SpeechActivity()
    assert speech_ms(run(vad, noise(seconds(3.0), -65.0))) == 0
    floor = vad.noise_floor_dbfs
    assert floor is not None and -68.0 < floor < -65.0  # the quietest frame sits a little under the RMS


def test_level_is_the_loudest_frames_rms() -> None:
    tone = 16384.0 * np.sin(2 * np.pi * 500.0 * np.arange(SAMPLES_PER_TURN) / SAMPLE_RATE)  # RMS -9.03 dBFS
    tone[: SAMPLES_PER_TURN // 2] *= 0.1  # the first half 20 dB quieter: the level is the loudest frame's
    assert SpeechActivity().update(to_pcm(tone)).level_dbfs == pytest.approx(-9.03, abs=0.05)


def test_most_speech_frames_are_speech() -> None:
    clean = speech()
    vad = SpeechActivity()
    assert speech_ms(run(vad, noise(seconds(1.0), -70.0))) == 0  # a quiet room first
    mixed = clean + noise(clean.size, -70.0, seed=1)
    assert vowel_recall(vad, clean, mixed) > 0.95
    # Counted over the whole sentence, its pauses and quiet consonants included, it is still mostly speech.
    vad = SpeechActivity()
    run(vad, noise(seconds(1.0), -70.0))
    assert speech_ms(run(vad, mixed)) > 0.7 * clean.size / SAMPLE_RATE * 1000


def test_speech_after_a_stretch_of_background_noise() -> None:
    clean = speech()
    vad = SpeechActivity()
    hum = -40.0  # a loud room (fan, traffic): only 25-30 dB under the vowels
    assert speech_ms(run(vad, noise(seconds(5.0), hum))[-10:]) == 0  # adapted within the floor window
    assert vowel_recall(vad, clean, clean + noise(clean.size, hum, seed=2)) > 0.85
    assert speech_ms(run(vad, noise(seconds(2.0), hum, seed=3))) == 0  # back to the hum alone: nothing


def test_quiet_talker_on_a_quiet_line() -> None:
    clean = speech()
    vad = SpeechActivity()
    run(vad, noise(seconds(1.0), -85.0))
    quiet = clean * 10 ** (-25.0 / 20) + noise(clean.size, -85.0, seed=4)  # vowels at about -40 dBFS
    assert vowel_recall(vad, clean, quiet) > 0.9


def test_noise_floor_follows_the_room_up_and_down() -> None:
    vad = SpeechActivity(floor_window_ms=3000)
    run(vad, noise(seconds(2.0), -75.0))
    quiet_floor = vad.noise_floor_dbfs
    assert quiet_floor is not None and quiet_floor < -75.0
    # The room gets 30 dB louder: it looks like speech at first, and after one floor window like background.
    louder = run(vad, noise(seconds(5.0), -45.0, seed=1))
    assert louder[0].speech_ms > 0
    assert speech_ms(louder[-10:]) == 0
    loud_floor = vad.noise_floor_dbfs
    assert loud_floor is not None and -48.0 < loud_floor < -45.0
    # Quieter again: the floor drops within the micro-turn.
    run(vad, noise(SAMPLES_PER_TURN, -75.0, seed=2))
    lowered = vad.noise_floor_dbfs
    assert lowered is not None and lowered < -75.0


def test_lost_audio_does_not_reset_the_floor() -> None:
    """Zeros filled in for lost packets must not make the background noise after them look like speech."""
    vad = SpeechActivity()
    run(vad, noise(seconds(3.0), -45.0))
    assert speech_ms(run(vad, np.zeros(seconds(1.0)))) == 0
    assert speech_ms(run(vad, noise(seconds(1.0), -45.0, seed=1))) == 0


def test_absolute_minimum_level() -> None:
    """On a near-silent line, a faint sound well above the floor is still too quiet to be a talker."""
    faint = np.concatenate([noise(seconds(1.0), -85.0), noise(SAMPLES_PER_TURN, -65.0, seed=1)])
    assert speech_ms(run(SpeechActivity(min_speech_dbfs=-60.0), faint)) == 0
    assert speech_ms(run(SpeechActivity(min_speech_dbfs=-70.0), faint)) > 0  # the minimum is what held it


def test_any_multiple_of_a_frame() -> None:
    """Chunk size changes nothing: every frame is judged against the window that ends with it."""
    mixed = speech() + noise(speech().size, -60.0)
    per_turn, per_frame = SpeechActivity(), SpeechActivity()
    assert speech_ms(run(per_turn, mixed)) == speech_ms(run(per_frame, mixed, step=FRAME_SAMPLES)) > 0
    burst = SpeechActivity()
    run(burst, noise(seconds(1.0), -60.0))
    assert burst.update(to_pcm(noise(3 * FRAME_SAMPLES, -20.0))).speech_ms == 60
    assert burst.update(np.zeros(0, dtype=np.int16)) == Activity(0, SILENCE_LEVEL_DBFS)
    with pytest.raises(ValueError, match="multiple of 320"):
        burst.update(np.zeros(321, dtype=np.int16))
