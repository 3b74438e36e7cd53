"""MicroTurnAssembler: exact 200 ms windows out of a jittery, lossy, reordering network."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from service.assembler import JITTER_ALLOWANCE, MAX_AHEAD, RISE_WINDOW, MicroTurnAssembler
from service.microturn import (
    FRAME_SAMPLES,
    MICRO_TURN,
    SAMPLE_RATE,
    SAMPLES_PER_TURN,
    MicroTurn,
    PcmArray,
    VideoFrame,
)
from tests.fakes import Delivery, LossyTransport, noise, split_frames

SOURCE_SECONDS = 3.0
MEDIA_START = 1234.5  # s: the sender's clock has its own origin
DELAY = 0.0371  # s: one-way path delay, deliberately not a whole number of samples
N_WINDOWS = 15  # 3 s: the last window still lies within the source


def run(
    assembler: MicroTurnAssembler, packets: Sequence[Delivery], n_windows: int = N_WINDOWS
) -> list[MicroTurn]:
    """Drive the assembler like the media node's ticker: window ``k`` is cut at session time
    ``(k+1)·200 ms``, and a packet arriving at or before that makes the cut. Packets arriving after the
    last cut are pushed too (so that late ones are counted)."""
    turns = []
    i = 0
    for k in range(n_windows):
        while i < len(packets) and packets[i].arrival <= (k + 1) * MICRO_TURN:
            assembler.push_audio(packets[i].pcm, packets[i].media_time, packets[i].arrival)
            i += 1
        turns.append(assembler.cut(k))
    for p in packets[i:]:
        assembler.push_audio(p.pcm, p.media_time, p.arrival)
    return turns


def shift_of(packets: Sequence[Delivery]) -> int:
    """Session sample of the source's first sample (media time MEDIA_START): the least-delayed
    packet's offset plus the allowance."""
    offset = min(p.arrival - p.media_time for p in packets)
    return round((offset + JITTER_ALLOWANCE) * SAMPLE_RATE) + round(MEDIA_START * SAMPLE_RATE)


def expected(
    packets: Sequence[Delivery], shift: int, n_windows: int = N_WINDOWS
) -> tuple[PcmArray, npt.NDArray[np.bool_]]:
    """The session timeline the assembler must produce, per sample: a sample of a packet lands at
    media sample + ``shift`` and is kept if it arrived by the cut of its window (the first copy wins)."""
    pcm = np.zeros(n_windows * SAMPLES_PER_TURN, dtype=np.int16)
    got = np.zeros(len(pcm), dtype=np.bool_)
    for p in packets:
        for j, sample in enumerate(p.pcm):
            s = round((p.media_time - MEDIA_START) * SAMPLE_RATE) + j + shift
            if 0 <= s < len(pcm) and not got[s] and p.arrival <= (s // SAMPLES_PER_TURN + 1) * MICRO_TURN:
                pcm[s], got[s] = sample, True
    return pcm, got


def timeline(turns: Sequence[MicroTurn]) -> PcmArray:
    return np.concatenate([t.pcm for t in turns])


def assert_matches(turns: Sequence[MicroTurn], want: PcmArray, got: npt.NDArray[np.bool_]) -> None:
    assert [t.index for t in turns] == list(range(len(turns)))
    assert [t.t_ms for t in turns] == [200 * k for k in range(len(turns))]
    assert all(len(t.pcm) == SAMPLES_PER_TURN and t.pcm.dtype == np.int16 for t in turns)
    np.testing.assert_array_equal(timeline(turns), want)
    lost = [SAMPLES_PER_TURN - int(w.sum()) for w in got.reshape(len(turns), SAMPLES_PER_TURN)]
    assert [t.lost_samples for t in turns] == lost


@pytest.fixture
def source() -> PcmArray:
    return noise(round(SOURCE_SECONDS * SAMPLE_RATE), seed=11)


def test_clean_stream_is_bit_exact(source: PcmArray) -> None:
    packets = LossyTransport(delay=DELAY).deliver(split_frames(source, MEDIA_START))
    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    shift = round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    out = timeline(turns)
    # Before the first sample's slot there was a track but no audio yet: lost; after it, the source.
    np.testing.assert_array_equal(out[:shift], 0)
    np.testing.assert_array_equal(out[shift:], source[: len(out) - shift])
    assert [t.lost_samples for t in turns] == [shift] + [0] * (N_WINDOWS - 1)
    assert all(t.has_audio_track for t in turns)
    assert asm.windows_cut == N_WINDOWS
    assert asm.lost_samples == shift
    assert (asm.late_samples, asm.duplicate_samples, asm.skipped_samples, asm.ahead_samples) == (0, 0, 0, 0)


def test_loss_zeroes_exactly_the_lost_frames(source: PcmArray) -> None:
    frames = split_frames(source, MEDIA_START)
    packets = LossyTransport(seed=3, delay=DELAY, loss=0.15).deliver(frames)
    lost_frames = set(range(len(frames))) - {p.seq for p in packets}
    assert 10 < len(lost_frames) < 40 and 0 not in lost_frames

    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    shift = shift_of(packets)
    want = np.zeros(N_WINDOWS * SAMPLES_PER_TURN, dtype=np.int16)
    want[shift:] = source[: len(want) - shift]
    got = np.zeros(len(want), dtype=np.bool_)
    got[shift:] = True
    for f in lost_frames:
        positions = slice(shift + f * FRAME_SAMPLES, shift + (f + 1) * FRAME_SAMPLES)
        want[positions], got[positions] = 0, False
    assert_matches(turns, want, got)
    assert asm.lost_samples == int((~got).sum())
    assert asm.late_samples == 0


def test_jitter_within_the_allowance_loses_nothing(source: PcmArray) -> None:
    net = LossyTransport(seed=5, delay=DELAY, jitter=0.9 * JITTER_ALLOWANCE, delays={0: 0.0})
    packets = net.deliver(split_frames(source, MEDIA_START))
    assert [p.seq for p in packets] != sorted(p.seq for p in packets)  # jitter > 20 ms reorders too

    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    shift = shift_of(packets)
    assert shift == round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    np.testing.assert_array_equal(timeline(turns)[shift:], source[: N_WINDOWS * SAMPLES_PER_TURN - shift])
    assert [t.lost_samples for t in turns] == [shift] + [0] * (N_WINDOWS - 1)
    assert asm.late_samples == 0


def test_jitter_beyond_the_allowance_is_late_and_windows_never_shift(source: PcmArray) -> None:
    net = LossyTransport(seed=9, delay=DELAY, jitter=3 * JITTER_ALLOWANCE, delays={0: 0.0})
    packets = net.deliver(split_frames(source, MEDIA_START))
    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    shift = shift_of(packets)
    want, got = expected(packets, shift)
    assert_matches(turns, want, got)  # every sample that made it sits exactly where it belongs
    # Late: the samples for the cut windows that are not in them (the rest of the source is buffered).
    for_cut_windows = N_WINDOWS * SAMPLES_PER_TURN - shift
    assert asm.late_samples == for_cut_windows - int(got.sum()) > 10 * FRAME_SAMPLES
    assert asm.buffered_samples == len(source) - for_cut_windows
    assert asm.anchor_raised == 0  # jitter is not a lasting rise of the delay


def test_reordered_frames_within_the_allowance_are_placed_exactly(source: PcmArray) -> None:
    net = LossyTransport(seed=2, delay=DELAY, reorder=0.3, reorder_delay=0.030)
    packets = net.deliver(split_frames(source, MEDIA_START))
    assert sum(a.seq > b.seq for a, b in itertools.pairwise(packets)) > 20

    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    shift = shift_of(packets)
    np.testing.assert_array_equal(timeline(turns)[shift:], source[: N_WINDOWS * SAMPLES_PER_TURN - shift])
    assert asm.lost_samples == shift
    assert asm.late_samples == 0


@pytest.mark.parametrize(
    "delays",
    [
        {0: 0.015},  # the first packet alone is held up, still arriving first
        {k: 0.090 - 0.020 * k for k in range(5)},  # held during setup, released in one burst at 90 ms
    ],
)
def test_a_delayed_first_packet_does_not_shift_windows(source: PcmArray, delays: dict[int, float]) -> None:
    frames = split_frames(source, MEDIA_START)
    clean = run(MicroTurnAssembler("s"), LossyTransport(delay=DELAY).deliver(frames))
    packets = LossyTransport(delay=DELAY, delays=delays).deliver(frames)
    first = packets[0]
    assert first.arrival - first.media_time > min(p.arrival - p.media_time for p in packets) + 0.009

    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    np.testing.assert_array_equal(timeline(turns), timeline(clean))  # no standing latency
    assert [t.lost_samples for t in turns] == [t.lost_samples for t in clean]
    assert asm.anchor_lowered >= 1
    assert (asm.late_samples, asm.skipped_samples) == (0, 0)


def test_duplicates_are_dropped(source: PcmArray) -> None:
    packets = LossyTransport(seed=4, delay=DELAY, duplicate=0.3).deliver(split_frames(source, MEDIA_START))
    copies = len(packets) - len({p.seq for p in packets})
    assert copies > 20

    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    shift = shift_of(packets)
    np.testing.assert_array_equal(timeline(turns)[shift:], source[: N_WINDOWS * SAMPLES_PER_TURN - shift])
    # A copy of a sample still buffered is a duplicate; one of a sample already cut is late.
    assert asm.duplicate_samples + asm.late_samples == copies * FRAME_SAMPLES
    assert asm.duplicate_samples > 0


def test_text_instructions_and_video_attach_to_their_arrival_window() -> None:
    asm = MicroTurnAssembler("s")
    asm.push_text("early", 0.050)
    asm.push_text("on the boundary", 0.200)  # 200 ms starts window 1
    asm.push_text("end of window 1", 0.399)
    asm.push_text("future", 1.010)
    asm.set_instructions("be brief", 0.210)
    asm.set_instructions("be very brief", 0.390)  # the later update of a window wins
    frame_a = VideoFrame(t_ms=220, rgb=np.zeros((2, 2, 3), dtype=np.uint8))
    frame_b = VideoFrame(t_ms=310, rgb=np.ones((2, 2, 3), dtype=np.uint8))
    asm.push_video(frame_b)
    asm.push_video(frame_a)  # older than what the window holds: not kept

    w0, w1 = asm.cut(0), asm.cut(1)
    assert [(t.t_ms, t.text) for t in w0.texts] == [(50, "early")]
    assert [(t.t_ms, t.text) for t in w1.texts] == [(200, "on the boundary"), (399, "end of window 1")]
    assert (w0.instructions, w1.instructions) == (None, "be very brief")
    assert (w0.video, w1.video) == (None, frame_b)

    # Arriving during a window already cut (the tick ran early, or a slow handler): the next window.
    asm.push_text("after its window", 0.350)
    asm.set_instructions("late update", 0.390)
    w2, w3, w4, w5 = (asm.cut(k) for k in range(2, 6))
    assert [(t.t_ms, t.text) for t in w2.texts] == [(350, "after its window")]
    assert w2.instructions == "late update"
    assert w3.texts == w4.texts == []
    assert [(t.t_ms, t.text) for t in w5.texts] == [(1010, "future")]


def test_windows_before_the_audio_track_are_not_lost() -> None:
    asm = MicroTurnAssembler("s")
    before = asm.cut(0)
    assert (before.has_audio_track, before.lost_samples) == (False, 0)

    asm.set_audio_track(True)  # the peer's track event: audio is expected from now on
    waiting = asm.cut(1)
    assert (waiting.has_audio_track, waiting.lost_samples) == (True, SAMPLES_PER_TURN)

    # First audio: media 0 arrives at 0.430 s, so it is placed at 0.470 s = 1520 samples into window 2.
    asm.push_audio(noise(SAMPLES_PER_TURN, seed=1), media_time=0.0, arrival=0.430)
    first = asm.cut(2)
    assert first.lost_samples == round((0.430 + JITTER_ALLOWANCE - 0.400) * SAMPLE_RATE)
    assert asm.lost_samples == SAMPLES_PER_TURN + first.lost_samples


def test_audio_for_a_cut_window_is_late() -> None:
    asm = MicroTurnAssembler("s")
    asm.push_audio(noise(FRAME_SAMPLES), media_time=0.0, arrival=0.0)  # anchors: media 0 -> 40 ms
    asm.cut(0)
    # Media 0.140 s belongs at 0.180 s, in window 0, which is gone; media 0.160 s straddles the boundary.
    asm.push_audio(noise(FRAME_SAMPLES), media_time=0.140, arrival=0.210)
    asm.push_audio(noise(FRAME_SAMPLES), media_time=0.150, arrival=0.215)
    assert asm.late_samples == FRAME_SAMPLES + FRAME_SAMPLES // 2
    assert asm.buffered_samples == FRAME_SAMPLES // 2


def test_cut_must_be_called_with_consecutive_indices() -> None:
    asm = MicroTurnAssembler("s")
    with pytest.raises(ValueError, match="consecutive"):
        asm.cut(1)
    asm.cut(0)
    with pytest.raises(ValueError, match="next one is 1"):
        asm.cut(0)
    with pytest.raises(ValueError, match="consecutive"):
        asm.cut(3)
    last = asm.cut(1, closing=True)
    assert last.closing
    with pytest.raises(RuntimeError, match="closing"):
        asm.cut(2)


def test_memory_stays_bounded_when_arrivals_run_ahead_of_the_cuts() -> None:
    # The tick loop stalls for 10 s while audio keeps arriving: only MAX_AHEAD of it is kept.
    asm = MicroTurnAssembler("s")
    source = noise(10 * SAMPLE_RATE, seed=5)
    for f in split_frames(source):
        asm.push_audio(f.pcm, f.media_time, f.media_time + DELAY)
    assert asm.buffered_samples <= MAX_AHEAD * SAMPLE_RATE
    assert asm.buffered_samples + asm.ahead_samples == len(source)
    first = asm.cut(0)  # what was kept is the start, in place
    shift = round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    np.testing.assert_array_equal(first.pcm[shift:], source[: SAMPLES_PER_TURN - shift])


def test_a_forward_jump_of_the_sender_clock_reanchors_without_shifting(source: PcmArray) -> None:
    jump_at = 75  # frame index: 1.5 s in, the sender's timestamps leap an hour ahead
    packets = [  # arrivals follow the real sending times, whatever the timestamps say
        Delivery(p.seq, p.media_time + (3600.0 if p.seq >= jump_at else 0.0), p.pcm, p.arrival)
        for p in LossyTransport(delay=DELAY).deliver(split_frames(source, MEDIA_START))
    ]
    asm = MicroTurnAssembler("s")
    turns = run(asm, packets)

    shift = round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    want = np.zeros(N_WINDOWS * SAMPLES_PER_TURN, dtype=np.int16)
    want[shift:] = source[: len(want) - shift]
    # When the jumped frame arrives (1.5 s + DELAY), windows up to 1.4 s are cut; what was buffered
    # for later than that under the old timestamps is skipped, and the new audio lands where it belongs.
    jump_arrival = packets[jump_at].arrival
    next_window = int(jump_arrival // MICRO_TURN)
    gap = slice(next_window * SAMPLES_PER_TURN, shift + jump_at * FRAME_SAMPLES)
    want[gap] = 0
    np.testing.assert_array_equal(timeline(turns), want)
    assert asm.skipped_samples == gap.stop - gap.start
    assert asm.anchor_lowered == 1
    assert asm.buffered_samples <= MAX_AHEAD * SAMPLE_RATE


def test_a_backward_jump_of_the_sender_clock_recovers_after_the_rise_window() -> None:
    source = noise(5 * SAMPLE_RATE, seed=8)
    frames = split_frames(source, MEDIA_START)
    jump_at = 50  # 1 s in, the sender restarts its timestamps an hour earlier
    net = LossyTransport(delay=DELAY)
    packets = [
        Delivery(p.seq, p.media_time - (3600.0 if p.seq >= jump_at else 0.0), p.pcm, p.arrival)
        for p in net.deliver(frames)
    ]
    asm = MicroTurnAssembler("s")
    turns = run(asm, packets, n_windows=25)

    # An hour in the past is late, until every packet has been for RISE_WINDOW: then the mapping follows.
    assert asm.anchor_raised == 1
    assert abs(asm.late_samples - RISE_WINDOW * SAMPLE_RATE) <= FRAME_SAMPLES
    shift = round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    recovered = (jump_at * FRAME_SAMPLES + asm.late_samples + shift) // SAMPLES_PER_TURN + 1
    np.testing.assert_array_equal(
        timeline(turns[recovered:]),
        source[recovered * SAMPLES_PER_TURN - shift : 25 * SAMPLES_PER_TURN - shift],
    )
    assert all(t.lost_samples == 0 for t in turns[recovered:])


def test_a_lasting_delay_increase_raises_the_offset_and_never_replays() -> None:
    source = noise(6 * SAMPLE_RATE, seed=6)
    frames = split_frames(source, MEDIA_START)
    step_at, step = 100, 0.100  # 2 s in, the path gets 100 ms slower for good
    net = LossyTransport(delay=DELAY, delays={i: step for i in range(step_at, len(frames))})
    asm = MicroTurnAssembler("s")
    turns = run(asm, net.deliver(frames), n_windows=28)

    assert (asm.anchor_raised, asm.duplicate_samples) == (1, 0)
    # For about RISE_WINDOW each window loses what arrives after its cut: at most its last 60 ms.
    windows_in_rise = RISE_WINDOW / MICRO_TURN + 1
    assert 0 < asm.late_samples <= windows_in_rise * (step - JITTER_ALLOWANCE) * SAMPLE_RATE
    # The raise leaves one hole of its own size, where the next window maps onto media already played.
    assert [t.lost_samples for t in turns].count(round(step * SAMPLE_RATE)) == 1
    out = timeline(turns)
    old_shift = round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    new_shift = old_shift + round(step * SAMPLE_RATE)
    before = (step_at * FRAME_SAMPLES + old_shift) // SAMPLES_PER_TURN * SAMPLES_PER_TURN
    np.testing.assert_array_equal(out[old_shift:before], source[: before - old_shift])
    after = before + round((RISE_WINDOW + 0.4) * SAMPLE_RATE)
    np.testing.assert_array_equal(out[after:], source[after - new_shift : len(out) - new_shift])
    # In between, every sample heard is a source sample later than the one heard before it: nothing is
    # played twice or out of order, whatever fell silent.
    last = -1
    for pos in map(int, np.flatnonzero(out[before:after]) + before):
        later = [i for i in (pos - old_shift, pos - new_shift) if i > last and out[pos] == source[i]]
        assert later, f"session sample {pos} repeats or reorders the source"
        last = min(later)


def test_after_a_raise_a_copy_of_played_audio_is_not_played_again() -> None:
    source = noise(4 * SAMPLE_RATE, seed=12)
    frames = split_frames(source, MEDIA_START)
    step_at, step = 50, 0.100
    slower = {i: step for i in range(step_at, len(frames))}
    packets = LossyTransport(delay=DELAY, delays=slower).deliver(frames)
    asm = MicroTurnAssembler("s")
    k = 0
    for p in packets:
        while (k + 1) * MICRO_TURN < p.arrival:
            asm.cut(k)
            k += 1
        asm.push_audio(p.pcm, p.media_time, p.arrival)
        if asm.anchor_raised:
            break
    assert asm.anchor_raised == 1
    # The last window cut had its first 140 ms on time (the path is 60 ms beyond the allowance). Raised
    # by 100 ms, the mapping puts its media from 100 ms on into the next window: a late copy of it
    # (a retransmission, a duplicate) must be dropped, not heard again.
    old_shift = round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    window_start = (asm.next_index - 1) * SAMPLES_PER_TURN
    f = next(i for i in range(len(frames)) if old_shift + i * FRAME_SAMPLES >= window_start + 1600)
    late_before = asm.late_samples
    asm.push_audio(frames[f].pcm, frames[f].media_time, p.arrival)
    assert asm.late_samples == late_before + FRAME_SAMPLES
    turn = asm.cut(asm.next_index)
    at = old_shift + f * FRAME_SAMPLES + round(step * SAMPLE_RATE) - turn.index * SAMPLES_PER_TURN
    assert at >= 0 and np.all(turn.pcm[at : at + FRAME_SAMPLES] == 0)


def test_a_network_stall_does_not_raise_the_offset(source: PcmArray) -> None:
    frames = split_frames(source, MEDIA_START)
    # 0.5 s without delivery from 1 s on, then everything held back arrives at once.
    held = {i: 1.5 - i * 0.020 for i in range(50, 75)}
    asm = MicroTurnAssembler("s")
    turns = run(asm, LossyTransport(delay=DELAY, delays=held).deliver(frames))

    assert asm.anchor_raised == 0
    shift = round((DELAY + JITTER_ALLOWANCE) * SAMPLE_RATE)
    # Held audio is late where its window was cut before the burst (at 1.5 s + DELAY: windows 0-6),
    # and that is all that is lost.
    cut_before_burst = int((1.5 + DELAY) // MICRO_TURN)
    assert asm.late_samples == cut_before_burst * SAMPLES_PER_TURN - (50 * FRAME_SAMPLES + shift)
    assert sum(t.lost_samples for t in turns[1:]) == asm.late_samples
    resumed = (75 * FRAME_SAMPLES + shift) // SAMPLES_PER_TURN + 1
    np.testing.assert_array_equal(
        timeline(turns[resumed:]),
        source[resumed * SAMPLES_PER_TURN - shift : N_WINDOWS * SAMPLES_PER_TURN - shift],
    )


def test_a_fast_sender_clock_drifts_without_shifting_windows() -> None:
    source = noise(20 * SAMPLE_RATE, seed=7)
    net = LossyTransport(delay=DELAY, sender_ppm=300.0)  # the sender's 20 s last 19.994 s here
    packets = net.deliver(split_frames(source, MEDIA_START))
    asm = MicroTurnAssembler("s")
    turns = run(asm, packets, n_windows=99)

    assert all(len(t.pcm) == SAMPLES_PER_TURN for t in turns)
    assert asm.anchor_lowered > 0 and asm.anchor_raised == 0
    # The 6 ms the sender gains are skipped a sample at a time; nothing is late or doubled.
    assert abs(asm.skipped_samples - 20 * 300e-6 * SAMPLE_RATE) <= 2
    assert (asm.late_samples, asm.duplicate_samples) == (0, 0)
    assert sum(t.lost_samples for t in turns[1:]) == 0


def test_a_slow_sender_clock_raises_the_offset_before_audio_goes_late() -> None:
    source = noise(60 * SAMPLE_RATE, seed=7)
    net = LossyTransport(delay=DELAY, sender_ppm=-500.0)  # falls 20 ms behind every 40 s
    asm = MicroTurnAssembler("s")
    turns = run(asm, net.deliver(split_frames(source, MEDIA_START)), n_windows=290)

    assert asm.anchor_raised == 1
    assert asm.late_samples == 0  # raised at half the allowance: the other half still absorbs jitter
    # The raise leaves a hole of the size it was raised by (the media there was played already).
    assert sum(t.lost_samples for t in turns[1:]) <= (JITTER_ALLOWANCE / 2 + 0.002) * SAMPLE_RATE
