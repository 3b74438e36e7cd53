"""The contract between the media node and the model worker.

Every ``MICRO_TURN`` the media node cuts what arrived for a session into one :class:`MicroTurn`; the model
worker steps a batch of them (one per session) and answers each with a :class:`MicroTurnOutput`.
Both are plain data with a lossless ``to_dict``/``from_dict`` so that the worker can live in-process
(embedded default) or in another process behind Redis without either side changing.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

MICRO_TURN = 0.200  # 200 ms: the unit of time in which the model perceives and acts
MICRO_TURN_MS = 200
SAMPLE_RATE = 16000  # 16 kHz mono s16: what the encoders consume and the synthesiser produces
SAMPLES_PER_TURN = 3200  # 200 ms at 16 kHz
FRAME_SAMPLES = 320  # 20 ms at 16 kHz: the output track's packetisation
BACKGROUND_JOB_KIND = "background.answer"  # the job a BackgroundCall becomes on the queue

PcmArray = npt.NDArray[np.int16]


class Action(enum.StrEnum):
    """What the model decided for one micro-turn."""

    SILENT = "silent"  # say nothing
    SPEAK = "speak"  # start an utterance: ``pcm`` holds its first audio
    CONTINUE = "continue"  # keep speaking: ``pcm`` holds the next audio of the utterance
    STOP = "stop"  # cut the current utterance now (e.g. the user talked over it): flush queued audio


@dataclass
class VideoFrame:
    """The latest camera picture seen in a micro-turn, downscaled RGB."""

    t_ms: int  # session time at which the frame arrived
    rgb: npt.NDArray[np.uint8]  # [H, W, 3]

    def to_dict(self) -> dict[str, Any]:
        h, w, _ = self.rgb.shape
        return {"t_ms": self.t_ms, "h": h, "w": w, "rgb": _b64(self.rgb.tobytes())}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoFrame:
        rgb = np.frombuffer(_unb64(d["rgb"]), dtype=np.uint8).reshape(d["h"], d["w"], 3)
        return cls(t_ms=d["t_ms"], rgb=rgb.copy())


@dataclass
class TextInput:
    """Something the user typed, with the session time it arrived."""

    t_ms: int
    text: str


@dataclass
class BackgroundResult:
    """News of a background job, delivered in the micro-turn it arrived in."""

    t_ms: int  # session time it arrived at the media node
    job_id: str
    status: str  # queued | running | partial | done | failed | cancelled
    text: str = ""  # the next phrase of the answer, if this update carries one
    data: dict[str, Any] | None = None  # structured news: {"tool": ...} a tool ran, {"timer": ...} to set

    def to_dict(self) -> dict[str, Any]:
        return {
            "t_ms": self.t_ms,
            "job_id": self.job_id,
            "status": self.status,
            "text": self.text,
            "data": self.data,
        }


@dataclass
class BackgroundCall:
    """The model asks the background model to work on something, with the whole conversation."""

    job_id: str  # chosen by the model, so it can recognise the results before the queue answers
    question: str
    conversation: list[dict[str, str]]  # [{"role": "user"|"assistant", "content": ...}], oldest first
    instructions: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "question": self.question,
            "conversation": self.conversation,
            "instructions": self.instructions,
        }


@dataclass
class MicroTurn:
    """What one session perceived during one 200 ms window [t_ms, t_ms + 200)."""

    session_id: str
    index: int  # window number since the session started; windows never shift or repeat
    t_ms: int  # session time of the window start == index * MICRO_TURN_MS
    pcm: PcmArray  # [SAMPLES_PER_TURN] int16, 16 kHz mono; silence where audio was lost or late
    lost_samples: int = 0  # samples of this window that never arrived in time (filled with silence)
    has_audio_track: bool = True  # False when the session has no inbound audio at all
    texts: list[TextInput] = field(default_factory=list)
    instructions: str | None = None  # set in the window a session.update arrived in
    video: VideoFrame | None = None
    background: list[BackgroundResult] = field(default_factory=list)
    closing: bool = False  # the session ends after this window: release its state

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "index": self.index,
            "t_ms": self.t_ms,
            "pcm": _b64(self.pcm.astype("<i2").tobytes()),
            "lost_samples": self.lost_samples,
            "has_audio_track": self.has_audio_track,
            "texts": [{"t_ms": t.t_ms, "text": t.text} for t in self.texts],
            "instructions": self.instructions,
            "video": self.video.to_dict() if self.video is not None else None,
            "background": [b.to_dict() for b in self.background],
            "closing": self.closing,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MicroTurn:
        return cls(
            session_id=d["session_id"],
            index=d["index"],
            t_ms=d["t_ms"],
            pcm=np.frombuffer(_unb64(d["pcm"]), dtype="<i2").astype(np.int16),
            lost_samples=d["lost_samples"],
            has_audio_track=d["has_audio_track"],
            texts=[TextInput(**t) for t in d["texts"]],
            instructions=d["instructions"],
            video=VideoFrame.from_dict(d["video"]) if d["video"] is not None else None,
            background=[BackgroundResult(**b) for b in d["background"]],
            closing=d["closing"],
        )


@dataclass
class Transcript:
    """The recogniser's current hypothesis of what the user is saying."""

    text: str
    final: bool  # False: a partial that may still change; True: the utterance is over


@dataclass
class MicroTurnOutput:
    """What the model decided for one session in one micro-turn."""

    session_id: str
    index: int  # the MicroTurn.index this answers
    action: Action = Action.SILENT
    text: str = ""  # words the agent starts saying with this micro-turn's audio
    pcm: PcmArray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))  # [N] int16 16 kHz
    transcripts: list[Transcript] = field(default_factory=list)  # updates of the user's words
    user_speaking: bool = False  # the model heard user speech in this micro-turn
    background_calls: list[BackgroundCall] = field(default_factory=list)  # jobs to submit
    background_cancels: list[str] = field(default_factory=list)  # job ids the user no longer wants
    error: str | None = None  # the model failed on this session's micro-turn; the session goes on

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "index": self.index,
            "action": self.action.value,
            "text": self.text,
            "pcm": _b64(self.pcm.astype("<i2").tobytes()),
            "transcripts": [{"text": t.text, "final": t.final} for t in self.transcripts],
            "user_speaking": self.user_speaking,
            "background_calls": [c.to_dict() for c in self.background_calls],
            "background_cancels": self.background_cancels,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MicroTurnOutput:
        return cls(
            session_id=d["session_id"],
            index=d["index"],
            action=Action(d["action"]),
            text=d["text"],
            pcm=np.frombuffer(_unb64(d["pcm"]), dtype="<i2").astype(np.int16),
            transcripts=[Transcript(**t) for t in d["transcripts"]],
            user_speaking=d["user_speaking"],
            background_calls=[BackgroundCall(**c) for c in d["background_calls"]],
            background_cancels=d["background_cancels"],
            error=d["error"],
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))
