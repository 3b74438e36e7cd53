"""Long sessions: the state of a session stays bounded however long it runs, and what the user asked for at
the start is remembered for 30 minutes of conversation (bench/long_session.py measures it)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bench.long_session import EVERY_S, TICKS_PER_MINUTE, load_model, long_session, step_session
from model.interaction import (
    CACHE_SLACK,
    DEFAULT_CHECKPOINT,
    INSTRUCTION_PIN,
    InteractionConfig,
    InteractionNet,
    TickModel,
    Vocab,
    encode_scenario,
    preset,
)
from model.scenarios import TEMPLATE_WORDS, TICK_S
from model.speech_agent import HISTORY_KEPT, NEWS_WAITING, ReactiveAgent, SessionState
from model.ticks import SPECIAL_TOKENS, Act
from service.microturn import (
    MICRO_TURN_MS,
    SAMPLES_PER_TURN,
    ConversationContext,
    MicroTurn,
    TextInput,
)

from .test_interaction import feed_scenario

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_long_session_is_the_instruction_then_conversation() -> None:
    session = long_session(seed=3, minutes=4)
    scenario = session.scenario
    assert len(scenario) == 4 * TICKS_PER_MINUTE
    heard = [t for tick in scenario[: session.heard_tick + 1] for t in tick.input.tokens]
    assert {"every", "ten", "seconds", "say", "hop"} <= set(heard)
    says = [k for k, tick in enumerate(scenario) if tick.output.act is Act.SAY]
    assert all(scenario[k].output.words == ("hop",) for k in says)
    # Every ten seconds to the end (a say may yield a micro-turn or two to a <stop> of a reply).
    period = round(EVERY_S / TICK_S)
    assert len(says) >= (len(scenario) - session.heard_tick) // period - 1
    assert all(abs(b - a - period) <= 2 for a, b in itertools.pairwise(says))
    acts = {tick.output.act for tick in scenario}
    assert {Act.ANSWER, Act.ASK} <= acts, "conversation around it: questions, tool requests"


def test_thousands_of_micro_turns_keep_the_session_state_bounded() -> None:
    """The runtime's path (TickModel.step, the model's own outputs fed back) for 10 minutes."""
    model = load_model(None, "tiny", seed=0)
    # A network that always waits, as a trained one does ~97 % of micro-turns: one forward a micro-turn.
    # A random one says six words most micro-turns, which makes this 10x slower and checks nothing more.
    torch.nn.init.zeros_(model.net.norm.weight)
    torch.nn.init.zeros_(model.net.norm.bias)
    cfg = model.cfg
    run = step_session(model, long_session(seed=0, minutes=10), 2 * TICKS_PER_MINUTE, progress=False)
    bound = cfg.cache_bound + CACHE_SLACK
    stream = run.stream
    assert len(run.step_ms) == 10 * TICKS_PER_MINUTE
    assert {out.act for out in run.outputs} == {Act.WAIT}
    assert max(run.cache) <= bound and all(b.capacity == bound for b in run.blocks), "never grew"
    # The Python side: nothing kept per micro-turn or per word heard.
    assert len(stream.pending) <= 1  # the last decided action, fed with the next micro-turn
    assert len(stream.stream.pinner._utterance) <= cfg.pin_utterance_tokens
    assert len(stream.bucket_words) <= cfg.n_buckets


def teacher_forced_retention(cfg: InteractionConfig, minutes: int) -> tuple[list[bool], list[int]]:
    """A long session fed with the scenario's own outputs (as training sees them, so the pins are what a
    trained model's would be) to a network with ``cfg``'s memory. For each micro-turn from the one in
    which the instruction was heard: whether all of it was in the cache, and the instruction pins so far."""
    torch.manual_seed(0)
    vocab = Vocab.build(TEMPLATE_WORDS, cfg.n_buckets)
    model = TickModel(InteractionNet(cfg, vocab.size), vocab)
    session = long_session(seed=0, minutes=minutes)
    scenario = session.scenario
    enc = encode_scenario(scenario, vocab, cfg)
    end = enc.tick_starts[session.heard_tick + 1]  # the instruction's tokens lie before this
    specials = {vocab.ids[t] for t in SPECIAL_TOKENS}
    instruction = [g for g in range(end) if int(enc.ids[g]) not in specials]
    assert (enc.pinned[instruction] == INSTRUCTION_PIN).all(), (
        "a spoken instruction is pinned from its first word"
    )
    stream = model.new_session()
    kept: list[bool] = []
    pins: list[int] = []
    for k in range(len(scenario)):
        feed_scenario(model, stream, scenario[k : k + 1])
        if k < session.heard_tick:
            continue  # the instruction is still being heard
        done = int(enc.tick_starts[k + 1]) if k + 1 < len(scenario) else len(enc)
        pins.append(int(np.count_nonzero(enc.pinned[:done] == INSTRUCTION_PIN)))
        kept.append(set(instruction) <= set(stream.gidx.tolist()))
    assert len(stream.gidx) <= cfg.cache_bound + CACHE_SLACK
    return kept, pins


def test_an_instruction_stays_in_the_cache_for_30_minutes_of_conversation() -> None:
    """The presets' rule: instructions (typed text, utterances with a pin word) and events (decisions,
    result markers) each keep their newest pins under a budget of their own. Conversation pins ~9-11
    instruction tokens a minute ("can you tell me ...", "set a timer for ten seconds") and ~13 event
    tokens, so the small config's 384 instruction pins keep the instruction for 30 minutes (a tiny
    network with the small config's memory: the pins and the cache do not depend on the width)."""
    small = preset("small")
    cfg = preset(
        "tiny", window=small.window, pin_budget=small.pin_budget, event_pin_budget=small.event_pin_budget
    )
    kept, pins = teacher_forced_retention(cfg, minutes=30)
    assert len(kept) > 8900 and all(kept), "kept at every micro-turn since it was heard"
    assert pins[-1] <= cfg.pin_budget


def test_under_the_v1_rule_an_instruction_stays_until_newer_pins_fill_the_budget() -> None:
    """The committed checkpoint's rule (no event budget): one budget for every pinned token, newest first,
    so conversation (~22 pinned tokens a minute) pushes an instruction given at the start out once the
    budget is full: after ~1.5 minutes for the tiny budget of 32, ~7 minutes for the small one of 192."""
    cfg = preset("tiny", event_pin_budget=None)
    kept, pins = teacher_forced_retention(cfg, minutes=4)
    within = [n <= cfg.pin_budget for n in pins]  # every pin is an instruction pin under v1
    assert all(k for k, w in zip(kept, within, strict=True) if w), "kept while all pins so far fit the budget"
    assert not within[-1] and not kept[-1], "4 minutes of conversation pin more than the tiny budget of 32"


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason=f"no trained checkpoint at {DEFAULT_CHECKPOINT}")
def test_the_trained_model_follows_the_instruction_after_five_minutes_as_at_the_start() -> None:
    """What a long session must not lose: what the model did in the first minute, it still does in the
    fifth (by then ~130 tokens were pinned, within the small config's budget of 192)."""
    model = TickModel.load(DEFAULT_CHECKPOINT)
    run = step_session(model, long_session(seed=0, minutes=5), TICKS_PER_MINUTE, progress=False)
    first, last = run.blocks[0].behaviour, run.blocks[-1].behaviour
    if first.get("say_hits", 0) < 0.5 * first["say_targets"]:
        pytest.skip(f"this checkpoint does not follow the instruction even in the first minute: {first}")
    assert last["say_hits"] >= 0.5 * last["say_targets"], last
    assert last.get("say_word_acc", 0.0) >= 0.5, last


# ----------------------------------------------------------------------------------------------------
# Outside the network


def typed(index: int, text: str) -> MicroTurn:
    t_ms = index * MICRO_TURN_MS
    return MicroTurn(
        "s", index, t_ms, np.zeros(SAMPLES_PER_TURN, dtype=np.int16), texts=[TextInput(t_ms, text)]
    )


def test_the_speech_agents_conversation_history_is_bounded() -> None:
    """Every background job carries the conversation before it: bounded, it stays a few KB."""
    agent = ReactiveAgent()  # no warm-up: tool requests need no LLM
    try:
        calls = []
        for i in range(3 * HISTORY_KEPT):
            out = agent.step([typed(i, f"what is {i} plus 7")])[0]
            calls += out.background_calls
        assert len(calls) == 3 * HISTORY_KEPT
        assert len(agent.sessions["s"].history) == HISTORY_KEPT
        assert len(calls[-1].conversation) == HISTORY_KEPT
        assert calls[-1].conversation[-1]["content"] == f"what is {3 * HISTORY_KEPT - 2} plus 7"
        # A session taken over from another worker stays bounded too.
        context = ConversationContext(messages=[{"role": "user", "content": "hi", "t_ms": 0}])
        agent.restore_session("s", context)
        for i in range(2 * HISTORY_KEPT):
            agent.step([typed(100 + i, f"what is {i} times 3")])
        history = agent.sessions["s"].history
        assert (
            len(history) == HISTORY_KEPT
            and history[-1]["content"] == f"what is {2 * HISTORY_KEPT - 1} times 3"
        )
    finally:
        agent.close()


def test_news_waiting_to_be_said_keeps_the_newest() -> None:
    """A model that never says its background news (the network decides when) keeps a bounded queue."""
    state = SessionState()
    for i in range(10 * NEWS_WAITING):
        state.to_say.append(f"result {i}")
    assert len(state.to_say) == NEWS_WAITING
    assert state.to_say[-1] == f"result {10 * NEWS_WAITING - 1}"
