"""The shared conversation context: what the media node records, and what a model rebuilds from it."""

from __future__ import annotations

import json
import time

import numpy as np

from model.speech_agent import ReactiveAgent
from service.conversation import CONTEXT_MESSAGES, ConversationRecord
from service.microturn import (
    MICRO_TURN_MS,
    SAMPLES_PER_TURN,
    Action,
    BackgroundCall,
    BackgroundResult,
    ConversationContext,
    MicroTurn,
    MicroTurnOutput,
    TextInput,
    Transcript,
)

SID = "s1"


def turn(index: int, *texts: str, instructions: str | None = None,
         background: list[BackgroundResult] | None = None) -> MicroTurn:
    t_ms = index * MICRO_TURN_MS
    return MicroTurn(SID, index, t_ms, np.zeros(SAMPLES_PER_TURN, dtype=np.int16),
                     texts=[TextInput(t_ms + 50, text) for text in texts], instructions=instructions,
                     background=background or [])


def test_record_keeps_what_the_model_heard_and_said_and_what_it_did_not_hear() -> None:
    record = ConversationRecord()
    record.sent(turn(0, "Hi, my name is Alice.", instructions="Be terse."))
    assert record.context().messages == [], "typed text is not heard until its micro-turn is answered"
    assert [u.texts[0].text for u in record.context().unheard] == ["Hi, my name is Alice."]
    assert record.context().instructions == "Be terse.", "instructions hold from their micro-turn on"

    record.answered(MicroTurnOutput(SID, 0))
    record.sent(turn(1))
    record.answered(MicroTurnOutput(SID, 1, action=Action.SPEAK, text="Hello Alice."))
    record.sent(turn(2))
    record.answered(MicroTurnOutput(SID, 2, action=Action.CONTINUE, text="Nice to meet you."))
    record.sent(turn(3))
    record.answered(MicroTurnOutput(SID, 3, action=Action.STOP,
                                    transcripts=[Transcript("what is", final=False)]))
    record.sent(turn(4))
    call = BackgroundCall("job1", "what is twelve times thirteen", [], "Be terse.")
    record.answered(MicroTurnOutput(SID, 4, transcripts=[Transcript("what is twelve times thirteen", True)],
                                    background_calls=[call]))
    context = record.context()
    assert context.messages == [
        {"role": "user", "content": "Hi, my name is Alice.", "t_ms": 50},
        {"role": "assistant", "content": "Hello Alice. Nice to meet you.", "t_ms": 200},
        {"role": "user", "content": "what is twelve times thirteen", "t_ms": 800},
    ]
    assert context.jobs == {"job1": "what is twelve times thirteen"} and context.unheard == []
    assert context.answered_until == 5

    done = BackgroundResult(950, "job1", "done", "It is 156.")
    record.sent(turn(5, "are you there", background=[done]))
    record.sent(turn(6, "hello?"))
    context = record.context()
    assert context.jobs == {"job1": "what is twelve times thirteen"}, "the answer was not heard yet"
    assert [(u.index, [t.text for t in u.texts]) for u in context.unheard] == [(5, ["are you there"]),
                                                                             (6, ["hello?"])]
    record.answered(MicroTurnOutput(SID, 5))
    context = record.context()
    assert context.jobs == {} and context.background == [done]
    assert [u.index for u in context.unheard] == [6]

    # What travels through Redis comes back equal.
    assert ConversationContext.from_dict(json.loads(json.dumps(context.to_dict()))) == context


def test_record_changes_version_only_when_the_conversation_changes() -> None:
    record = ConversationRecord()
    record.sent(turn(0))
    record.answered(MicroTurnOutput(SID, 0))
    version = record.version
    for index in range(1, 20):
        record.sent(turn(index))
        record.answered(MicroTurnOutput(SID, index, user_speaking=True))
    assert record.version == version, "silent micro-turns do not make the context to be rewritten"
    assert record.answered_until == 20
    record.answered(MicroTurnOutput(SID, 20, action=Action.SPEAK, text="Hi."))
    assert record.version > version


def test_record_is_bounded() -> None:
    record = ConversationRecord()
    for index in range(3 * CONTEXT_MESSAGES):
        record.sent(turn(index, f"message {index}"))
        record.answered(MicroTurnOutput(SID, index))
    messages = record.context().messages
    assert len(messages) == CONTEXT_MESSAGES
    assert messages[-1]["content"] == f"message {3 * CONTEXT_MESSAGES - 1}"


def test_replay_hands_the_unanswered_inputs_to_the_next_micro_turn_once() -> None:
    record = ConversationRecord()
    news = BackgroundResult(420, "job1", "partial", "Twelve times thirteen")
    record.sent(turn(2, "typed while the worker was dead", background=[news]))
    record.sent(turn(3, "and this too"))
    record.sent(turn(4, "this one is on the micro-turn itself"))
    context = record.context()
    mt = turn(4, "this one is on the micro-turn itself")
    context.replay(mt)
    assert [t.text for t in mt.texts] == ["typed while the worker was dead", "and this too",
                                          "this one is on the micro-turn itself"]
    assert mt.background == [news]


def step_until(agent: ReactiveAgent, first: int, last: int, said: str, log: list[str]) -> MicroTurnOutput:
    """Step silent micro-turns ``first..last`` until the agent starts saying ``said``; ``log`` gets every
    phrase it starts."""
    for index in range(first, last):
        out = agent.step([turn(index)])[0]
        if out.text:
            log.append(out.text)
        if said in out.text:
            return out
        time.sleep(0.02)  # synthesis runs on the model's own thread: give it a moment per micro-turn
    raise AssertionError(f"the agent did not say {said!r} by micro-turn {last}: {log}")


def test_speech_agent_continues_a_conversation_from_its_context() -> None:
    agent = ReactiveAgent()  # no warm-up: nothing here needs the LLM
    try:
        timer = {"seconds": 2.0, "label": "tea", "done_message": "Your tea timer is done."}
        context = ConversationContext(
            answered_until=20,
            messages=[{"role": "user", "content": "My name is Alice.", "t_ms": 1000},
                      {"role": "assistant", "content": "Nice to meet you, Alice.", "t_ms": 1400}],
            instructions="Be terse.",
            jobs={"job1": "what is twelve times thirteen"},
            background=[BackgroundResult(3600, "job2", "done", "", {"timer": timer}),
                        BackgroundResult(1000, "job0", "done", "", {"timer": {**timer, "seconds": 1.0}})],
        )
        agent.step([turn(0, "stale state of an earlier stay")])
        agent.restore_session(SID, context)

        out = agent.step([turn(21, "what is two plus two")])[0]
        (call,) = out.background_calls
        assert [m["content"] for m in call.conversation] == ["My name is Alice.", "Nice to meet you, Alice."]
        assert call.instructions == "Be terse."
        said: list[str] = []
        # The answer of a job the previous worker asked for is still expected, and said.
        news = BackgroundResult(4400, "job1", "done", "Twelve times thirteen is 156.")
        agent.step([turn(22, background=[news])])
        step_until(agent, 23, 40, "156", said)
        # The timer set at 3.6 s is said at 5.6 s; the one due at 2 s went off on the previous worker.
        out = step_until(agent, 40, 80, "tea timer", said)
        assert out.index * MICRO_TURN_MS >= 5600
        for index in range(80, 100):
            said.append(agent.step([turn(index)])[0].text)
        assert sum("timer" in text for text in said) == 1, said
    finally:
        agent.close()
