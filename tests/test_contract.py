"""The media node <-> worker contract and the events-channel parser."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.events import (
    MAX_TEXT_CHARS,
    InputText,
    ProtocolError,
    SessionUpdate,
    parse_client_message,
    server_event,
)
from service.microturn import (
    SAMPLES_PER_TURN,
    Action,
    MicroTurn,
    MicroTurnOutput,
    TextInput,
    Transcript,
    VideoFrame,
    pack_batch,
    unpack_batch,
)
from service.session import RtpClock


def test_micro_turn_survives_json_round_trip() -> None:
    rng = np.random.default_rng(1)
    mt = MicroTurn(
        session_id="s1",
        index=7,
        t_ms=1400,
        pcm=rng.integers(-32768, 32767, SAMPLES_PER_TURN, dtype=np.int16),
        lost_samples=320,
        texts=[TextInput(t_ms=1450, text="héllo")],
        instructions="be brief",
        video=VideoFrame(t_ms=1500, rgb=rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)),
        closing=True,
    )
    back = MicroTurn.from_dict(json.loads(json.dumps(mt.to_dict())))
    assert np.array_equal(back.pcm, mt.pcm) and back.pcm.dtype == np.int16
    assert back.video is not None and mt.video is not None
    assert np.array_equal(back.video.rgb, mt.video.rgb)
    assert (back.session_id, back.index, back.t_ms, back.lost_samples, back.closing) == (
        "s1",
        7,
        1400,
        320,
        True,
    )
    assert back.texts == mt.texts and back.instructions == "be brief"


def test_micro_turn_output_survives_json_round_trip() -> None:
    out = MicroTurnOutput(
        session_id="s1",
        index=3,
        action=Action.SPEAK,
        text="Paris.",
        pcm=np.arange(-500, 500, dtype=np.int16),
        transcripts=[Transcript("what is", final=False)],
        user_speaking=True,
        error=None,
        seen=["repetitions so far: 5"],
    )
    back = MicroTurnOutput.from_dict(json.loads(json.dumps(out.to_dict())))
    assert back.action is Action.SPEAK
    assert np.array_equal(back.pcm, out.pcm)
    assert back.transcripts == out.transcripts and back.user_speaking and back.text == "Paris."
    assert back.seen == ["repetitions so far: 5"]


def test_a_micro_turn_output_of_an_older_worker_reads_with_the_defaults() -> None:
    """A worker that predates ``hangup`` and ``seen`` leaves them out: nothing to end, nothing seen."""
    d = MicroTurnOutput(session_id="s1", index=3).to_dict()
    del d["hangup"], d["seen"]
    back = MicroTurnOutput.from_dict(d)
    assert back.hangup is False and back.seen == []


def test_a_packed_batch_carries_its_audio_as_raw_bytes_and_comes_back_equal() -> None:
    rng = np.random.default_rng(2)
    turns = [MicroTurn(session_id=f"s{i}", index=9, t_ms=1800,
                       pcm=rng.integers(-32768, 32767, SAMPLES_PER_TURN, dtype=np.int16),
                       texts=[TextInput(t_ms=1810, text="héllo")]) for i in range(3)]
    outputs = [MicroTurnOutput(session_id="s0", index=9, action=Action.SPEAK, text="Hi.",
                               pcm=np.arange(-700, 700, dtype=np.int16)),
               MicroTurnOutput(session_id="s1", index=9)]  # no audio at all
    header, pcm = pack_batch(turns)
    assert len(pcm) == 3 * SAMPLES_PER_TURN * 2 and b"pcm" not in header.replace(b"pcm_samples", b"")
    back = [MicroTurn.from_dict(d, audio) for d, audio in unpack_batch(header, pcm)]
    assert [(t.session_id, t.texts) for t in back] == [(t.session_id, t.texts) for t in turns]
    for got, sent in zip(back, turns, strict=True):
        assert np.array_equal(got.pcm, sent.pcm) and got.pcm.dtype == np.int16
    back.pop().pcm[0] = 1  # the model may write to what it gets
    header, pcm = pack_batch(outputs)
    outs = [MicroTurnOutput.from_dict(d, audio) for d, audio in unpack_batch(header, pcm)]
    assert [len(o.pcm) for o in outs] == [1400, 0] and np.array_equal(outs[0].pcm, outputs[0].pcm)
    assert outs[0].action is Action.SPEAK and outs[0].text == "Hi."
    with pytest.raises(ValueError, match="samples"):
        unpack_batch(header, pcm[:-2])


def test_rtp_clock_unwraps_across_the_32_bit_boundary() -> None:
    clock = RtpClock()
    start = (1 << 32) - 960
    assert clock.unwrap(start) == 0
    assert clock.unwrap(0) == 960  # wrapped
    assert clock.unwrap(960) == 1920
    assert clock.unwrap(0) == 960  # a reordered earlier packet maps back, not 4 billion ahead


def test_client_messages_parse() -> None:
    assert parse_client_message('{"type": "input.text", "text": "  hi  "}') == InputText("hi")
    assert parse_client_message('{"type": "session.update", "instructions": ""}') == SessionUpdate("")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{", "invalid_json"),
        ("null", "invalid_json"),
        ('{"text": "no type"}', "unknown_type"),
        ('{"type": "input.text", "text": "   "}', "invalid_field"),
        ('{"type": "input.text", "text": "' + "a" * (MAX_TEXT_CHARS + 1) + '"}', "invalid_field"),
        ('{"type": "session.update", "instructions": ["x"]}', "invalid_field"),
        (b"\xff\xfe", "invalid_json"),
    ],
)
def test_bad_client_messages_are_rejected_with_a_code(raw: str | bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as rejected:
        parse_client_message(raw)
    assert rejected.value.code == code
    assert rejected.value.message


def test_server_events_carry_session_time() -> None:
    event = json.loads(server_event("response.text", 1234, text="hi"))
    assert event == {"type": "response.text", "t_ms": 1234, "text": "hi"}
