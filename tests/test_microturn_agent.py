"""The micro-turn runtime: encoders -> one batched TickModel step -> speech, with a stand-in network.

The stand-in has the TickModel step API and a few hand-written rules (tests only: the shipped model is
the trained network of model/interaction.py). It lets these tests check the runtime's side -- what the
network is shown, and that each decision is carried out -- without a trained checkpoint.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from model.asr import RecognizerPool
from model.interaction import DEFAULT_CHECKPOINT, SessionStream, TickModel, Vocab
from model.lexicon import number_words
from model.listening import Ear, Listening
from model.microturn_agent import MicroturnAgent
from model.scenarios import say_tick, say_ticks, schedule_targets
from model.ticks import (
    REP,
    SPECIAL_TOKENS,
    SPECIAL_TOKENS_V1,
    TYPED,
    TYPED_END,
    VIDEO_OFF,
    VIDEO_ON,
    Act,
    TickInput,
    TickOutput,
)
from model.video.replay import replay
from model.video.synthetic import make_clip
from service.client import AUDIBLE_DBFS, level_dbfs
from service.microturn import SAMPLES_PER_TURN, Action, MicroTurn, MicroTurnOutput, TextInput, VideoFrame

from .conftest import NodeFactory, silence, speech

_NUMBERS = {number_words(n): n for n in range(1, 30)}


@dataclass
class StandInSession:
    seen: list[TickInput] = field(default_factory=list)
    tick: int = 0
    period: int = 0  # micro-turns between reminders; 0: none
    due: int = 0
    words: tuple[str, ...] = ()
    stops: int = 0

    def close(self) -> None:
        """TickModel streams give their cache row back; a stand-in holds none."""


class StandInTickModel:
    """TickModel's step API with fixed rules: a typed "every N seconds say W" reminds every N seconds,
    typed "stop" stops, the user talking over the agent stops it, a typed question is answered."""

    def __init__(self, specials: Sequence[str] = SPECIAL_TOKENS) -> None:
        self.batches: list[int] = []
        self.vocab = Vocab((), 16, specials)  # what the runtime asks: which tokens the network knows

    def new_session(self) -> StandInSession:
        return StandInSession()

    def step(self, sessions: Sequence[StandInSession], inputs: Sequence[TickInput]) -> list[TickOutput]:
        self.batches.append(len(sessions))
        return [self._one(s, i) for s, i in zip(sessions, inputs, strict=True)]

    def _one(self, s: StandInSession, tick_input: TickInput) -> TickOutput:
        s.tick += 1
        s.seen.append(tick_input)
        tokens = list(tick_input.tokens)
        if TYPED in tokens:
            text = " ".join(tokens[tokens.index(TYPED) + 1 : tokens.index(TYPED_END)])
            match = re.fullmatch(r"every (\w+) seconds say (.+)", text)
            if match:
                s.period, s.words = _NUMBERS[match.group(1)] * 5, tuple(match.group(2).split())
                s.due = s.tick + s.period - 1
                return TickOutput()
            if text == "stop":
                s.period = 0
                return TickOutput(Act.STOP)
            return TickOutput(Act.ANSWER)
        if tick_input.user_speaking and tick_input.agent_speaking:
            s.stops += 1
            return TickOutput(Act.STOP)
        if s.period and s.tick >= s.due:
            s.due += s.period
            return TickOutput(Act.SAY, s.words)
        return TickOutput()


def _turn(
    session: str,
    index: int,
    pcm: np.ndarray | None = None,
    texts: Sequence[str] = (),
    video: VideoFrame | None = None,
) -> MicroTurn:
    return MicroTurn(
        session_id=session,
        index=index,
        t_ms=index * 200,
        pcm=pcm if pcm is not None else np.zeros(SAMPLES_PER_TURN, dtype=np.int16),
        texts=[TextInput(index * 200, t) for t in texts],
        video=video,
    )


def _agent(model: StandInTickModel) -> MicroturnAgent:
    agent = MicroturnAgent(tick_model=model)  # type: ignore[arg-type]
    agent.listening = Listening(RecognizerPool(max_spares=0))
    return agent


def test_typed_reminders_are_spoken_on_the_networks_schedule() -> None:
    model = StandInTickModel()
    agent = _agent(model)
    outputs = []
    for i in range(40):
        texts = ["Every 2 seconds say hop"] if i == 2 else []
        # Two sessions stepped together: one network step per tick, for both.
        outputs.append(agent.step([_turn("a", i, texts=texts), _turn("b", i)]))
    assert model.batches == [2] * 40
    seen = agent.sessions["a"].stream.seen  # type: ignore[attr-defined]
    assert seen[2].tokens == (TYPED, "every", "two", "seconds", "say", "hop", TYPED_END)
    starts = [i for i, (a, _) in enumerate(outputs) if a.action is Action.SPEAK]
    assert starts == [11, 21, 31], starts
    for i in starts:
        assert outputs[i][0].text == "hop" and level_dbfs(outputs[i][0].pcm) > AUDIBLE_DBFS
        assert seen[i + 1].agent_speaking, "the network hears its own voice"
        # ... for as long as it plays, which is what the scenario generator trains it with.
        playing = next(j for j in range(i + 1, len(seen)) if not seen[j].agent_speaking) - (i + 1)
        assert abs(playing - say_ticks(("hop",))) <= 1, playing
    assert all(b.action is Action.SILENT for _, b in outputs)


def test_a_stop_cuts_the_audio_at_once() -> None:
    model = StandInTickModel()
    agent = _agent(model)
    agent.step([_turn("a", 0, texts=["every 1 seconds say one two three four five six"])])
    actions = [agent.step([_turn("a", i)])[0].action for i in range(1, 7)]
    assert Action.SPEAK in actions
    out = agent.step([_turn("a", 7, texts=["stop"])])[0]
    assert out.action is Action.STOP
    assert all(agent.step([_turn("a", i)])[0].action is Action.SILENT for i in range(8, 20))


def test_spoken_words_reach_the_network_committed_and_annotated() -> None:
    model = StandInTickModel()
    agent = MicroturnAgent(tick_model=model)  # type: ignore[arg-type]
    agent.listening = Listening(RecognizerPool(extra_words={"manzana": "M AA N Z AE N AH"}))
    pcm = np.concatenate([silence(0.4), speech("she bought a red apple today"), silence(1.2)])
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % SAMPLES_PER_TURN, dtype=np.int16)])
    outs = [agent.step([_turn("a", i, pcm[i * SAMPLES_PER_TURN : (i + 1) * SAMPLES_PER_TURN])])[0]
            for i in range(len(pcm) // SAMPLES_PER_TURN)]  # fmt: skip
    seen = agent.sessions["a"].stream.seen  # type: ignore[attr-defined]
    tokens = [t for tick in seen for t in tick.tokens]
    assert "red" in tokens and tokens[tokens.index("red") + 1] == "<cat:colour>"
    assert "apple" in tokens and "<cat:fruit>" in tokens
    assert any(tick.user_speaking for tick in seen)
    assert any(t.final for out in outs for t in out.transcripts)
    # Words are committed while the user speaks, not only at the end of the utterance.
    first_word = next(i for i, tick in enumerate(seen) if tick.tokens)
    last_speech = max(i for i, tick in enumerate(seen) if tick.user_speaking)
    assert first_word < last_speech


def test_listening_commits_every_word_once_in_order() -> None:
    listening = Listening(RecognizerPool())
    ear = Ear()
    pcm = np.concatenate([silence(0.4), speech("what is the capital of france"), silence(1.0)])
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % SAMPLES_PER_TURN, dtype=np.int16)])
    words: list[str] = []
    finals = []
    for i in range(len(pcm) // SAMPLES_PER_TURN):
        heard = listening.listen([("s", pcm[i * SAMPLES_PER_TURN : (i + 1) * SAMPLES_PER_TURN], ear)])[0]
        words += heard.words
        if heard.final is not None:
            finals.append(heard.final)
    assert len(finals) == 1
    assert words == finals[0].split()
    assert words[:3] == ["what", "is", "the"]


async def _typed_reminder(
    start_node: NodeFactory, connect, agent: MicroturnAgent, listen_s: float
) -> tuple[float, list[float], list[str]]:
    """Type "every two seconds say hop" over WebRTC; (when it was sent, onsets of agent audio, texts)."""
    node = await start_node(model=agent)
    client = await connect(node.url)
    await client.wait_for("session.started", timeout=10)
    sent = time.monotonic()
    client.send({"type": "input.text", "text": "every two seconds say hop"})
    await asyncio.sleep(listen_s)
    said = [e["text"] for e in client.events_of("response.text")]
    return sent, _onsets(client.received.frames, after=sent), said


@pytest.mark.slow
async def test_typed_reminder_is_heard_every_two_seconds_over_webrtc(
    start_node: NodeFactory, connect
) -> None:
    """End to end: the client types "every two seconds say hop" and hears the agent about every 2 s."""
    agent = MicroturnAgent(tick_model=StandInTickModel())  # type: ignore[arg-type]
    sent, onsets, said = await _typed_reminder(start_node, connect, agent, listen_s=7.5)
    assert len(onsets) >= 3, onsets
    gaps = np.diff(onsets)
    assert all(abs(g - 2.0) < 0.3 for g in gaps), gaps
    assert 1.5 < onsets[0] - sent < 3.0
    assert said[:3] == ["hop"] * 3


def _onsets(frames: list[tuple[float, np.ndarray]], after: float) -> list[float]:
    """Arrival times of audible frames that follow at least 300 ms of inaudible ones."""
    onsets: list[float] = []
    quiet_since: float | None = after
    for arrival, pcm in frames:
        if arrival < after:
            continue
        if level_dbfs(pcm) > AUDIBLE_DBFS:
            if quiet_since is not None and arrival - quiet_since >= 0.3:
                onsets.append(arrival)
            quiet_since = None
        elif quiet_since is None:
            quiet_since = arrival
    return onsets


def test_the_real_network_steps_behind_the_runtime() -> None:
    """The runtime drives model/interaction.py's TickModel (untrained here: any decision must be carried
    out without a fault, and every session of the tick goes through one batched step)."""
    from model.interaction import InteractionNet, TickModel, Vocab, preset
    from model.scenarios import TEMPLATE_WORDS

    cfg = preset("tiny")
    vocab = Vocab.build(TEMPLATE_WORDS, cfg.n_buckets)
    model = TickModel(InteractionNet(cfg, vocab.size), vocab)
    agent = MicroturnAgent(tick_model=model)
    agent.listening = Listening(RecognizerPool(max_spares=0))
    voice = np.concatenate([speech("every two seconds say hop"), silence(1.0)])
    voice = np.concatenate([voice, np.zeros(-len(voice) % SAMPLES_PER_TURN, dtype=np.int16)])
    for i in range(30):
        chunk = voice[i * SAMPLES_PER_TURN : (i + 1) * SAMPLES_PER_TURN]
        chunk = chunk if len(chunk) else None
        outs = agent.step([_turn("a", i, chunk), _turn("b", i, texts=["what time is it"] if i == 3 else [])])
        assert [o.error for o in outs] == [None, None]
        assert model.timing.sessions == 2


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_CHECKPOINT.exists(), reason="no trained checkpoint yet (model/train.py)")
@pytest.mark.xfail(
    strict=False,
    reason="the committed checkpoint (26153b7) has not learned periods (see "
    "test_the_trained_network_says_every_two_seconds_say_hop_on_time): a training matter",
)
async def test_trained_model_says_a_typed_reminder_every_two_seconds(
    start_node: NodeFactory, connect
) -> None:
    _, onsets, said = await _typed_reminder(start_node, connect, MicroturnAgent(), listen_s=9.0)
    assert len(onsets) >= 3, onsets
    assert all(abs(g - 2.0) < 0.5 for g in np.diff(onsets[:4])), onsets
    assert " ".join(said).split().count("hop") >= 3, said


class FakeLLM:
    """Streams a fixed reply and records what it was asked."""

    def __init__(self, reply: str) -> None:
        self.reply_text = reply
        self.asked: list[list[dict[str, str]]] = []

    def stream_reply(self, messages: list[dict[str, str]], max_new_tokens: int = 48) -> Iterator[str]:
        self.asked.append(messages)
        yield from self.reply_text.split(" ")[:1]
        yield " " + " ".join(self.reply_text.split(" ")[1:])


def test_an_answer_is_the_llms_reply_to_what_the_user_just_said() -> None:
    model = StandInTickModel()
    agent = _agent(model)
    llm = FakeLLM("Paris is the capital of France.")
    agent.llm = llm  # type: ignore[assignment]
    outs = [agent.step([_turn("a", 0, texts=["What is the capital of France?"])])[0]]
    deadline = time.monotonic() + 10
    i = 1
    while not any(o.action is Action.SPEAK for o in outs) and time.monotonic() < deadline:
        time.sleep(0.05)
        outs.append(agent.step([_turn("a", i)])[0])
        i += 1
    assert llm.asked and llm.asked[0][-1] == {"role": "user", "content": "What is the capital of France?"}
    spoken = next(o for o in outs if o.action is Action.SPEAK)
    assert "Paris" in spoken.text
    history = agent.sessions["a"].history
    assert history[0]["content"] == "What is the capital of France?"


def test_after_a_mere_backchannel_the_answer_resumes_what_was_cut() -> None:
    agent = _agent(StandInTickModel())
    agent.step([_turn("a", 0)])
    state = agent.sessions["a"]
    phrase = ("and then the dragon baked bread", speech("and then the dragon baked bread"))
    state.cut = [phrase]  # type: ignore[attr-defined]
    state.said = ["uh huh"]  # type: ignore[attr-defined]
    agent._answer("a", state)  # type: ignore[arg-type]
    assert list(state.speech) == [phrase]
    assert state.reply is None, "no LLM reply to 'uh huh'"


def _exercise(model: StandInTickModel, reps: int) -> tuple[MicroturnAgent, list[float], int]:
    """Step a session whose camera shows ``reps`` clean push-ups as the media node delivers them (the
    latest frame of each micro-turn), then 2 s without frames; (agent, true rep times, micro-turns)."""
    clip = make_clip("pushups", seed=5, reps=reps, period=1.4, clean=True, size=(160, 120))
    windows = replay(clip.frames(), clip.fps, size=None)
    agent = _agent(model)
    for w in windows:
        agent.step([_turn("a", w.index, video=w.frames[-1] if w.frames else None)])
    for i in range(len(windows), len(windows) + 10):  # the camera stops sending
        agent.step([_turn("a", i)])
    return agent, clip.rep_times, len(windows)


def test_camera_repetitions_reach_the_network_as_counts_in_time_and_join_the_conversation() -> None:
    agent, rep_times, n_video = _exercise(StandInTickModel(), reps=4)
    seen = agent.sessions["a"].stream.seen  # type: ignore[attr-defined]
    assert seen[0].video == (VIDEO_ON,), "the network is told when the camera comes"
    counts = [(k, tick.video) for k, tick in enumerate(seen) if REP in tick.video]
    assert [v[v.index(REP) + 1] for _, v in counts] == ["one", "two", "three", "four"]
    assert all(v[v.index(REP) + 2] == "<cat:number>" for _, v in counts)  # annotated as a heard number
    for (k, _), t in zip(counts, rep_times, strict=True):
        # In time: known at the end of the micro-turn that carries it, 0-1 s after the rep completed.
        assert 0.0 <= (k + 1) * 0.2 - t <= 1.0, (k, t)
    off = [k for k, tick in enumerate(seen) if VIDEO_OFF in tick.video]
    assert len(off) == 1 and n_video <= off[0] <= n_video + 6, "... and when it is gone (stale after 1 s)"
    camera = [m["content"] for m in agent.sessions["a"].history if m["content"].startswith("[camera]")]
    # The latest of each: one line for the count however many repetitions, one for the camera's state.
    assert camera == ["[camera] repetitions so far: 4", "[camera] the camera is off"]


def test_a_checkpoint_without_video_tokens_is_not_shown_the_camera() -> None:
    """A version 1 checkpoint would read <rep> as an unknown word: the runtime leaves the camera out of its
    input, and still writes what the camera shows into the conversation."""
    agent, _, _ = _exercise(StandInTickModel(SPECIAL_TOKENS_V1), reps=2)
    assert not agent.shows_video
    seen = agent.sessions["a"].stream.seen  # type: ignore[attr-defined]
    assert not any(tick.video for tick in seen)
    history = [m["content"] for m in agent.sessions["a"].history]
    assert "[camera] repetitions so far: 2" in history


# -- the trained checkpoint behind the runtime, offline ----------------------------------------------

_needs_checkpoint = pytest.mark.skipif(
    not DEFAULT_CHECKPOINT.exists(), reason="no trained checkpoint yet (model/train.py)"
)


@functools.cache
def _trained() -> TickModel:
    return TickModel.load(DEFAULT_CHECKPOINT)


@dataclass
class _Recorded:
    inputs: list[TickInput]  # what the runtime showed the network, micro-turn by micro-turn
    decisions: list[TickOutput]  # what the network decided
    outputs: list[MicroTurnOutput]  # what the runtime did with it


def _typed_through_trained(text: str, at: int, ticks: int) -> _Recorded:
    """``text`` typed in micro-turn ``at`` of a silent session, through MicroturnAgent and the trained
    network (as the worker steps it, without WebRTC)."""
    model = _trained()
    recorded = _Recorded([], [], [])

    class Recording:
        """The trained TickModel, recording what crosses its step API."""

        vocab = model.vocab

        def new_session(self) -> SessionStream:
            return model.new_session()

        def step(self, sessions: Sequence[SessionStream], inputs: Sequence[TickInput]) -> list[TickOutput]:
            decisions = model.step(sessions, inputs)
            recorded.inputs += inputs
            recorded.decisions += decisions
            return decisions

    agent = _agent(Recording())  # type: ignore[arg-type]
    for i in range(ticks):
        recorded.outputs.append(agent.step([_turn("a", i, texts=[text] if i == at else [])])[0])
    agent.close_session("a")
    return recorded


@_needs_checkpoint
def test_the_runtime_shows_the_trained_network_what_it_was_trained_on() -> None:
    """The runtime's side of the contract, with the real network: typed text is spelled and wrapped as the
    scenario generator writes it, nothing else enters a silent session, <agent> follows each <say> for as
    long as the generator plays it, and the network decides exactly as when its inputs are stepped through
    TickModel directly (as training's validation does): no state of the runtime's own in between."""
    rec = _typed_through_trained("Say smile once every 3 seconds.", at=2, ticks=60)
    typed = ("say", "smile", "once", "every", "three", "seconds")
    assert rec.inputs[2].tokens == (TYPED, *typed, TYPED_END)
    quiet = [t for i, t in enumerate(rec.inputs) if i != 2]
    assert all(not t.tokens and not t.user_speaking and not t.video for t in quiet)
    says = [i for i, d in enumerate(rec.decisions) if d.act is Act.SAY]
    assert says, "the network says something after this instruction (or the check below checks nothing)"
    for i in says:
        playing = next(j for j in range(i + 1, len(rec.inputs)) if not rec.inputs[j].agent_speaking) - (i + 1)
        assert abs(playing - say_ticks(rec.decisions[i].words)) <= 1, (i, playing)
    session = _trained().new_session()
    direct = [_trained().step([session], [tick_input])[0] for tick_input in rec.inputs]
    session.close()
    assert direct == rec.decisions


def _on_time(rec: _Recorded, at: int, period_s: float, words: tuple[str, ...], count: int) -> list[bool]:
    """Whether each of the first ``count`` reminders of a typed "every period say words" was spoken within
    TimeSpeak's ±0.5 s (±2 micro-turns) with those words: the timing the scenario generator trains."""
    start_s = (at + 1) * 0.2  # typed text counts from the end of the micro-turn it arrived in
    spoken = {i: out.text for i, out in enumerate(rec.outputs) if out.action is Action.SPEAK}
    targets = [say_tick(t) for t in schedule_targets("periodic", period_s, count, start_s)]
    return [any(spoken.get(k) == " ".join(words) for k in range(t - 2, t + 3)) for t in targets]


@_needs_checkpoint
@pytest.mark.xfail(
    strict=False,
    reason="the committed checkpoint (26153b7) has not learned periods: where it says anything it says it "
    "every ~3 s whatever N is, and stays silent after 'every two seconds say hop' (also on its own "
    "validation scenarios: a training matter, not the runtime's)",
)
def test_the_trained_network_says_every_two_seconds_say_hop_on_time() -> None:
    rec = _typed_through_trained("every 2 seconds say hop", at=2, ticks=60)
    assert all(_on_time(rec, 2, 2.0, ("hop",), count=4))
