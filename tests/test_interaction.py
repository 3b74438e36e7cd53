"""The trained interaction network (model/interaction.py) and its trainer (model/train.py): CPU, tiny."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.interaction import (
    CACHE_SLACK,
    DEFAULT_CHECKPOINT,
    EVENT_PIN,
    INSTRUCTION_PIN,
    NOT_PINNED,
    InteractionConfig,
    InteractionNet,
    SessionStream,
    TickModel,
    Vocab,
    attention_mask,
    encode_scenario,
    load_checkpoint,
    preset,
    save_checkpoint,
    tick_tokens,
    word_bucket,
)
from model.ticks import (
    MAX_SAY_WORDS,
    REP,
    SPECIAL_TOKENS,
    SPECIAL_TOKENS_V1,
    Act,
    Scenario,
    Tick,
    TickInput,
    TickOutput,
)
from model.train import (
    SETTINGS,
    DataSource,
    TrainSettings,
    behaviour,
    crop_indices,
    format_metrics,
    loss_of,
    main,
    make_batch,
    match_events,
    run_sessions,
    say_by_kind,
    schedule_scenario,
    train,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A window and pin budgets small enough that a short scenario evicts tokens and overflows every budget.
SMALL_MEMORY: dict[str, Any] = {"window": 16, "pin_budget": 5, "event_pin_budget": 2}


def random_model(cfg: InteractionConfig, seed: int = 0, known: tuple[str, ...] = ()) -> TickModel:
    torch.manual_seed(seed)
    vocab = Vocab.build(known, cfg.n_buckets)
    return TickModel(InteractionNet(cfg, vocab.size), vocab)


def spoken(text: str) -> list[Tick]:
    """One recognised word per micro-turn, the user speaking."""
    return [Tick(TickInput(user_speaking=True, tokens=(w,))) for w in text.split()]


def mixed_scenario() -> Scenario:
    """Typed text, a spoken instruction (pin words), chatter that is not pinned, says and a stop."""
    ticks = [Tick(TickInput(tokens=("<typed>", "remind", "me", "to", "blorf", "</typed>")))]
    ticks += spoken("in ten seconds tell me to zorp")
    ticks += spoken("rojo <means> red nice weather")
    for t in range(70):
        out = TickOutput(Act.SAY, ("zorp", "now")) if t % 10 == 0 else TickOutput()
        ticks.append(Tick(TickInput(agent_speaking=t % 10 == 1), out))
    ticks.append(Tick(TickInput(tokens=("<result>", "it", "is", "noon", "</result>")), TickOutput(Act.NEWS)))
    ticks.append(Tick(TickInput(user_speaking=True, tokens=("stop",)), TickOutput(Act.STOP)))
    return ticks


def full_forward_logits(model: TickModel, scenario: Scenario) -> torch.Tensor:
    """Log-probabilities after every token of the scenario, from one forward over the whole sequence."""
    enc = encode_scenario(scenario, model.vocab, model.cfg)
    ids, pos, off = (torch.from_numpy(a)[None] for a in (enc.ids, enc.pos, enc.offset))
    gidx = torch.arange(len(enc))[None]
    mask = attention_mask(
        gidx, gidx, torch.from_numpy(enc.pinned)[None], model.cfg.window, model.cfg.pin_budgets
    )
    with torch.no_grad():
        return model.net(ids, pos, off, mask)[0][0]  # [N, V]


# ----------------------------------------------------------------------------------------------------
# Vocabulary and buckets


def test_word_bucket_is_blake2_and_stable() -> None:
    digest = hashlib.blake2b(b"zorp", digest_size=8).digest()
    assert word_bucket("zorp", 2048) == int.from_bytes(digest, "little") % 2048
    vocab = Vocab.build(["breathe"], 256)
    assert vocab.encode("breathe") == vocab.encode("Breathe") < vocab.bucket_base
    assert vocab.encode("twenty") < vocab.bucket_base  # number words are known
    assert vocab.encode("zorp") == vocab.bucket_base + word_bucket("zorp", 256)
    assert vocab.encode("<act>") < vocab.n_special


def colliding_words(n_buckets: int) -> tuple[str, str]:
    seen: dict[int, str] = {}
    for a, b, c in itertools.product("bdfgklmnprstvz", "aeiou", "bdfgklmnprstvz"):
        word = f"{a}{b}{c}o"
        bucket = word_bucket(word, n_buckets)
        if bucket in seen:
            return seen[bucket], word
        seen[bucket] = word
    raise AssertionError("no collision found")


def test_bucket_copy_maps_back_to_most_recent_input_word() -> None:
    model = random_model(preset("tiny"))
    first, second = colliding_words(model.vocab.n_buckets)
    bucket = model.vocab.encode(first)
    assert model.vocab.encode(second) == bucket
    s = model.new_session()
    model.step([s], [TickInput(user_speaking=True, tokens=(first,))])
    assert s.stream.word(bucket) == first
    model.step([s], [TickInput(user_speaking=True, tokens=(second,))])
    assert s.stream.word(bucket) == second  # the most recent input word of this session
    assert bool(s.bucket_seen[bucket - model.vocab.bucket_base])
    other = model.new_session()
    assert other.stream.word(bucket) is None  # per session


def test_said_words_are_only_known_words_or_heard_buckets() -> None:
    """Greedy decoding never emits a bucket the session has not heard: every said word is sayable."""
    model = random_model(preset("tiny"), seed=3)
    # Bias the output towards <say> and towards an unheard bucket, then check what comes out.
    with torch.no_grad():
        model.net.tok_emb.weight[model.vocab.act_ids[Act.SAY]] += 5.0
    s = model.new_session()
    heard = ("zorp", "blorf")
    out = model.step([s], [TickInput(tokens=heard)])[0]
    if out.act is Act.SAY:
        assert 1 <= len(out.words) <= MAX_SAY_WORDS
        for w in out.words:
            assert w in heard or model.vocab.encode(w) < model.vocab.bucket_base


# ----------------------------------------------------------------------------------------------------
# Attention mask and streaming


def brute_force_mask(gidx: list[int], pins: list[int], window: int, budgets: tuple[int, int]) -> np.ndarray:
    n = len(gidx)
    out = np.zeros((n, n), dtype=bool)
    for i in range(n):
        newest: set[int] = set()
        for kind, budget in zip((INSTRUCTION_PIN, EVENT_PIN), budgets, strict=True):
            old_pins = [j for j in range(n) if pins[j] == kind and gidx[j] <= gidx[i] - window]
            newest |= set(old_pins[-budget:]) if budget else set()
        for j in range(n):
            if gidx[j] <= gidx[i] and (gidx[i] - gidx[j] < window or j in newest):
                out[i, j] = True
    return out


@pytest.mark.parametrize("budgets", [(4, 2), (4, 0), (0, 3)])
def test_attention_mask_is_window_plus_newest_pins_of_each_class(budgets: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = 60
        gidx = np.sort(rng.choice(200, size=n, replace=False))
        pins = rng.choice([NOT_PINNED, INSTRUCTION_PIN, EVENT_PIN], size=n, p=[0.6, 0.2, 0.2]).astype(np.int8)
        g = torch.from_numpy(gidx)[None]
        got = attention_mask(g, g, torch.from_numpy(pins)[None], 12, budgets)[0, 0].numpy()
        assert (got == brute_force_mask(gidx.tolist(), pins.tolist(), 12, budgets)).all()


def stream_logits(model: TickModel, scenario: Scenario, per_token: bool = False) -> torch.Tensor:
    s = model.new_session()
    out = []
    for tick in scenario:
        for t in tick_tokens(tick.input, tick.output):
            s.push(t)
            if per_token:
                out.append(model.feed([s])[0])
        if not per_token:
            out.append(model.feed([s])[0])
    return torch.cat(out)


@pytest.mark.parametrize("event_pin_budget", [2, None], ids=["two-budgets", "v1-one-budget"])
def test_streaming_equals_full_forward_across_the_window(event_pin_budget: int | None) -> None:
    """Tick-by-tick (and token-by-token) with the bounded KV cache = one forward over the whole session,
    with a window and pin budgets small enough that tokens are evicted and each class's pins overflow;
    under the rule of the presets and under the v1 checkpoint's."""
    cfg = preset("tiny", **{**SMALL_MEMORY, "event_pin_budget": event_pin_budget})
    model = random_model(cfg)
    scenario = mixed_scenario()
    full = full_forward_logits(model, scenario)
    enc = encode_scenario(scenario, model.vocab, cfg)
    assert len(enc) > 10 * cfg.window
    for kind, budget in zip((INSTRUCTION_PIN, EVENT_PIN), cfg.pin_budgets, strict=True):
        assert np.count_nonzero(enc.pinned == kind) > budget or event_pin_budget is None
    assert np.count_nonzero(enc.pinned) > cfg.pin_budget
    for per_token in (False, True):
        streamed = stream_logits(model, scenario, per_token)
        assert streamed.shape == full.shape
        torch.testing.assert_close(streamed, full, atol=1e-5, rtol=1e-5)


def test_batched_ragged_sessions_equal_one_at_a_time() -> None:
    cfg = preset("tiny", **SMALL_MEMORY)
    model = random_model(cfg)
    long, short = mixed_scenario(), schedule_scenario("hop", 1, 3)
    full_long, full_short = full_forward_logits(model, long), full_forward_logits(model, short)
    a, b = model.new_session(), model.new_session()
    got_a, got_b = [], []
    for t, tick in enumerate(long):
        for tok in tick_tokens(tick.input, tick.output):
            a.push(tok)
        sessions = [a]
        if t < len(short):
            for tok in tick_tokens(short[t].input, short[t].output):
                b.push(tok)
            if t % 3 == 0 or t == len(short) - 1:  # b fed less often: ragged chunks as well as caches
                sessions.append(b)
        logits = model.feed(sessions)
        got_a.append(logits[0])
        if len(logits) > 1:
            got_b.append(logits[1])
    torch.testing.assert_close(torch.cat(got_a), full_long, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(got_b), full_short, atol=1e-5, rtol=1e-5)


def pasted_scenario(words: int) -> Scenario:
    """A typed instruction (pinned), quiet micro-turns, then a typed text of ``words`` words (longer than
    the window, or than a cache row, which then grows), then quiet again."""
    typed = ("<typed>", *(f"word{i}" for i in range(words)), "</typed>")
    quiet = [Tick(TickInput()) for _ in range(30)]
    instruction = Tick(TickInput(tokens=("<typed>", "count", "to", "ten", "</typed>")))
    return [instruction, *quiet[:4], Tick(TickInput(tokens=typed)), *quiet]


def test_pooled_caches_stream_exactly_through_row_reuse_and_growth() -> None:
    """Sessions fed in batches from one CachePool get the full forward's log-probabilities: caches of
    different lengths, evictions, more sessions than the pool's first rows (it doubles), rows of closed
    sessions taken by new ones (stale tokens beyond the new cache), a pasted text longer than a row."""
    cfg = preset("tiny", **SMALL_MEMORY)
    model = random_model(cfg)
    rows, capacity = model.pool.rows, model.pool.capacity
    scenarios = [mixed_scenario(), schedule_scenario("hop", 1, 3), pasted_scenario(2 * capacity)]
    full = [full_forward_logits(model, sc) for sc in scenarios]
    lanes = [(i % 3, 4 * i) for i in range(rows + 4)]  # (scenario, first micro-turn) of each session
    sessions: list[SessionStream] = []
    got: list[list[torch.Tensor]] = [[] for _ in lanes]
    closed_rows, reused = set(), 0
    for t in range(max(start + len(scenarios[sc]) for sc, start in lanes)):
        fed = []
        for i, (sc, start) in enumerate(lanes):
            if t == start:
                sessions.append(model.new_session())
                reused += sessions[i].slot in closed_rows
            if start <= t < start + len(scenarios[sc]):
                tick = scenarios[sc][t - start]
                for tok in tick_tokens(tick.input, tick.output):
                    sessions[i].push(tok)
                fed.append(i)
            elif t == start + len(scenarios[sc]):
                closed_rows.add(sessions[i].slot)
                sessions[i].close()
        for i, logp in zip(fed, model.feed([sessions[i] for i in fed]), strict=True):
            got[i].append(logp)
    assert model.pool.rows == 2 * rows and model.pool.capacity > capacity and reused
    for i, (sc, _) in enumerate(lanes):
        torch.testing.assert_close(torch.cat(got[i]), full[sc], atol=1e-5, rtol=1e-5)


def test_stale_tokens_of_a_reused_row_are_neither_seen_nor_counted() -> None:
    """A new session in the row of a closed one, fed beside a longer cache: the old occupant's pinned
    tokens beyond the new cache's end are gathered with it. A micro-turn longer than the window then
    searches past them for its window's edge; they must count as neither keys nor pins."""
    cfg = preset("tiny", **SMALL_MEMORY)
    model = random_model(cfg)
    first = model.new_session()
    typed = [("<typed>", *(f"n{i}{j}" for j in range(8)), "</typed>") for i in range(9)]
    notes = [Tick(TickInput(tokens=tokens)) for tokens in typed]
    feed_scenario(model, first, notes)  # its row fills with pinned typed words
    row = first.slot
    first.close()
    reused, longer = model.new_session(), model.new_session()
    assert reused.slot == row
    pasted = pasted_scenario(3 * cfg.window)
    got = []
    for t, tick in enumerate(mixed_scenario()):
        for tok in tick_tokens(tick.input, tick.output):
            longer.push(tok)
        if 0 <= t - 20 < len(pasted):  # the longer session is 20 micro-turns ahead
            for tok in tick_tokens(pasted[t - 20].input, pasted[t - 20].output):
                reused.push(tok)
            got.append(model.feed([longer, reused])[1])
        else:
            model.feed([longer])
    torch.testing.assert_close(torch.cat(got), full_forward_logits(model, pasted), atol=1e-5, rtol=1e-5)


def test_batched_steps_decide_what_each_session_decides_alone() -> None:
    """step() over sessions of different cache lengths (own decisions fed back, words decoded by the
    sessions that said <say> only) decides exactly what stepping each session alone decides, through
    evictions and after a session closes and a new one takes its pool row."""
    cfg = preset("tiny", **SMALL_MEMORY)
    batched, alone = random_model(cfg, seed=1), random_model(cfg, seed=1)  # seed 1: says and other acts
    scenarios = [mixed_scenario(), schedule_scenario("hop", 1, 3), pasted_scenario(40), mixed_scenario()]
    starts = [0, 5, 9, 40]  # the hop session closes at micro-turn 36; the last one takes its row
    inputs = [[tick.input for tick in sc] for sc in scenarios]
    want = []
    for lane in inputs:
        s = alone.new_session()
        want.append([alone.step([s], [inp])[0] for inp in lane])
    sessions: list[SessionStream] = []
    got: list[list[TickOutput]] = [[] for _ in inputs]
    for t in range(max(start + len(lane) for start, lane in zip(starts, inputs, strict=True))):
        live = []
        for i, (start, lane) in enumerate(zip(starts, inputs, strict=True)):
            if t == start:
                sessions.append(batched.new_session())
            if start <= t < start + len(lane):
                live.append(i)
            elif t == start + len(lane) and sessions[i].slot >= 0:
                sessions[i].close()
        outs = batched.step([sessions[i] for i in live], [inputs[i][t - starts[i]] for i in live])
        for i, out in zip(live, outs, strict=True):
            got[i].append(out)
    assert got == want
    assert sessions[3].slot == 1 and sessions[1].slot == -1  # the closed session's row, reused
    assert sessions[0].length < sessions[0].stream.next_gidx  # tokens were evicted
    acts = {out.act for lane in got for out in lane}
    assert Act.SAY in acts and len(acts) > 1  # words decoded by a sub-batch


def test_closed_or_dropped_sessions_give_their_rows_back() -> None:
    model = random_model(preset("tiny"))
    a, b = model.new_session(), model.new_session()
    rows = {a.slot, b.slot}
    a.close()
    with pytest.raises(ValueError, match="closed"):
        model.step([a], [TickInput()])
    del b  # never closed: collecting it frees its row all the same
    c, d = model.new_session(), model.new_session()
    assert {c.slot, d.slot} == rows


def test_step_decides_what_the_full_forward_predicts() -> None:
    """step() (decode, feed back, defer the action to the next tick) = argmax of the full forward over
    the stream it produced, at every action."""
    cfg = preset("tiny", **SMALL_MEMORY)
    model = random_model(cfg, seed=1)
    scenario = mixed_scenario()
    s = model.new_session()
    outputs = [model.step([s], [tick.input])[0] for tick in scenario]
    replay = [Tick(tick.input, out) for tick, out in zip(scenario, outputs, strict=True)]
    full = full_forward_logits(model, replay)
    enc = encode_scenario(replay, model.vocab, cfg)
    act_ids = torch.tensor(sorted(model.vocab.act_ids.values()))
    at_act = np.flatnonzero(enc.ids == model.vocab.ids["<act>"])
    assert len(at_act) == len(scenario)
    chosen = act_ids[full[torch.from_numpy(at_act)][:, act_ids].argmax(-1)]
    assert chosen.tolist() == [model.vocab.act_ids[o.act] for o in outputs]


def test_training_loss_is_the_nll_of_the_full_mixture() -> None:
    """loss_of (only the targets' probabilities) = the mean NLL of InteractionNet.forward at the targets."""
    cfg = preset("tiny", **SMALL_MEMORY)
    model = random_model(cfg, seed=2)
    enc = encode_scenario(mixed_scenario(), model.vocab, cfg)
    batch = make_batch([(enc, *crop_indices(enc, 0, cfg, 0))], model.vocab, 1.0, [0])
    with torch.no_grad():
        loss = loss_of(model.net, batch)
    full = full_forward_logits(model, mixed_scenario())[: batch.tokens.shape[1]]  # [T, V]
    sel = batch.weights[0] > 0
    want = -full[sel].gather(-1, batch.targets[0][sel][:, None]).mean()
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Bounded state and pins


def feed_scenario(model: TickModel, s: SessionStream, scenario: Scenario) -> None:
    for tick in scenario:
        for t in tick_tokens(tick.input, tick.output):
            s.push(t)
        model.feed([s])


def test_window_keeps_state_bounded() -> None:
    cfg = preset("tiny")
    model = random_model(cfg)
    s = model.new_session()
    sizes = []
    for t in range(1200):
        if t % 150 == 0:
            inp = TickInput(tokens=("<typed>", "every", "two", "seconds", "</typed>"))
        elif t % 7 == 0:
            inp = TickInput(user_speaking=True, tokens=("say", "hop"))
        else:
            inp = TickInput()
        model.step([s], [inp])
        sizes.append(s.cache_len)
    bound = cfg.cache_bound + CACHE_SLACK
    assert s.capacity == bound and max(sizes) <= bound  # never grew
    assert max(sizes[600:]) == max(sizes[1000:])  # flat: the cost of a step stops growing
    assert model.timing.max_cache <= bound and model.timing.forwards >= 1


def tokens_in_cache(s: SessionStream, gidx_wanted: list[int]) -> bool:
    return set(gidx_wanted) <= set(s.gidx.tolist())


def test_pinned_tokens_survive_the_window() -> None:
    cfg = preset("tiny")
    model = random_model(cfg)
    scenario = [
        Tick(TickInput(tokens=("<typed>", "count", "to", "ten", "</typed>"))),  # typed: pinned
        *spoken("nice weather today"),  # chatter, then a pause longer than utterance_gap
        *(Tick(TickInput()) for _ in range(cfg.utterance_gap + 1)),
        *spoken("in five seconds tell me to go"),
    ]
    enc = encode_scenario(scenario, model.vocab, cfg)
    tokens = [t for tick in scenario for t in tick_tokens(tick.input, tick.output)]
    typed = [i for i in range(len(tokens)) if 0 < i < 6]  # <typed> .. </typed>
    chatter = [tokens.index(w) for w in ("nice", "weather", "today")]
    instruction = [tokens.index(w) for w in ("in", "five", "seconds", "tell", "me", "go")]
    assert enc.pinned[typed].all() and enc.pinned[instruction].all()  # "in five" pinned back from "seconds"
    assert not enc.pinned[chatter].any()
    s = model.new_session()
    quiet = [Tick(TickInput()) for _ in range(300)]  # 3 tokens a tick: far beyond the 64-token window
    feed_scenario(model, s, [*scenario, *quiet])  # teacher-forced: a random model's acts would differ
    assert tokens_in_cache(s, typed) and tokens_in_cache(s, instruction)
    assert not set(chatter) & set(s.gidx.tolist())


def test_a_long_monologue_pins_only_its_opening() -> None:
    """Chatter that happens to contain a pin word late in a long utterance pins nothing."""
    cfg = preset("tiny")
    model = random_model(cfg)
    words = [f"word{i}" for i in range(cfg.pin_utterance_tokens)] + ["say", "more", "things"]
    enc = encode_scenario(spoken(" ".join(words)), model.vocab, cfg)
    assert not enc.pinned.any()
    enc = encode_scenario(spoken("okay " + " ".join(words)), model.vocab, cfg)  # "say" one token later
    assert not enc.pinned.any()
    enc = encode_scenario(spoken("so say hop " + " ".join(words)), model.vocab, cfg)
    assert np.count_nonzero(enc.pinned) == cfg.pin_utterance_tokens  # the opening, up to the cap


def test_long_typed_text_pins_only_its_opening() -> None:
    cfg = preset("tiny")
    model = random_model(cfg)
    words = tuple(f"word{i}" for i in range(2 * cfg.pin_utterance_tokens))
    enc = encode_scenario([Tick(TickInput(tokens=("<typed>", *words, "</typed>")))], model.vocab, cfg)
    assert np.count_nonzero(enc.pinned) == cfg.pin_utterance_tokens + 2  # the opening and both markers


def test_pin_budget_drops_the_oldest_pins() -> None:
    cfg = preset("tiny", pin_budget=8)
    model = random_model(cfg)
    s = model.new_session()
    typed = [Tick(TickInput(tokens=("<typed>", f"note{i}", "</typed>"))) for i in range(4)]  # 12 pins
    feed_scenario(model, s, [*typed, *(Tick(TickInput()) for _ in range(100))])
    pins = [6 * i + j for i in range(4) for j in (1, 2, 3)]  # <typed> note </typed> of each 6-token tick
    assert s.gidx[s.pinned != NOT_PINNED].tolist() == pins[-cfg.pin_budget :]  # the newest 8 of the 12
    assert int(s.gidx.min()) == pins[-cfg.pin_budget]


def busy_scenario(results: int) -> Scenario:
    """A typed instruction, then ``results`` background results each said as news (3 event pins each)."""
    result = Tick(TickInput(tokens=("<result>", "it", "is", "noon", "</result>")), TickOutput(Act.NEWS))
    quiet = [Tick(TickInput()) for _ in range(5)]
    ticks = [Tick(TickInput(tokens=("<typed>", "count", "to", "ten", "</typed>")))]
    for _ in range(results):
        ticks += [result, *quiet]
    return [*ticks, *(Tick(TickInput()) for _ in range(100))]


def test_events_cannot_push_an_instruction_out() -> None:
    """Decisions and result markers have a pin budget of their own: however many there are, the
    instruction stays, and the newest events are kept. Under the v1 rule (one budget) they push it out."""
    model = random_model(preset("tiny", pin_budget=8, event_pin_budget=4))
    s = model.new_session()
    feed_scenario(model, s, busy_scenario(10))
    instruction = [1, 2, 3, 4, 5]  # <typed> count to ten </typed>
    events = [
        g for g, tok in enumerate(encode_scenario(busy_scenario(10), model.vocab, model.cfg).pinned) if tok
    ]
    events = events[len(instruction) :]
    assert len(events) == 30
    assert tokens_in_cache(s, instruction)
    assert s.gidx[s.pinned == EVENT_PIN].tolist() == events[-4:]
    assert s.gidx[s.pinned == INSTRUCTION_PIN].tolist() == instruction
    v1 = random_model(preset("tiny", pin_budget=8, event_pin_budget=None))
    s = v1.new_session()
    feed_scenario(v1, s, busy_scenario(10))
    assert not set(instruction) & set(s.gidx.tolist())
    assert s.gidx[s.pinned != NOT_PINNED].tolist() == events[-8:]
    assert not (s.pinned == EVENT_PIN).any(), "v1: events are pinned as instructions"


def test_v1_checkpoint_keeps_the_one_budget_rule_and_presets_have_two() -> None:
    """A config saved before event_pin_budget existed (the committed v1 checkpoint's) loads with events
    sharing the instructions' budget, as it was trained; the presets, for new training runs, split them.
    Both rules pin the same tokens, only the class of the events differs."""
    v1 = InteractionConfig.from_dict(
        {k: v for k, v in asdict(preset("small")).items() if k != "event_pin_budget"}
    )
    assert v1.event_pin_budget is None and v1.pin_budgets == (v1.pin_budget, 0)
    for name in ("tiny", "small", "gpu"):
        assert preset(name).event_pin_budget, name
    assert preset("small").pin_budgets == (384, 48)
    model = random_model(v1)
    v1_pins = encode_scenario(mixed_scenario(), model.vocab, v1).pinned
    now_pins = encode_scenario(mixed_scenario(), model.vocab, preset("small")).pinned
    assert set(np.unique(v1_pins)) == {NOT_PINNED, INSTRUCTION_PIN}
    assert EVENT_PIN in now_pins and ((v1_pins != NOT_PINNED) == (now_pins != NOT_PINNED)).all()
    if DEFAULT_CHECKPOINT.exists():
        blob = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
        assert "event_pin_budget" not in blob["config"]
        cfg = load_checkpoint(DEFAULT_CHECKPOINT)[0].cfg
        assert cfg.event_pin_budget is None and cfg.pin_budgets == (192, 0)
        assert TickModel.load(DEFAULT_CHECKPOINT, warmup=False).pool.capacity == 192 + 384 + CACHE_SLACK


@pytest.mark.parametrize("event_pin_budget", [2, None], ids=["two-budgets", "v1-one-budget"])
def test_a_crop_carries_the_pinned_past_its_queries_reach(event_pin_budget: int | None) -> None:
    """A mid-session training crop: its queries see, among tokens before the crop, exactly the pinned ones
    the full session's mask lets them see (the streaming cache's), and count the pins between correctly."""
    cfg = preset("tiny", **{**SMALL_MEMORY, "event_pin_budget": event_pin_budget})
    model = random_model(cfg)
    enc = encode_scenario(mixed_scenario(), model.vocab, cfg)
    g = torch.arange(len(enc))[None]
    full = attention_mask(g, g, torch.from_numpy(enc.pinned)[None], cfg.window, cfg.pin_budgets)[0, 0]
    for start in enc.tick_starts[1:]:
        idx, _ = crop_indices(enc, int(start), cfg, 0)
        t = torch.from_numpy(idx)[None]
        crop = attention_mask(t, t, torch.from_numpy(enc.pinned[idx])[None], cfg.window, cfg.pin_budgets)
        queries = idx >= start
        assert (crop[0, 0][queries] == full[idx[queries]][:, idx]).all()
        q = torch.from_numpy(idx[queries])[:, None]
        far_seen = full[q[:, 0], :start] & (q - torch.arange(start) >= cfg.window)  # [queries, start]
        assert far_seen.any() and set(far_seen.any(0).nonzero()[:, 0].tolist()) <= set(idx.tolist())


def test_runtime_pin_keeps_the_last_tick() -> None:
    model = random_model(preset("tiny"))
    s = model.new_session()
    feed_scenario(model, s, [Tick(TickInput(user_speaking=True, tokens=("go", "left")))])
    s.pin(ticks=1)
    kept = s.gidx[s.pos == 0].tolist()
    feed_scenario(model, s, [Tick(TickInput()) for _ in range(200)])
    assert len(kept) == 6 and tokens_in_cache(s, kept)  # <tick> <user> go left <act> <wait>
    assert int(s.pos.min()) == 0


# ----------------------------------------------------------------------------------------------------
# Training


HANDFUL = [
    schedule_scenario("zorp", every_s=1, repeats=3, lead=1),
    schedule_scenario("hop", every_s=2, repeats=2, lead=3),
    schedule_scenario("blinket", every_s=1, repeats=4, lead=2),
    schedule_scenario("quazzle", every_s=2, repeats=3, lead=0),
]


def handful_source() -> DataSource:
    return DataSource(lambda seed, count: list(HANDFUL), "handful-1", frozenset())


def tiny_settings(**overrides: Any) -> TrainSettings:
    return replace(SETTINGS["tiny"], batch_size=4, pool_size=4, val_count=4, val_times=1, **overrides)


def test_training_is_deterministic_with_a_seed() -> None:
    cfg = preset("tiny")
    runs = [
        train(cfg, tiny_settings(), handful_source(), seed=seed, steps=6, quiet=True) for seed in (5, 5, 6)
    ]
    a, b, c = (run[0].state_dict() for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert runs[0][2]["final"] == runs[1][2]["final"]


def test_a_time_budget_cools_down_and_ends_on_time() -> None:
    _, _, log = train(preset("tiny"), tiny_settings(), handful_source(), seed=0, minutes=0.2, quiet=True)
    assert 0 < log["decay_start"] <= log["steps"]
    assert log["minutes"] < 0.2 + 0.1  # the budget, plus the final validation (loaded box: generous)
    assert f"--steps {log['steps']} --decay-start {log['decay_start']} --seed 0" in log["reproduce"]


def test_tiny_model_overfits_a_handful_of_scenarios() -> None:
    """Its greedy, free-running outputs (own decisions fed back) reproduce every target of the handful:
    the rhythm of the says, the invented words copied through their buckets, and the stop."""
    cfg = preset("tiny")
    settings = tiny_settings(lr=5e-3, warmup_steps=10, loss_skip=0)
    net, vocab, log = train(cfg, settings, handful_source(), seed=0, steps=150, quiet=True)
    model = TickModel(net, vocab)
    predictions = run_sessions(model, HANDFUL)
    for scenario, pred in zip(HANDFUL, predictions, strict=True):
        assert [t.output for t in scenario] == pred
    assert log["final"]["say_score"] == 1.0


def test_behaviour_metrics() -> None:
    assert match_events([10, 20], [11, 25, 9], tolerance=2) == [(10, 9)]  # each used once, 25 too late
    assert match_events([10, 20], [19, 11], tolerance=2) == [(10, 11), (20, 19)]
    scenario = schedule_scenario("hop", every_s=1, repeats=2, lead=0)
    perfect = behaviour([scenario], [[t.output for t in scenario]])
    assert perfect["say_score"] == 1.0 and perfect["recall_wait"] == 1.0 and perfect["say_onset_err"] == 0
    late = [TickOutput(), *(t.output for t in scenario[:-1])]  # everything one tick late
    m = behaviour([scenario], [late])
    assert m["say_hits"] == m["say_targets"] and m["say_onset_err"] == 1.0 and m["recall_say"] == 0.0
    silent = behaviour([scenario], [[TickOutput()] * len(scenario)])
    assert silent["say_score"] == 0.0 and silent["say_hits"] == 0


def test_say_by_kind_adds_up_to_the_say_score() -> None:
    """Per kind of target: right words on time, targets, false alarms (charged to the nearest target with
    the same words); summed over the kinds, the parts of behaviour()'s say_score."""
    hop = schedule_scenario("hop", every_s=1, repeats=2, lead=0)
    zorp = schedule_scenario("zorp", every_s=2, repeats=2, lead=0)
    kinds = [
        {k: kind for k, tick in enumerate(scenario) if tick.output.act is Act.SAY}
        for scenario, kind in ((hop, "periodic"), (zorp, "cue"))
    ]
    first, last = min(kinds[1]), len(zorp) - 1
    said = [t.output for t in zorp]
    said[first] = TickOutput(Act.SAY, ("zap",))  # on time, wrong word: neither right nor a false alarm
    said[last] = TickOutput(Act.SAY, ("zorp",))  # long after the last target
    predictions = [[t.output for t in hop], said]
    by_kind = say_by_kind([hop, zorp], predictions, kinds)
    assert by_kind == {"cue": [1, 2, 1], "periodic": [2, 2, 0]}
    m = behaviour([hop, zorp], predictions)
    assert m["say_score"] == 3 / (4 + 1) and m["say_false"] == 1
    assert "periodic 2/2+0" in format_metrics({"val_loss": 1.5, "say_by_kind": by_kind}).splitlines()[1]


def test_checkpoint_roundtrip_and_cli(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    assert main(["--data", "demo", "--config", "tiny", "--steps", "3", "--out", str(out)]) == 0
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["steps"] == 3 and log["seed"] == 0 and log["data_version"] == "demo-1"
    assert "--steps 3" in log["command"] and "say_score" in log["final"]
    assert out.stat().st_size < 25_000_000
    model = TickModel.load(out)
    _, vocab, meta = load_checkpoint(out)
    assert meta["steps"] == 3 and vocab.size == model.vocab.size
    again = tmp_path / "again.pt"
    save_checkpoint(again, model.net, model.vocab, meta, fp16=False)
    copy = TickModel.load(again)
    sa, sb = model.new_session(), copy.new_session()
    for tick in schedule_scenario("hop", 1, 2):
        assert model.step([sa], [tick.input]) == copy.step([sb], [tick.input])


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no trained checkpoint in model/checkpoints yet")
def test_committed_checkpoint_loads_and_steps_on_cpu() -> None:
    assert DEFAULT_CHECKPOINT.stat().st_size <= 25_000_000
    model = TickModel.load(device="cpu")
    sessions = [model.new_session() for _ in range(3)]
    for tick in schedule_scenario("hop", 1, 2):
        outs = model.step(sessions, [tick.input] * 3)
        assert len(outs) == 3 and all(isinstance(o, TickOutput) for o in outs)
    assert model.timing.ms > 0 and model.meta.get("data_version")


def test_a_checkpoint_from_before_the_video_tokens_loads_with_its_own_ids(tmp_path: Path) -> None:
    """A data version 1 checkpoint (saved without its special tokens) lays its ids out with
    SPECIAL_TOKENS_V1: loaded now, it encodes every token as it was trained and steps the same; a current
    one saves and gets back its own list."""
    cfg = preset("tiny")
    old = Vocab(["breathe", "hop"], cfg.n_buckets, SPECIAL_TOKENS_V1)
    net = InteractionNet(cfg, old.size)
    path = tmp_path / "v1.pt"
    save_checkpoint(path, net, old, fp16=False)
    blob = torch.load(path, weights_only=True)
    del blob["special_tokens"]  # as a checkpoint saved before the list was
    torch.save(blob, path)
    loaded = TickModel.load(path, warmup=False)
    tokens = [*SPECIAL_TOKENS_V1, "breathe", "hop", "zebra", REP]
    assert [loaded.vocab.encode(t) for t in tokens] == [old.encode(t) for t in tokens]
    assert loaded.vocab.size == old.size and not loaded.vocab.knows(REP) and loaded.vocab.knows("hop")
    reference = TickModel(net, old)
    sa, sb = reference.new_session(), loaded.new_session()
    for tick in schedule_scenario("hop", 1, 2):
        assert reference.step([sa], [tick.input]) == loaded.step([sb], [tick.input])
    current = Vocab(["breathe", "hop"], cfg.n_buckets)
    save_checkpoint(path, InteractionNet(cfg, current.size), current)
    _, vocab, _ = load_checkpoint(path)
    assert vocab.specials == SPECIAL_TOKENS and vocab.knows(REP)
    assert (
        vocab.encode("hop")
        == current.encode("hop")
        == old.encode("hop") + len(SPECIAL_TOKENS) - len(SPECIAL_TOKENS_V1)
    )
