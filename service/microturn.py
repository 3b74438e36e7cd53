"""The contract between the media node and the model worker.

Every ``MICRO_TURN`` the media node cuts what arrived for a session into one :class:`MicroTurn`; the model
worker steps a batch of them (one per session) and answers each with a :class:`MicroTurnOutput`.
Both are plain data with a lossless ``to_dict``/``from_dict`` so that the worker can live in-process
(embedded default) or in another process behind Redis without either side changing.

:class:`ConversationContext` is the third piece of plain data between them: the conversation so far as
the media node saw it (both sides' words as :class:`Message`, the instructions, background work), from
which a model worker that has not seen a session rebuilds its per-session state
(:meth:`model.base.InteractionModel.restore_session`) -- after a failover, or when a session is moved.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

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


class Message(TypedDict):
    """One side's words in the conversation: the one form of a conversation message everywhere -- the
    model's history, :attr:`BackgroundCall.conversation` (and so the background job's payload), and the
    media node's :class:`ConversationContext`."""

    role: str  # "user" | "assistant"
    content: str
    # Session time in ms the words belong to: when typed text arrived, or the micro-turn in which an
    # utterance was recognised (user) or started to be said (agent). Absent in messages made without a clock.
    t_ms: NotRequired[int]


@dataclass
class BackgroundCall:
    """The model asks the background model to work on something, with the whole conversation."""

    job_id: str  # chosen by the model, so it can recognise the results before the queue answers
    question: str
    conversation: list[Message]  # oldest first
    instructions: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "question": self.question,
            "conversation": self.conversation,
            "instructions": self.instructions,
        }


@dataclass
class UnheardInput:
    """What went to the model in a micro-turn whose output never came back: the model may not have seen it."""

    index: int  # the micro-turn it went with
    texts: list[TextInput] = field(default_factory=list)
    background: list[BackgroundResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "texts": [_text_dict(t) for t in self.texts],
            "background": [b.to_dict() for b in self.background],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnheardInput:
        return cls(
            index=d["index"],
            texts=[TextInput(**t) for t in d["texts"]],
            background=[BackgroundResult(**b) for b in d["background"]],
        )


@dataclass
class ConversationContext:
    """A session's conversation so far, as the media node saw the micro-turns and outputs go by.

    A model worker that steps a session it has no (current) state of -- the session was moved to it, or
    its previous worker died -- rebuilds the session from this: :meth:`replay` hands it the inputs no
    model answered, ``InteractionModel.restore_session`` the rest.
    """

    answered_until: int = 0  # a model worker answered every micro-turn below this index (0: none yet)
    messages: list[Message] = field(default_factory=list)  # both sides' words, oldest first
    instructions: str | None = None  # the session's latest session.update; None: the model's default
    jobs: dict[str, str] = field(default_factory=dict)  # background calls not finished: call id -> question
    background: list[BackgroundResult] = field(default_factory=list)  # news a model heard, oldest first
    unheard: list[UnheardInput] = field(default_factory=list)  # inputs of unanswered micro-turns, in order

    def replay(self, mt: MicroTurn) -> None:
        """Put the unheard typed text and background news of the micro-turns before ``mt`` in front of
        ``mt``'s own, so that the model answers what nobody answered (e.g. typed while a worker was dead)."""
        earlier = [u for u in self.unheard if u.index < mt.index]  # mt's own inputs are on mt already
        mt.texts = [t for u in earlier for t in u.texts] + mt.texts
        mt.background = [b for u in earlier for b in u.background] + mt.background

    def to_dict(self) -> dict[str, Any]:
        return {
            "answered_until": self.answered_until,
            "messages": self.messages,
            "instructions": self.instructions,
            "jobs": self.jobs,
            "background": [b.to_dict() for b in self.background],
            "unheard": [u.to_dict() for u in self.unheard],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConversationContext:
        return cls(
            answered_until=d["answered_until"],
            messages=d["messages"],
            instructions=d["instructions"],
            jobs=d["jobs"],
            background=[BackgroundResult(**b) for b in d["background"]],
            unheard=[UnheardInput.from_dict(u) for u in d["unheard"]],
        )


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

    def to_dict(self, *, with_pcm: bool = True) -> dict[str, Any]:
        """``with_pcm=False`` leaves the audio out, for :func:`pack_batch` (it travels as raw bytes)."""
        d = {
            "session_id": self.session_id,
            "index": self.index,
            "t_ms": self.t_ms,
            "lost_samples": self.lost_samples,
            "has_audio_track": self.has_audio_track,
            "texts": [_text_dict(t) for t in self.texts],
            "instructions": self.instructions,
            "video": self.video.to_dict() if self.video is not None else None,
            "background": [b.to_dict() for b in self.background],
            "closing": self.closing,
        }
        if with_pcm:
            d["pcm"] = _b64(pcm_bytes(self.pcm))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], pcm: PcmArray | None = None) -> MicroTurn:
        """``pcm`` is the audio where ``d`` has none (:func:`unpack_batch`)."""
        return cls(
            session_id=d["session_id"],
            index=d["index"],
            t_ms=d["t_ms"],
            pcm=pcm if pcm is not None else pcm_from_bytes(_unb64(d["pcm"])),
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
    # The agent ends the conversation: the session closes once the audio queued so far has been played
    # (a phone call gets a BYE, a browser a `session.ended` event and a closed connection).
    hangup: bool = False
    # What the camera showed in this micro-turn, as short lines for the person ("repetitions so far: 5",
    # "the light turned green"): the client shows them (`camera.seen` events) whatever the model says.
    seen: list[str] = field(default_factory=list)

    def to_dict(self, *, with_pcm: bool = True) -> dict[str, Any]:
        """``with_pcm=False`` leaves the audio out, for :func:`pack_batch` (it travels as raw bytes)."""
        d = {
            "session_id": self.session_id,
            "index": self.index,
            "hangup": self.hangup,
            "seen": self.seen,
            "action": self.action.value,
            "text": self.text,
            "transcripts": [{"text": t.text, "final": t.final} for t in self.transcripts],
            "user_speaking": self.user_speaking,
            "background_calls": [c.to_dict() for c in self.background_calls],
            "background_cancels": self.background_cancels,
            "error": self.error,
        }
        if with_pcm:
            d["pcm"] = _b64(pcm_bytes(self.pcm))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], pcm: PcmArray | None = None) -> MicroTurnOutput:
        """``pcm`` is the audio where ``d`` has none (:func:`unpack_batch`)."""
        return cls(
            session_id=d["session_id"],
            index=d["index"],
            action=Action(d["action"]),
            text=d["text"],
            pcm=pcm if pcm is not None else pcm_from_bytes(_unb64(d["pcm"])),
            transcripts=[Transcript(**t) for t in d["transcripts"]],
            user_speaking=d["user_speaking"],
            background_calls=[BackgroundCall(**c) for c in d["background_calls"]],
            background_cancels=d["background_cancels"],
            error=d["error"],
            hangup=d.get("hangup", False),  # absent from workers that predate it
            seen=d.get("seen", []),  # likewise
        )


def pack_batch(items: Sequence[MicroTurn] | Sequence[MicroTurnOutput]) -> tuple[bytes, bytes]:
    """The compact form of a batch for a transport: JSON of the items without their audio (each with its
    ``pcm_samples``), and all the audio, in order, as one run of raw s16le bytes.

    Base64 audio in JSON costs a third more bytes and, measured on the Redis transport, about half the
    round trip's time at 8 sessions per batch (bench/worker.py, docs/benchmarks.md).
    """
    header = []
    for item in items:
        d = item.to_dict(with_pcm=False)
        d["pcm_samples"] = len(item.pcm)
        header.append(d)
    return json.dumps(header).encode(), b"".join(pcm_bytes(item.pcm) for item in items)


def unpack_batch(header: bytes | str, pcm: bytes) -> list[tuple[dict[str, Any], PcmArray]]:
    """What :func:`pack_batch` packed, as ``(dict without audio, its audio)`` per item, for ``from_dict``."""
    samples = pcm_from_bytes(pcm)
    items: list[tuple[dict[str, Any], PcmArray]] = []
    at = 0
    for d in json.loads(header):
        n = d.pop("pcm_samples")
        items.append((d, samples[at : at + n]))
        at += n
    if at != len(samples):
        raise ValueError(f"the batch's header names {at} samples of audio, the audio has {len(samples)}")
    return items


def pcm_bytes(pcm: PcmArray) -> bytes:
    return pcm.astype("<i2").tobytes()


def pcm_from_bytes(data: bytes) -> PcmArray:
    return np.frombuffer(data, dtype="<i2").astype(np.int16)  # a copy: frombuffer's array is read-only


def _text_dict(text: TextInput) -> dict[str, Any]:
    return {"t_ms": text.t_ms, "text": text.text}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))
