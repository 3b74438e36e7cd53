"""Cuts one session's inbound audio, text and video into exact 200 ms micro-turns.

Window ``k`` covers session time ``[k·200 ms, (k+1)·200 ms)`` -- sample ``k·3200 + j`` of the session's
16 kHz timeline is ``pcm[j]`` of micro-turn ``k`` -- and windows never shift, whatever the network does.

Clock mapping
-------------
Audio carries the sender's media time (RTP), text and video only their arrival time. A sample with media
time ``m`` is placed at session time ``m + offset + jitter_allowance`` where ``offset`` estimates
``arrival - media_time`` for an undelayed packet:

* It is the minimum ``arrival - media_time`` seen: the least-delayed packet is the best estimate of the
  mapping, so a first packet that happened to be delayed adds no standing latency. A smaller value
  re-anchors at once ("lowering"): a less-delayed packet, a sender clock running fast against ours, or a
  forward jump of the sender's timestamps.
* A minimum alone never rises, yet real paths need it to: a sender clock running slow (100 ppm eats a
  40 ms allowance in under 7 minutes), a lasting increase of the path's delay (route change, a queue
  filling up), or a sender that restarts its timestamps further back. Each would make every later sample
  late, forever. So the offset is also *raised*, but only when every packet for ``RISE_WINDOW`` has
  used up more than half the jitter allowance; a single delayed packet or the burst after a network stall
  never does, because the packets that follow arrive on time again and end the run.

Nothing already cut ever changes, and re-anchoring never writes a sample twice: audio is buffered by
*media* time and mapped onto a window only when that window is cut, with the mapping current then.

* Lowering by ``d`` moves the next window ``d`` further along the media timeline: media that was
  buffered for the skipped ``d`` is discarded (counted in ``skipped_samples``), the window after it is
  continuous.
* Raising by ``d`` would map the next window onto ``d`` of media that was (partly) played already; that
  media is not played again: the window starts with ``d`` of silence (counted as lost). A rise of more
  than ``MAX_AHEAD`` is not a delay but a restart of the sender's timeline, so the guard is dropped along
  with what was buffered under the old timeline.

Audio for a window already cut is *late*: dropped, counted in ``late_samples``. Samples of a cut window
that never arrived are silence and counted in ``MicroTurn.lost_samples``. Until the session has an audio
track (``set_audio_track`` or the first audio) windows carry ``has_audio_track=False`` and
``lost_samples=0``: no microphone is not packet loss, and counting it as loss would report every session
start as a bad network. Once a track exists, time without audio is lost, start-up included.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.microturn import (
    MICRO_TURN_MS,
    SAMPLE_RATE,
    SAMPLES_PER_TURN,
    BackgroundResult,
    MicroTurn,
    PcmArray,
    TextInput,
    VideoFrame,
)

# 40 ms: how much later than the least-delayed packet audio may arrive and still make its window. It is
# latency added to every sample, so it is kept near the jitter of a good path rather than a bad one.
JITTER_ALLOWANCE = 0.040
# 2 s: audio placed further ahead of the next window than this is dropped (counted in ahead_samples).
# It only happens when arrivals run ahead of the cuts (a stalled tick loop, a jumping clock); the limit
# bounds what a session buffers whatever the input: at most this much audio per session.
MAX_AHEAD = 2.000
# 1 s: how long every packet must stay more than half the jitter allowance late before the offset is
# raised. Long enough that the burst after a network stall (which ends in on-time packets) never raises
# it, short enough that a lasting delay increase costs about a second of audio, not the session.
RISE_WINDOW = 1.000

_MAX_AHEAD_SAMPLES = round(MAX_AHEAD * SAMPLE_RATE)
# Pending audio is stored in chunks of the media timeline; one window's worth keeps a cut to at most
# two chunks. They are not aligned to windows: the mapping between the two timelines moves.
_CHUNK = SAMPLES_PER_TURN


class MicroTurnAssembler:
    """Assembles one session's micro-turns; pure and synchronous (call it from one thread).

    Counters (cumulative, for metrics): ``windows_cut``; ``lost_samples`` (silence in cut windows where
    audio never arrived in time); ``late_samples`` (arrived after their window was cut); ``ahead_samples``
    (more than ``MAX_AHEAD`` ahead of the next window); ``duplicate_samples`` (a second copy of a sample
    still buffered: the first copy is kept); ``skipped_samples`` (buffered, then passed over by a lowered
    offset or discarded at a timeline restart); ``anchor_lowered`` and ``anchor_raised`` (re-anchorings
    that moved the mapping by at least a sample).
    """

    def __init__(self, session_id: str, jitter_allowance: float = JITTER_ALLOWANCE) -> None:
        if jitter_allowance < 0:
            raise ValueError(f"jitter_allowance must be >= 0 s, got {jitter_allowance}")
        self.session_id = session_id
        self.jitter_allowance = jitter_allowance

        self.windows_cut = 0
        self.lost_samples = 0
        self.late_samples = 0
        self.ahead_samples = 0
        self.duplicate_samples = 0
        self.skipped_samples = 0
        self.anchor_lowered = 0
        self.anchor_raised = 0

        self._next = 0  # the next window to cut
        self._closed = False
        self._has_audio_track = False
        self._offset: float | None = None  # s, arrival - media_time of an undelayed packet
        self._shift = 0  # session sample = media sample + _shift (offset + allowance, in samples)
        # Media sample up to which windows have been cut: nothing before it is played (again).
        self._played_until: int | None = None
        # Start of the current run of packets later than the rise threshold (session s), and the
        # smallest arrival - media_time in that run: what the offset is raised to if the run lasts.
        self._rise_since: float | None = None
        self._rise_min = 0.0
        # Pending audio: chunk number -> (samples, which of them arrived), media timeline.
        self._chunks: dict[int, tuple[PcmArray, npt.NDArray[np.bool_]]] = {}
        self._texts: dict[int, list[TextInput]] = {}
        self._background: dict[int, list[BackgroundResult]] = {}
        self._instructions: dict[int, str] = {}
        self._video: dict[int, VideoFrame] = {}

    # -- input -------------------------------------------------------------------------------------------
    def set_audio_track(self, present: bool) -> None:
        """Say whether the session has an inbound audio track (call on the peer's ``track`` event).

        With a track, time without audio counts as lost; without one, windows are marked
        ``has_audio_track=False``. The first audio implies a track, so calling this is only needed for
        the time between the track appearing and its first packet, and to mark a track that ended.
        """
        self._has_audio_track = present

    def push_audio(self, pcm: PcmArray, media_time: float, arrival: float) -> None:
        """Add audio that arrived: ``pcm`` 16 kHz mono int16, ``media_time`` the sender's time of
        ``pcm[0]`` in seconds (unwrapped, any origin), ``arrival`` the session time it arrived."""
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise ValueError(f"pcm must be 1-D int16 at {SAMPLE_RATE} Hz, got {pcm.dtype} {pcm.shape}")
        if self._closed:
            return  # media still trickling in while the session is torn down
        self._has_audio_track = True
        if not len(pcm):
            return
        self._observe_offset(arrival - media_time, arrival)
        self._store(round(media_time * SAMPLE_RATE), pcm)

    def push_text(self, text: str, arrival: float) -> None:
        """Typed input: joins the window its arrival falls in (or the next uncut one); never dropped."""
        if self._closed:
            return
        t_ms = _ms(arrival)
        self._texts.setdefault(self._window_at(t_ms), []).append(TextInput(t_ms=t_ms, text=text))

    def push_background(self, result: BackgroundResult) -> None:
        """News of a background job: joins the window it arrived in (or the next uncut one); never dropped."""
        if self._closed:
            return
        self._background.setdefault(self._window_at(result.t_ms), []).append(result)

    def set_instructions(self, instructions: str, arrival: float) -> None:
        """New instructions, carried by the window their arrival falls in (or the next uncut one).

        Two updates within one window: the later wins, as it would replace the earlier one anyway.
        """
        if self._closed:
            return
        self._instructions[self._window_at(_ms(arrival))] = instructions

    def push_video(self, frame: VideoFrame) -> None:
        """A camera frame arrived at ``frame.t_ms``; a window keeps only its latest one."""
        if self._closed:
            return
        window = self._window_at(frame.t_ms)
        kept = self._video.get(window)
        if kept is None or frame.t_ms >= kept.t_ms:
            self._video[window] = frame

    # -- output ------------------------------------------------------------------------------------------
    def cut(self, index: int, closing: bool = False) -> MicroTurn:
        """Close window ``index`` -- always the one after the previous cut -- and return its micro-turn.

        ``closing=True`` marks the session's last micro-turn and releases everything buffered; the
        assembler accepts nothing after it.
        """
        if self._closed:
            raise RuntimeError(f"session {self.session_id}: cut({index}) after the closing micro-turn")
        if index != self._next:
            raise ValueError(
                f"session {self.session_id}: cut({index}) out of order: windows must be cut with "
                f"consecutive indices and the next one is {self._next}"
            )
        pcm = np.zeros(SAMPLES_PER_TURN, dtype=np.int16)
        received = self._take_window(index, pcm) if self._offset is not None else 0
        lost = SAMPLES_PER_TURN - received if self._has_audio_track else 0
        self._next += 1
        self.windows_cut += 1
        self.lost_samples += lost
        turn = MicroTurn(
            session_id=self.session_id,
            index=index,
            t_ms=index * MICRO_TURN_MS,
            pcm=pcm,
            lost_samples=lost,
            has_audio_track=self._has_audio_track,
            texts=self._texts.pop(index, []),
            background=self._background.pop(index, []),
            instructions=self._instructions.pop(index, None),
            video=self._video.pop(index, None),
            closing=closing,
        )
        if closing:
            self._closed = True
            self._chunks.clear()
            self._texts.clear()
            self._background.clear()
            self._instructions.clear()
            self._video.clear()
        return turn

    @property
    def next_index(self) -> int:
        """The window the next ``cut`` must close."""
        return self._next

    @property
    def buffered_samples(self) -> int:
        """Audio samples held for windows not cut yet."""
        return sum(int(filled.sum()) for _, filled in self._chunks.values())

    # -- clock mapping -----------------------------------------------------------------------------------
    def _observe_offset(self, observed: float, arrival: float) -> None:
        """Update the media -> session mapping with one packet's ``arrival - media_time``."""
        if self._offset is None or observed < self._offset:
            shift = self._shift
            first = self._offset is None
            self._set_offset(observed)
            self._rise_since = None
            if not first and self._shift != shift:
                self.anchor_lowered += 1
                # The next window now starts further along the media timeline: what is buffered
                # before it will never be played.
                self._discard_below(self._window_start(self._next))
        elif observed > self._offset + self.jitter_allowance / 2:
            # Half the allowance is left for jitter on top of a lasting rise: raising the offset sooner
            # (or for less) would trade the allowance for latency, later would lose more audio.
            if self._rise_since is None:
                self._rise_since, self._rise_min = arrival, observed
            else:
                self._rise_min = min(self._rise_min, observed)
            if arrival - self._rise_since >= RISE_WINDOW:
                raised_by = self._rise_min - self._offset
                self._set_offset(self._rise_min)
                self.anchor_raised += 1
                self._rise_since = None
                if raised_by > MAX_AHEAD:
                    # The sender's timestamps went back: nothing on the new timeline has been played,
                    # and what is buffered belongs to the old one.
                    self.skipped_samples += self.buffered_samples
                    self._chunks.clear()
                    self._played_until = None
        else:
            self._rise_since = None

    def _set_offset(self, offset: float) -> None:
        self._offset = offset
        self._shift = round((offset + self.jitter_allowance) * SAMPLE_RATE)

    def _window_start(self, index: int) -> int:
        """Media sample that window ``index`` starts at under the current mapping."""
        return index * SAMPLES_PER_TURN - self._shift

    # -- buffering -------------------------------------------------------------------------------------
    def _store(self, start: int, pcm: PcmArray) -> None:
        """Buffer ``pcm`` (media samples from ``start``), dropping what is late or too far ahead."""
        end = start + len(pcm)
        accept_from = self._window_start(self._next)
        if self._played_until is not None:
            # After a raised offset the next window starts on media that was played (or dropped as
            # late) already: a copy of it arriving now must not be played a second time.
            accept_from = max(accept_from, self._played_until)
        accept_until = self._window_start(self._next) + _MAX_AHEAD_SAMPLES
        if start < accept_from:
            self.late_samples += min(end, accept_from) - start
        if end > accept_until:
            self.ahead_samples += end - max(start, accept_until)
        lo, hi = max(start, accept_from), min(end, accept_until)
        if lo >= hi:
            return
        for chunk in range(lo // _CHUNK, (hi - 1) // _CHUNK + 1):
            if chunk not in self._chunks:
                self._chunks[chunk] = (np.zeros(_CHUNK, dtype=np.int16), np.zeros(_CHUNK, dtype=np.bool_))
            samples, filled = self._chunks[chunk]
            a, b = max(lo, chunk * _CHUNK), min(hi, (chunk + 1) * _CHUNK)
            seg = slice(a - chunk * _CHUNK, b - chunk * _CHUNK)
            fresh = ~filled[seg]
            self.duplicate_samples += len(fresh) - int(fresh.sum())
            samples[seg][fresh] = pcm[a - start : b - start][fresh]
            filled[seg] = True

    def _take_window(self, index: int, out: PcmArray) -> int:
        """Move window ``index``'s buffered audio into ``out``; return how many samples it had."""
        lo = self._window_start(index)
        hi = lo + SAMPLES_PER_TURN
        received = 0
        # Nothing is buffered before the window (_store does not accept it, lowering discards it), nor
        # before _played_until: after a raise the window starts with silence where media was played.
        for chunk in [c for c in self._chunks if c * _CHUNK < hi]:
            samples, filled = self._chunks[chunk]
            a, b = max(lo, chunk * _CHUNK), min(hi, (chunk + 1) * _CHUNK)
            if a < b:
                seg = slice(a - chunk * _CHUNK, b - chunk * _CHUNK)
                got = filled[seg]
                out[a - lo : b - lo][got] = samples[seg][got]
                received += int(got.sum())
                filled[seg] = False
            if not filled.any():
                del self._chunks[chunk]
        self._played_until = hi if self._played_until is None else max(self._played_until, hi)
        return received

    def _discard_below(self, media: int) -> None:
        """Drop buffered audio before media sample ``media``, counting it as skipped."""
        for chunk in [c for c in self._chunks if c * _CHUNK < media]:
            filled = self._chunks[chunk][1]
            below = filled[: min(media - chunk * _CHUNK, _CHUNK)]
            self.skipped_samples += int(below.sum())
            below[:] = False
            if not filled.any():
                del self._chunks[chunk]

    def _window_at(self, t_ms: int) -> int:
        """The window that carries something arriving at session time ``t_ms``."""
        return max(t_ms // MICRO_TURN_MS, self._next)


def _ms(seconds: float) -> int:
    # Through whole microseconds: 4.35 * 1000 is 4349.999..., which would floor into the wrong ms.
    return round(seconds * 1_000_000) // 1000
