"""The SIP bridge against SIPp, a SIP implementation nobody here wrote (Debian's sip-tester).

Each test starts a real node with the bridge on free ports, runs a SIPp scenario from tests/sipp/ against
it, and checks three things: SIPp's verdict (its exit status: every message of the scenario arrived as
scripted), what the bridge really sent back on the wire (RTP captured off the loopback interface, since
SIPp 3.6 cannot report on RTP it receives), and what the node did (sessions, what the model was given,
the log). Callers' speech is flite's, encoded to PCMU and written to a pcap at test time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from model.base import PerSessionModel
from service.microturn import Action, MicroTurn, MicroTurnOutput
from service.sip.ua import SipConfig

from .conftest import NodeFactory, RunningNode, silence, speech
from .fakes import tone
from .sip_tools import (
    LoopbackCapture,
    audible_packets,
    free_udp_port,
    level_dbfs,
    render_scenario,
    run_sipp,
    sipp_command,
    sipp_missing_reason,
    speech_rtp,
    write_pcap,
)

pytestmark = pytest.mark.skipif(sipp_missing_reason() is not None, reason=sipp_missing_reason() or "")

DTMF_PCAPS = Path("/usr/share/sip-tester")  # RFC 4733 recordings shipped with Debian's SIPp
QUESTION = "what is the capital of france"


class PhoneTestModel(PerSessionModel):
    """A small stand-in model for the signalling tests: it records the typed text it is given, answers
    every key press with a 300 ms tone, and on ``dtmf #`` says a tone and hangs up."""

    name = "phone-test"

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.audible_turns = 0

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        out = MicroTurnOutput(session_id=mt.session_id, index=mt.index)
        if level_dbfs(mt.pcm) > -40:
            self.audible_turns += 1
        for typed in mt.texts:
            self.texts.append(typed.text)
            if typed.text.startswith("dtmf"):
                out.action = Action.SPEAK
                out.pcm = tone(0.3, 600.0)
                out.hangup = typed.text == "dtmf #"
        return out

    def close_session(self, session_id: str) -> None:
        pass


async def start_sip_node(
    start_node: NodeFactory, model: PerSessionModel | None = None, **sip: object
) -> RunningNode:
    config = SipConfig(port=free_udp_port(), **sip)  # type: ignore[arg-type]
    if model is None:
        return await start_node(background_workers=0, sip=config)
    return await start_node(model=model, background_workers=0, sip=config)


def sip_target(node: RunningNode) -> str:
    assert node.node.sip is not None
    return f"127.0.0.1:{node.node.sip.local[1]}"


async def sipp(
    node: RunningNode,
    scenario: str,
    workdir: Path,
    media_port: int,
    timeout_s: float = 60,
    extra: Sequence[str] = (),
    **values: object,
) -> None:
    """Run one SIPp call of ``scenario``; fail with SIPp's logs unless SIPp says it went as scripted."""
    path = render_scenario(scenario, workdir, **values)
    command = sipp_command(
        path, sip_target(node), free_udp_port(), media_port, timeout_s=timeout_s, extra=list(extra)
    )
    result = await asyncio.to_thread(run_sipp, command, workdir, timeout_s + 30)
    assert result.returncode == 0, result.explain()


def logged_events(caplog: pytest.LogCaptureFixture, kind: str) -> list[dict[str, object]]:
    """The session events the SIP transport logged (it has no data channel to send them on)."""
    out = []
    for record in caplog.records:
        if record.name == "service.sip.call" and " event " in record.getMessage():
            event = json.loads(record.getMessage().split(" event ", 1)[1])
            if event["type"] == kind:
                out.append(event)
    return out


def send_junk(target: tuple[str, int]) -> list[bytes]:
    """Datagrams no SIP parser should take; returns whatever came back (blocking: run it in a thread)."""
    answers = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        bad_via = (
            b"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0 127.0.0.1:5062;branch=z9hG4bKx\r\n"
            b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\n"
            b"Call-ID: junk\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
        junks = [
            b"\x00\xff" * 300,
            b"INVITE\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            bytes(range(256)) * 4,
            bad_via,
        ]
        for junk in junks:
            s.sendto(junk, target)
            with contextlib.suppress(TimeoutError):
                answers.append(s.recvfrom(65535)[0])
    return answers


def metric(node: RunningNode, sample: str) -> float:
    """The value of one Prometheus sample (name with labels, as rendered) of the node's /metrics."""
    for line in node.node.metrics.render().decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.slow
async def test_spoken_question_over_the_phone_gets_a_spoken_answer(
    start_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(a) SIPp calls, says a flite question as PCMU RTP, listens, hangs up; the reactive model answers."""
    caplog.set_level(logging.INFO)
    node = await start_sip_node(start_node)
    question = np.concatenate([silence(0.6), speech(QUESTION), silence(2.0)])
    pcap = tmp_path / "question.pcap"
    write_pcap(pcap, speech_rtp(question))
    media_port = free_udp_port(even=True)
    with LoopbackCapture({media_port}) as capture:
        started = time.monotonic()
        await sipp(node, "call_speech.xml", tmp_path, media_port, pcap=pcap, listen_ms=14000)
    question_end = started + 0.6 + len(speech(QUESTION)) / 16000

    # SIPp's pcap play really went over the wire to the bridge, and the bridge answered in RTP.
    from_bridge = [c for c in capture.packets if c.src[1] != media_port]
    assert len(from_bridge) > 300, (
        f"the bridge streams 20 ms packets for the whole call, got {len(from_bridge)}"
    )
    assert {c.packet.payload_type for c in from_bridge} == {0}, "PCMU, the caller's first choice"
    audible = audible_packets(from_bridge)
    assert audible, "the agent's answer comes back as audible RTP"
    assert audible[0].arrival > question_end, "nothing audible before the caller finished asking"
    answer = np.concatenate([np.frombuffer(bytes(c.packet.payload), np.uint8) for c in audible])
    assert len(answer) >= 8000 * 0.5, "at least half a second of answer"
    # Paced: 20 ms apart on the wall clock, not a burst.
    gaps = np.diff([c.arrival for c in from_bridge])
    assert 0.015 < float(np.median(gaps)) < 0.025, float(np.median(gaps))

    finals = [str(e["text"]) for e in logged_events(caplog, "transcript.input") if e["final"]]
    # The recogniser heard the caller's words (at least 3, in one or more utterances). They are not checked:
    # telephone audio stops at 4 kHz and pocketsphinx's model is wideband, so even offline G.711 turns
    # "what is the capital of france" into "what if the capital and then" (docs/sip.md, Limits); over
    # the live call runs gave "why the capital and then" and "what a big hit hard".
    assert sum(len(text.split()) for text in finals) >= 3, finals
    said = " ".join(str(e["text"]) for e in logged_events(caplog, "response.text"))
    assert said.strip(), "the agent said something"
    assert await wait_until(lambda: not node.node.sessions), "the BYE closed the session"
    assert any("closed: caller hung up (BYE)" in r.getMessage() for r in caplog.records)


async def test_caller_hanging_up_early_ends_the_session(
    start_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(b) SIPp hangs up 0.8 s into the call, while still talking: 200 to the BYE, session gone, RTP stops."""
    caplog.set_level(logging.INFO)
    model = PhoneTestModel()
    node = await start_sip_node(start_node, model)
    pcap = tmp_path / "talk.pcap"
    write_pcap(
        pcap, speech_rtp(np.concatenate([speech("hello there, I am calling about my order"), silence(1.0)]))
    )
    media_port = free_udp_port(even=True)
    with LoopbackCapture({media_port}) as capture:
        await sipp(node, "call_speech.xml", tmp_path, media_port, pcap=pcap, listen_ms=800)
        hung_up = time.monotonic()
        assert await wait_until(lambda: not node.node.sessions), "the session closed"
        await asyncio.sleep(0.5)
    assert any("closed: caller hung up (BYE)" in r.getMessage() for r in caplog.records)
    from_bridge = [c for c in capture.packets if c.src[1] != media_port]
    assert from_bridge, "the bridge sent RTP while the call was up"
    assert from_bridge[-1].arrival < hung_up + 0.1, "and stopped when it ended"
    assert model.audible_turns >= 2, "the model heard the caller's speech"


async def test_cancel_before_answer_gets_487_and_makes_no_session(
    start_node: NodeFactory, tmp_path: Path
) -> None:
    """(c) SIPp CANCELs while it rings: 200 to the CANCEL, 487 to the INVITE (SIPp checks both)."""
    node = await start_sip_node(start_node, PhoneTestModel(), ring_seconds=5.0)
    await sipp(node, "cancel.xml", tmp_path, free_udp_port(even=True))
    assert metric(node, "microturn_sessions_total") == 0, "a cancelled call never becomes a session"
    assert metric(node, 'microturn_sip_calls_total{outcome="cancelled"}') == 1
    assert node.node.sip is not None and not node.node.sip.calls and node.node.sip.ringing == 0


async def test_malformed_requests_get_400_and_the_bridge_stays_up(
    start_node: NodeFactory, tmp_path: Path
) -> None:
    """(d) Ten kinds of malformed request each get a 400 (SIPp checks), junk datagrams and a request
    whose Via cannot be read are dropped, and a good call still works afterwards."""
    node = await start_sip_node(start_node, PhoneTestModel())
    await sipp(node, "malformed.xml", tmp_path, free_udp_port(even=True))
    assert node.node.sip is not None
    answers = await asyncio.to_thread(send_junk, ("127.0.0.1", node.node.sip.local[1]))
    assert answers == [], "junk without a (well-formed) Via has nobody to answer to"
    # Nine malformed requests from SIPp (the tenth, bad SDP, is well-formed SIP) and the five datagrams.
    assert metric(node, "microturn_sip_malformed_total") == 14
    pcap = tmp_path / "hello.pcap"
    write_pcap(pcap, speech_rtp(speech("hello")))
    await sipp(node, "call_speech.xml", tmp_path, free_udp_port(even=True), pcap=pcap, listen_ms=1000)


async def test_dtmf_reaches_the_model_as_text_and_the_agent_can_hang_up(
    start_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(e) RFC 4733 key presses from Debian's SIPp pcaps reach the model as ``dtmf 5`` and ``dtmf #``;
    the model hangs up on '#': the bridge sends the BYE after the goodbye tone, SIPp answers it."""
    caplog.set_level(logging.INFO)
    model = PhoneTestModel()
    node = await start_sip_node(start_node, model)
    media_port = free_udp_port(even=True)
    with LoopbackCapture({media_port}) as capture:
        await sipp(
            node, "agent_hangs_up.xml", tmp_path, media_port,
            pcap=DTMF_PCAPS / "dtmf_2833_5.pcap", pcap2=DTMF_PCAPS / "dtmf_2833_pound.pcap",
        )  # fmt: skip
    assert model.texts == ["dtmf 5", "dtmf #"], model.texts
    assert [e["digit"] for e in logged_events(caplog, "input.dtmf")] == ["5", "#"]
    assert await wait_until(lambda: not node.node.sessions)
    assert any("closed: agent ended the session" in r.getMessage() for r in caplog.records)
    audible = audible_packets([c for c in capture.packets if c.src[1] != media_port])
    assert len(audible) >= 2 * 12, "both tones (300 ms each) were played before the BYE"
    messages = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*_messages.log"))
    assert 'Reason: Q.850;cause=16;text="agent ended the session"' in messages


async def test_full_node_answers_503_with_retry_after(start_node: NodeFactory, tmp_path: Path) -> None:
    """The node's max_sessions holds for phone calls too: a second call while one is up gets 503."""
    node = await start_sip_node(start_node, PhoneTestModel())
    node.node.config.max_sessions = 1
    pcap = tmp_path / "hold-the-line.pcap"
    write_pcap(pcap, speech_rtp(silence(1.0)))
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    first = asyncio.create_task(
        sipp(node, "call_speech.xml", first_dir, free_udp_port(even=True), pcap=pcap, listen_ms=4000)
    )
    assert await wait_until(lambda: len(node.node.sessions) == 1, timeout=10)
    await sipp(node, "busy.xml", tmp_path, free_udp_port(even=True), status=503, check_retry_after="true")
    await first


async def test_digest_authentication(start_node: NodeFactory, tmp_path: Path) -> None:
    """With users configured an INVITE is challenged (401); SIPp's MD5 digest answer is accepted."""
    node = await start_sip_node(start_node, PhoneTestModel(), users={"alice": "wonderland"})
    await sipp(
        node, "auth.xml", tmp_path, free_udp_port(even=True), extra=["-au", "alice", "-ap", "wonderland"]
    )
    assert metric(node, 'microturn_sip_calls_total{outcome="unauthorized"}') == 1
    assert metric(node, 'microturn_sip_calls_total{outcome="answered"}') == 1


def send_options(target: tuple[str, int]) -> bytes | None:
    """One well-formed OPTIONS from this socket; the answer, or None after a second (blocking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.sendto(
            f"OPTIONS sip:agent@{target[0]}:{target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKallowlist\r\n"
            f"From: <sip:probe@127.0.0.1:{port}>;tag=1\r\nTo: <sip:agent@{target[0]}>\r\n"
            "Call-ID: allow-list-probe\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode(),
            target,
        )
        try:
            return s.recvfrom(65535)[0]
        except TimeoutError:
            return None


async def test_sources_off_the_allow_list_are_dropped(start_node: NodeFactory, tmp_path: Path) -> None:
    """--sip-allow: a source outside the listed networks gets no answer at all (not even a 403, which
    would tell a scanner someone is there); a listed one is served, SIPp's OPTIONS included."""
    refusing = await start_sip_node(start_node, PhoneTestModel(), allow=("192.0.2.0/24",))
    assert refusing.node.sip is not None
    assert await asyncio.to_thread(send_options, refusing.node.sip.local) is None
    assert metric(refusing, "microturn_sip_not_allowed_total") == 1
    assert not refusing.node.sessions

    allowing = await start_sip_node(start_node, PhoneTestModel(), allow=("192.0.2.0/24", "127.0.0.0/8"))
    assert allowing.node.sip is not None
    answer = await asyncio.to_thread(send_options, allowing.node.sip.local)
    assert answer is not None and answer.startswith(b"SIP/2.0 200 OK"), answer
    await sipp(allowing, "options.xml", tmp_path, free_udp_port(even=True), timeout_s=10)
    assert metric(allowing, "microturn_sip_not_allowed_total") == 0


async def test_hold_stops_our_rtp_and_resume_restarts_it(start_node: NodeFactory, tmp_path: Path) -> None:
    """re-INVITE a=sendonly: the answer says recvonly (SIPp checks) and no RTP flows; sendrecv resumes."""
    node = await start_sip_node(start_node, PhoneTestModel())
    media_port = free_udp_port(even=True)
    with LoopbackCapture({media_port}) as capture:
        await sipp(node, "hold.xml", tmp_path, media_port)
    times = np.array([c.arrival for c in capture.packets if c.src[1] != media_port])
    assert len(times) > 100
    gaps = np.sort(np.diff(times))
    assert 1.2 < gaps[-1] < 2.5, f"one silence of about the 1.5 s hold, got {gaps[-1]:.2f} s"
    # Only one: a loaded machine may stall the event loop for a few hundred ms, never for a hold's length.
    assert gaps[-2] < 0.6, f"RTP flowed before and after the hold, longest other gap {gaps[-2]:.2f} s"
