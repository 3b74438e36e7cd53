"""OutputAudioTrack: exact 20 ms frames, paced to the wall clock, playing what is queued in order."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusEncoder
from aiortc.mediastreams import MediaStreamError

from service.microturn import FRAME_SAMPLES, SAMPLE_RATE, PcmArray
from service.output_track import FRAME_DURATION, MAX_QUEUED_SAMPLES, RESYNC_AFTER, OutputAudioTrack
from tests.fakes import noise, tone


class SteppedClock:
    """A clock the test moves: ``step()`` advances it by one frame, so ``recv`` never has to wait."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float = FRAME_DURATION) -> None:
        self.now += seconds


async def frames(track: OutputAudioTrack, clock: SteppedClock, n: int) -> list[av.AudioFrame]:
    """Receive ``n`` frames, each exactly when due on the stepped clock."""
    out = []
    for _ in range(n):
        out.append(await track.recv())
        clock.step()
    return out


def pcm_of(frame: av.AudioFrame) -> PcmArray:
    pcm = frame.to_ndarray().reshape(-1)
    assert pcm.dtype == np.int16
    return pcm.astype(np.int16, copy=False)


def pts_of(frame: av.AudioFrame) -> int:
    assert frame.pts is not None
    return frame.pts


async def test_frames_are_20_ms_of_s16_mono_with_pts_in_samples() -> None:
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    track.enqueue(tone(0.1))
    got = await frames(track, clock, 10)  # half tone, half silence: both kinds of frame
    assert track.kind == "audio"
    for i, frame in enumerate(got):
        assert (frame.samples, frame.format.name, frame.layout.name) == (FRAME_SAMPLES, "s16", "mono")
        assert frame.sample_rate == SAMPLE_RATE
        assert frame.time_base == fractions.Fraction(1, SAMPLE_RATE)
        assert frame.pts == i * FRAME_SAMPLES


async def test_frames_encode_to_one_opus_packet_each() -> None:
    # aiortc's Opus encoder gives every packet of a frame the frame's timestamp: 20 ms frames must
    # come out as one packet each, 20 ms (960 ticks at 48 kHz) apart.
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    track.enqueue(tone(0.3))
    encoder = OpusEncoder()
    stamps = []
    for frame in await frames(track, clock, 15):
        payloads, timestamp = encoder.encode(frame)
        assert len(payloads) <= 1  # the first frames may fill the resampler instead
        if payloads:
            stamps.append(timestamp)
    assert len(stamps) >= 12
    assert np.all(np.diff(stamps) == 960)


async def test_enqueued_audio_plays_in_order_then_silence() -> None:
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    speech = tone(1.0)
    track.enqueue(speech)
    assert (track.queued_samples, track.playing) == (SAMPLE_RATE, True)

    got = await frames(track, clock, 53)
    np.testing.assert_array_equal(np.concatenate([pcm_of(f) for f in got[:50]]), speech)
    assert all(not pcm_of(f).any() for f in got[50:])
    assert (track.queued_samples, track.playing) == (0, False)


async def test_chunks_join_seamlessly_and_only_the_final_tail_is_padded() -> None:
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    chunks = [noise(n, seed=n) for n in (1000, 2501, 77)]  # none a whole number of frames
    for chunk in chunks:
        track.enqueue(chunk)
    got = await frames(track, clock, 13)  # 3578 samples: 11 full frames, a 58-sample tail, silence
    played = np.concatenate([pcm_of(f) for f in got])
    joined = np.concatenate(chunks)
    np.testing.assert_array_equal(played[: len(joined)], joined)
    assert not played[len(joined) :].any()


async def test_enqueue_while_playing_appends() -> None:
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    first, second = noise(800, seed=1), noise(800, seed=2)
    track.enqueue(first)
    got = await frames(track, clock, 2)
    track.enqueue(second)  # 160 samples of the first are still queued: the second follows them
    got += await frames(track, clock, 4)
    played = np.concatenate([pcm_of(f) for f in got])
    np.testing.assert_array_equal(played[:1600], np.concatenate([first, second]))


async def test_flush_empties_the_queue_at_once_and_does_not_signal_drained() -> None:
    drained: list[float] = []
    clock = SteppedClock()
    track = OutputAudioTrack(on_drained=lambda: drained.append(clock.now), clock=clock)
    track.enqueue(tone(1.0))
    await frames(track, clock, 5)

    assert track.flush() == SAMPLE_RATE - 5 * FRAME_SAMPLES
    assert (track.queued_samples, track.playing) == (0, False)
    after = await frames(track, clock, 5)
    assert all(not pcm_of(f).any() for f in after)
    await asyncio.sleep(0)  # give a scheduled callback its chance
    assert drained == []
    assert track.flush() == 0


async def test_a_flush_during_the_wait_silences_the_frame_being_waited_for() -> None:
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    await track.recv()  # frame 0 at once; frame 1 is due 20 ms later on the (now frozen) clock
    track.enqueue(tone(0.5))
    pending = asyncio.create_task(track.recv())
    await asyncio.sleep(0)  # recv is now sleeping until frame 1 is due
    track.flush()
    assert not pcm_of(await pending).any()


async def test_on_drained_fires_once_when_the_audio_has_been_played() -> None:
    calls: list[int] = []
    clock = SteppedClock()
    track = OutputAudioTrack(on_drained=lambda: calls.append(track.queued_samples), clock=clock)
    track.enqueue(tone(0.1))  # 5 frames
    await frames(track, clock, 5)
    await asyncio.sleep(0)
    assert calls == [] and track.playing  # the last frame's 20 ms are still playing

    await frames(track, clock, 1)  # the first silent frame: the audio is over
    await asyncio.sleep(0)
    assert calls == [0] and not track.playing

    await frames(track, clock, 10)
    await asyncio.sleep(0)
    assert calls == [0]

    track.enqueue(tone(0.02))  # a new utterance drains on its own
    await frames(track, clock, 2)
    await asyncio.sleep(0)
    assert calls == [0, 0]


async def test_a_failing_on_drained_does_not_break_the_track() -> None:
    def fail() -> None:
        raise RuntimeError("callback bug")

    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    clock = SteppedClock()
    track = OutputAudioTrack(on_drained=fail, clock=clock)
    track.enqueue(tone(0.02))
    await frames(track, clock, 3)
    await asyncio.sleep(0)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert (await track.recv()).samples == FRAME_SAMPLES  # still serving frames


async def test_the_queue_is_bounded_and_refuses_the_excess() -> None:
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    head = noise(FRAME_SAMPLES, seed=3)
    track.enqueue(head)
    track.enqueue(np.ones(MAX_QUEUED_SAMPLES, dtype=np.int16))
    assert track.queued_samples == MAX_QUEUED_SAMPLES
    assert track.overflow_samples == FRAME_SAMPLES
    np.testing.assert_array_equal(pcm_of(await track.recv()), head)  # what plays now is kept


async def test_enqueue_rejects_what_is_not_16_khz_mono_int16() -> None:
    track = OutputAudioTrack()
    with pytest.raises(ValueError, match="int16"):
        track.enqueue(np.zeros(320, dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        track.enqueue(np.zeros((2, 320), dtype=np.int16))


async def test_recv_after_stop_raises() -> None:
    track = OutputAudioTrack()
    await track.recv()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_a_late_caller_catches_up_and_a_stalled_one_resyncs() -> None:
    assert 0.050 < RESYNC_AFTER < 0.500  # the two latenesses below fall on either side
    clock = SteppedClock()
    track = OutputAudioTrack(clock=clock)
    await frames(track, clock, 3)  # frames 0-2 on time; frame 3 due now

    clock.step(0.050)  # 50 ms late: within RESYNC_AFTER, the overdue frames come at once
    caught_up = [await track.recv() for _ in range(3)]
    assert [pts_of(f) for f in caught_up] == [3 * FRAME_SAMPLES, 4 * FRAME_SAMPLES, 5 * FRAME_SAMPLES]
    assert track.resyncs == 0

    clock.step(0.500)  # stalled: the schedule jumps to now instead of sending 25 frames back to back
    frame = await track.recv()
    due = 1000.0 + pts_of(frame) / SAMPLE_RATE
    assert pts_of(frame) > 6 * FRAME_SAMPLES and pts_of(frame) % FRAME_SAMPLES == 0
    assert 0 <= clock.now - due < FRAME_DURATION
    assert track.resyncs == 1


async def test_paced_to_the_wall_clock() -> None:
    track = OutputAudioTrack()
    returned = []
    for _ in range(50):
        await track.recv()
        returned.append(time.monotonic())
    start = returned[0]
    # Never ahead of schedule (frame i is due i * 20 ms after frame 0), whatever the caller does.
    assert all(t >= start + i * FRAME_DURATION - 0.001 for i, t in enumerate(returned))
    assert 49 * FRAME_DURATION - 0.001 <= returned[-1] - start < 49 * FRAME_DURATION + 0.100


async def test_no_burst_after_the_event_loop_stalls() -> None:
    track = OutputAudioTrack()
    speech = tone(2.0)
    track.enqueue(speech)
    await track.recv()
    start = time.monotonic()  # frame 0's time: frame pts p is due at start + p / SAMPLE_RATE
    for _ in range(4):
        await track.recv()
    time.sleep(0.300)  # the event loop is blocked: frames 5-19 are missed

    stalled_at = time.monotonic()
    after = []
    for _ in range(10):
        frame = await track.recv()
        after.append((time.monotonic(), frame))
    # The first frame comes at once, stamped for now (a gap the receiver conceals) ...
    assert after[0][0] - stalled_at < 0.010
    first = pts_of(after[0][1])
    assert first >= (5 + 14) * FRAME_SAMPLES
    assert [pts_of(f) for _, f in after] == [first + i * FRAME_SAMPLES for i in range(10)]
    assert track.resyncs == 1
    # ... the rest are paced on the new schedule, not sent back to back ...
    assert all(t >= start + pts_of(f) / SAMPLE_RATE - 0.001 for t, f in after)
    assert after[-1][0] - after[0][0] >= 8 * FRAME_DURATION
    # ... and no audio was skipped: the speech goes on where it stopped.
    played = np.concatenate([pcm_of(f) for _, f in after])
    np.testing.assert_array_equal(played, speech[5 * FRAME_SAMPLES : 15 * FRAME_SAMPLES])
