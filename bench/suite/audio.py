"""Audio analysis: where speech is (by energy) and what was said (by the offline recogniser).

The agent is scored from the audio a user hears, not from its events: its speech segments come from the
level of each 20 ms frame received at the client, its words from transcribing each segment with the same
pocketsphinx recogniser the service uses (model/asr.py). ``response.text`` events are kept beside them as a
cross-check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.asr import StreamingRecognizer
from model.vad import frame_levels_dbfs
from service.client import AUDIBLE_DBFS, level_dbfs
from service.microturn import FRAME_SAMPLES, SAMPLE_RATE, PcmArray

SPEECH_DBFS = -40.0  # a 20 ms frame of the user's synthesised audio louder than this is speech
# Agent speech separated by less than this is one utterance: pauses between the phrases of one reply are
# shorter, while a count "five ... four" one second apart leaves >= 0.5 s between words.
MERGE_GAP_S = 0.4
MIN_SEGMENT_S = 0.06  # shorter bursts are clicks, not speech
TRANSCRIBE_PAD_S = 0.2  # audio kept around a segment for the recogniser (word onsets and offsets)

# The agent's audio as received: (arrival time in case seconds, 16 kHz mono int16) per decoded frame.
Frames = Sequence[tuple[float, PcmArray]]


@dataclass
class AgentSegment:
    """One utterance of the agent as heard at the client (case seconds)."""

    onset_s: float
    offset_s: float
    text: str = ""  # what the recogniser heard
    event_text: str = ""  # what the agent's response.text events said it was saying (cross-check)
    truncated: bool = False  # not heard to its end: the recording ended, or the agent was cut off


def speech_span(pcm: PcmArray, threshold_dbfs: float = SPEECH_DBFS) -> tuple[float, float]:
    """Seconds from the start of ``pcm`` to the start of its first and the end of its last audible
    20 ms frame; (0, 0) when nothing is audible."""
    levels = frame_levels_dbfs(pcm[: len(pcm) - len(pcm) % FRAME_SAMPLES])
    loud = np.flatnonzero(levels > threshold_dbfs)
    if not len(loud):
        return 0.0, 0.0
    return int(loud[0]) * FRAME_SAMPLES / SAMPLE_RATE, (int(loud[-1]) + 1) * FRAME_SAMPLES / SAMPLE_RATE


def segments_from_levels(
    times: Sequence[float],
    loud: Sequence[bool],
    frame_s: float = FRAME_SAMPLES / SAMPLE_RATE,
    merge_gap_s: float = MERGE_GAP_S,
    min_segment_s: float = MIN_SEGMENT_S,
) -> list[tuple[float, float]]:
    """Speech segments (onset, offset) from per-frame times and loudness: loud frames closer than
    ``merge_gap_s`` are one segment; segments shorter than ``min_segment_s`` are dropped."""
    spans: list[list[float]] = []
    for t, is_loud in zip(times, loud, strict=True):
        if not is_loud:
            continue
        if spans and t - spans[-1][1] < merge_gap_s:
            spans[-1][1] = t + frame_s
        else:
            spans.append([t, t + frame_s])
    return [(a, b) for a, b in spans if b - a >= min_segment_s]


def agent_segments(frames: Frames) -> list[AgentSegment]:
    """The agent's utterances in its received audio, by energy (onset = first audible frame's arrival)."""
    times = [t for t, _ in frames]
    loud = [level_dbfs(pcm) > AUDIBLE_DBFS for _, pcm in frames]
    return [AgentSegment(a, b) for a, b in segments_from_levels(times, loud)]


def segment_pcm(frames: Frames, onset_s: float, offset_s: float, pad_s: float = TRANSCRIBE_PAD_S) -> PcmArray:
    chunks = [pcm for t, pcm in frames if onset_s - pad_s <= t < offset_s + pad_s]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class Transcriber:
    """Transcribes agent utterances with the service's pocketsphinx recogniser (one decoder, reused)."""

    def __init__(self) -> None:
        self._recognizer = StreamingRecognizer()

    def __call__(self, pcm: PcmArray) -> str:
        self._recognizer.start()
        self._recognizer.accept(pcm)
        return self._recognizer.finish()

    def transcribe(self, frames: Frames, segments: list[AgentSegment]) -> None:
        """Fill in ``text`` of each segment from its audio."""
        for segment in segments:
            segment.text = self(segment_pcm(frames, segment.onset_s, segment.offset_s))


def attach_event_texts(segments: list[AgentSegment], texts: Sequence[tuple[float, str]]) -> None:
    """Give each segment the ``response.text`` events that arrived from just before its onset (events
    travel ahead of the jitter-buffered audio) to its end; each event goes to one segment."""
    for t, text in texts:
        for segment in segments:
            if segment.onset_s - 0.6 <= t <= segment.offset_s:
                segment.event_text = f"{segment.event_text} {text}".strip()
                break
