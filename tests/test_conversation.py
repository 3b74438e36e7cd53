"""End to end through real WebRTC: an aiortc client speaks flite speech to the real model path."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import numpy as np

from model.asr import word_accuracy
from model.speech_agent import ReactiveAgent
from service.client import AUDIBLE_DBFS, level_dbfs
from service.microturn import MicroTurn, MicroTurnOutput

from .conftest import NodeFactory, silence, speech

QUESTION = "what is the capital of france"


async def test_spoken_question_gets_a_spoken_answer(start_node: NodeFactory, connect) -> None:
    node = await start_node()
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    end_of_speech = client.say(np.concatenate([silence(0.4), speech(QUESTION)]))
    client.say(silence(6.0))

    arrival, _ = await client.wait_for("response.text", timeout=20, after=end_of_speech)
    finals = [e["text"] for e in client.events_of("transcript.input") if e["final"]]
    # pocketsphinx sometimes hears "france" as "friends", depending on where the utterance starts.
    assert any(word_accuracy(QUESTION, text) >= 0.6 for text in finals), finals
    partials = [e for e in client.events_of("transcript.input") if not e["final"]]
    assert partials, "partial hypotheses arrive while the user is still speaking"

    await client.wait_for("response.audio.stopped", timeout=30, after=arrival)
    first = client.received.first_audible(after=end_of_speech)
    assert first is not None, "the agent's answer is audible at the client"
    agent_audio = client.received.pcm()
    assert level_dbfs(agent_audio) > AUDIBLE_DBFS - 20
    texts = [e["text"] for e in client.events_of("response.text")]
    assert " ".join(texts).strip(), "the agent says what it speaks"
    # Nothing audible came back before the user had finished asking.
    assert client.received.first_audible() == first


async def test_typed_question_is_answered_in_speech(start_node: NodeFactory, connect) -> None:
    node = await start_node()
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    sent = time.monotonic()
    client.send({"type": "input.text", "text": "What is the capital of France?"})
    _, started = await client.wait_for("response.audio.started", timeout=20, after=sent)
    _, stopped = await client.wait_for("response.audio.stopped", timeout=30, after=sent)
    assert stopped["reason"] == "done"
    assert stopped["t_ms"] > started["t_ms"]
    said = " ".join(e["text"] for e in client.events_of("response.text"))
    assert "paris" in said.lower(), said
    assert client.received.first_audible(after=sent) is not None


async def test_saying_goodbye_ends_the_session_after_the_agents_goodbye(
    start_node: NodeFactory, connect
) -> None:
    node = await start_node()
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    sent = time.monotonic()
    client.send({"type": "input.text", "text": "Okay, thanks. Goodbye!"})
    _, ended = await client.wait_for("session.ended", timeout=20, after=sent)
    assert ended["reason"] == "agent"
    said = " ".join(e["text"] for e in client.events_of("response.text"))
    assert "goodbye" in said.lower(), said
    # The goodbye was played to its end before the session ended, not cut off.
    _, stopped = await client.wait_for("response.audio.stopped", timeout=1, after=sent)
    assert stopped["reason"] == "done"
    assert client.received.first_audible(after=sent) is not None


async def test_user_talking_over_the_agent_stops_it_within_a_micro_turn(
    start_node: NodeFactory, connect
) -> None:
    node = await start_node()
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    client.send(
        {"type": "input.text", "text": "Tell me a long story about a dragon who learns to bake bread."}
    )
    _, _ = await client.wait_for("response.audio.started", timeout=20)
    await asyncio.sleep(0.6)  # the agent is mid-utterance
    interrupt_at = time.monotonic()
    client.say(speech("wait wait stop please"))
    _, stopped = await client.wait_for("response.audio.stopped", timeout=5, after=interrupt_at)
    assert stopped["reason"] == "interrupted"
    await asyncio.sleep(1.5)
    last = client.received.last_audible(after=interrupt_at)
    assert last is not None and last - interrupt_at < 1.0, (
        "agent audio stops soon after the user talks over it"
    )


async def test_bad_events_get_errors_and_the_session_goes_on(start_node: NodeFactory, connect) -> None:
    node = await start_node()
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=5)
    for raw, code in [
        ("this is not json", "invalid_json"),
        ('["type", "input.text"]', "invalid_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "input.text"}', "invalid_field"),
        ('{"type": "input.text", "text": 42}', "invalid_field"),
        ('{"type": "input.text", "text": "' + "x" * 2001 + '"}', "invalid_field"),
    ]:
        sent = time.monotonic()
        client.send_raw(raw)
        _, error = await client.wait_for("error", timeout=5, after=sent)
        assert error["code"] == code, (raw[:40], error)
    sent = time.monotonic()
    client.send({"type": "input.text", "text": "What is the capital of France?"})
    await client.wait_for("response.text", timeout=20, after=sent)


class FaultyAgent(ReactiveAgent):
    """The real agent, except that it raises on a session that typed the word 'fault'."""

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        if any(t.text == "fault" for t in mt.texts):
            raise RuntimeError("injected fault")
        return super().step_session(mt)


async def test_a_model_fault_in_one_session_leaves_the_others_alone(start_node: NodeFactory, connect) -> None:
    node = await start_node(model=FaultyAgent())
    victim = await connect(node.url)
    bystander = await connect(node.url)
    await victim.wait_for("session.started", timeout=5)
    await bystander.wait_for("session.started", timeout=5)
    sent = time.monotonic()
    victim.send({"type": "input.text", "text": "fault"})
    bystander.send({"type": "input.text", "text": "What is the capital of France?"})
    _, error = await victim.wait_for("error", timeout=5, after=sent)
    assert error["code"] == "model_error" and "injected fault" in error["message"]
    await bystander.wait_for("response.text", timeout=20, after=sent)
    assert bystander.events_of("error") == []
    # The victim keeps its media and keeps being stepped, and can still be answered.
    turns_before = len(victim.events_of("turn"))
    later = time.monotonic()
    victim.send({"type": "input.text", "text": "What is the capital of France?"})
    await victim.wait_for("response.text", timeout=20, after=later)
    assert len(victim.events_of("turn")) > turns_before
    assert len(node.node.sessions) == 2


CLIENT_SCRIPT = """
import asyncio, sys
from service.client import AgentClient

async def main():
    client = AgentClient(sys.argv[1])
    await client.connect()
    await client.wait_for("session.started", timeout=10)
    print("connected", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_vanished_client_is_released(start_node: NodeFactory) -> None:
    node = await start_node()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, node.url],
        stdout=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    try:
        line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == b"connected"
        (session,) = node.node.sessions.values()
        # No goodbye: the client process dies with its sockets, as a crashed browser tab would.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        deadline = time.monotonic() + 25
        while node.node.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert node.node.sessions == {}, "the session of a vanished client is released"
        assert session.closed and "client gone" in session.close_reason
        leftovers = [t for t in asyncio.all_tasks() if session.id in t.get_name() and not t.done()]
        assert leftovers == []
        assert session.pc.connectionState == "closed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
