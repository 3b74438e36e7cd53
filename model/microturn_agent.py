"""The trained interaction model behind ``--model microturn``: encoders -> TickModel -> speech.

Every micro-turn, for all sessions of the tick together:

1. **Encoders -> TickInput** (model/ticks.py). Speech activity and committed words come from
   :class:`model.listening.Listening` (pocketsphinx, taught the lexicon's foreign words), each word followed
   by its lexicon annotations (model/lexicon.py); typed text is spelled as the recogniser would
   (``<typed> every two seconds say hop </typed>``); background news (results, timers that went off,
   acknowledgements) enters as ``<result> ... </result>``; ``<agent>`` is set while the agent's own audio
   plays. The camera frames of the micro-turns (``MicroTurn.video``) go through one batched
   :class:`model.video.features.VideoFeatureExtractor` step; its events become ``<rep> three``,
   ``<see:colour> red <cat:colour>`` ..., and the camera coming and going ``<video:on>`` /
   ``<video:off>`` (model/ticks.py). What it sees also joins the conversation as ``[camera] ...`` lines,
   the latest of each kind only, so that the LLM and the background model can be asked about it.
2. **One batched** :meth:`TickModel.step` for every session of the tick (model/interaction.py).
3. **Carry out each TickOutput**: ``<say>`` speaks its words now (flite, cached: reminders repeat);
   ``<stop>`` cuts the audio at once; ``<answer>`` has the embedded LLM reply to what the user just said,
   phrase by phrase; ``<ask>`` hands it to the background model with the conversation; ``<news>`` says the
   background news that is waiting. ``<answer>`` right after a ``<stop>`` for a mere backchannel ("uh
   huh") resumes what was cut instead of asking the LLM about "uh huh".

The speaking machinery (LLM thread, phrase synthesis, pacing of the output, background bookkeeping) is
:class:`model.speech_agent.SpeechAgent`'s, inherited; this class replaces its hand-written decisions
(``step_session`` and what it calls) with the network's, stepped in one batch per tick.

Nothing here runs on the event loop (the worker calls :meth:`step` on its thread), and :meth:`warmup`
loads everything: recognisers, the tick network, the LLM, flite.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.lexicon import Lexicon, recogniser_words, spoken_words
from model.listening import Ear, Heard, Listening
from model.scenarios import BACKCHANNELS, video_tokens
from model.speech_agent import REACTIVE_TIMING, SessionState, SpeechAgent
from model.ticks import (
    REP_RESTART_S,
    RESULT,
    RESULT_END,
    TYPED,
    TYPED_END,
    VIDEO_TOKENS,
    Act,
    TickInput,
    TickOutput,
)
from model.video.features import VideoFeatureExtractor, VideoFeatures, VideoInput
from service.microturn import (
    MICRO_TURN_MS,
    SAMPLE_RATE,
    Action,
    ConversationContext,
    Message,
    MicroTurn,
    MicroTurnOutput,
    PcmArray,
    Transcript,
)

if TYPE_CHECKING:
    from model.interaction import TickModel

log = logging.getLogger(__name__)

MAX_RESULT_WORDS = 8  # as model/scenarios.py: the network needs to know news came, not all of it
RECENT_UTTERANCES = 2  # user utterances since the last turn taken that make up the question
SAY_CACHE = 256  # synthesised <say> phrases kept: a reminder is said again and again
BACKCHANNEL_WORDS = frozenset(w for phrase in BACKCHANNELS for w in phrase.split())
CAMERA = "[camera]"  # opens the conversation lines that say what the camera shows
# What each camera event the network is shown says in the conversation ("vanish" is neither).
CAMERA_LINES = {
    "rep": "repetitions so far: {}",
    "colour": "the light turned {}",
    "appear": "a {} appeared",
    "number": "the card shows {}",
}


@dataclass
class MicroturnState(SessionState):
    """A session's state: SpeechAgent's (conversation, speech, background bookkeeping) plus listening,
    the network's stream and what the user said since the model last took the turn."""

    ear: Ear = field(default_factory=Ear)
    stream: Any = None  # the network's SessionStream (Any: model.interaction is imported at warm-up)
    said: list[str] = field(default_factory=list)  # user utterances since the last turn taken
    utterance: list[str] = field(default_factory=list)  # committed words of the utterance going on
    saying: bool = False  # what plays is a <say> (a reply cuts nothing of it; a <say> cuts a reply)
    cut: list[tuple[str, PcmArray]] = field(default_factory=list)  # what the last <stop> cut off
    # Session ms at which the audio released so far has played out at the listener's end: <agent> is
    # set for every micro-turn that starts before it (the same rule as model/scenarios.py's).
    playing_until_ms: int = 0
    camera_on: bool = False  # what the network was last told: <video:on> or <video:off> (or nothing yet)
    reps: int = 0  # repetitions counted; back to one after REP_RESTART_S without one (model/ticks.py)
    last_rep_ms: int | None = None  # session ms of the frame the last repetition was seen in
    camera_lines: dict[str, Message] = field(default_factory=dict)  # topic -> its line in the history


class MicroturnAgent(SpeechAgent):
    """The micro-turn model: live encoders, one batched TickModel step, speech."""

    name = "microturn"

    def __init__(
        self, checkpoint: Path | None = None, device: str = "cpu", tick_model: TickModel | None = None
    ) -> None:
        """``tick_model`` replaces the network loaded at warm-up from ``checkpoint`` (tests)."""
        super().__init__(REACTIVE_TIMING)
        self.checkpoint = checkpoint
        self.device = device
        self.tick_model = tick_model
        self.lexicon = Lexicon()
        self.listening = Listening(self.recognizers)
        self._says: OrderedDict[str, PcmArray] = OrderedDict()
        self.video = VideoFeatureExtractor()
        self.shows_video = True  # whether the network knows the video tokens (see _take_model)
        if tick_model is not None:
            self._take_model(tick_model)

    def warmup(self, max_sessions: int) -> None:
        self._extra_words = recogniser_words()  # the lexicon's foreign words, as flite says them (~1 s)
        super().warmup(max_sessions)
        self.listening = Listening(self.recognizers)
        if self.tick_model is None:
            from model.interaction import DEFAULT_CHECKPOINT, TickModel  # loaded only for this model

            checkpoint = self.checkpoint or DEFAULT_CHECKPOINT
            if not checkpoint.exists():
                raise RuntimeError(f"no trained interaction model at {checkpoint} (model/train.py makes one)")
            t0 = time.perf_counter()
            self._take_model(TickModel.load(checkpoint, self.device))
            log.info("tick model loaded in %.1f s", time.perf_counter() - t0)
        for text in ("one", "two", "three"):
            self._synthesize_say(text)

    def _take_model(self, tick_model: TickModel) -> None:
        """Step ``tick_model`` from now on. A checkpoint trained before the video tokens (data version 1)
        would read them as unknown words: it is not shown the camera (the conversation still is)."""
        self.tick_model = tick_model
        self.shows_video = all(tick_model.vocab.knows(t) for t in VIDEO_TOKENS)
        if not self.shows_video:
            log.warning("the tick model predates the video tokens: the camera reaches the conversation only")

    def close_session(self, session_id: str) -> None:
        state = self.sessions.get(session_id)
        if isinstance(state, MicroturnState) and state.stream is not None:
            state.stream.close()  # its row of the tick model's KV cache pool goes to the next session
        super().close_session(session_id)
        self.video.close_session(session_id)

    def restore_session(self, session_id: str, context: ConversationContext) -> None:
        """SpeechAgent's restore, with fresh listening and a fresh network stream: the network's memory of
        what was asked (schedules, cue rules) is lost with the worker that held it."""
        super().restore_session(session_id, context)
        base = self.sessions[session_id]
        kept = {f.name: getattr(base, f.name) for f in fields(SessionState)}
        self.sessions[session_id] = MicroturnState(**kept)

    # -- one tick ---------------------------------------------------------------------------------
    def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        if self.tick_model is None:
            raise RuntimeError("warmup() loads the tick model before the first step")
        outputs = [MicroTurnOutput(session_id=mt.session_id, index=mt.index) for mt in batch]
        states = [self._state(mt) for mt in batch]
        heard = self.listening.listen(
            [(mt.session_id, mt.pcm, state.ear) for mt, state in zip(batch, states, strict=True)]
        )
        seen = self._look(batch)
        # A fault in one session's part stays that session's (as in PerSessionModel): it gets an error
        # and sits out this network step; the others go on.
        live: list[int] = []
        inputs: list[TickInput] = []
        for i, (mt, state, out) in enumerate(zip(batch, states, outputs, strict=True)):
            try:
                inputs.append(self._perceive(mt, state, out, heard[i], seen.get(i)))
                live.append(i)
            except Exception as exc:
                self._fault(mt, out, exc)
        decisions = self.tick_model.step([states[i].stream for i in live], inputs)
        for i, decision in zip(live, decisions, strict=True):
            try:
                self._act(batch[i].session_id, states[i], decision, outputs[i])
            except Exception as exc:
                self._fault(batch[i], outputs[i], exc)
        return outputs

    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        raise TypeError("the micro-turn model steps all sessions of a tick together: call step()")

    def _fault(self, mt: MicroTurn, out: MicroTurnOutput, exc: Exception) -> None:
        log.exception("model %s failed on session %s micro-turn %d", self.name, mt.session_id, mt.index)
        out.error = f"{type(exc).__name__}: {exc}"

    def _state(self, mt: MicroTurn) -> MicroturnState:
        state = self.sessions.get(mt.session_id)
        if not isinstance(state, MicroturnState):
            state = MicroturnState()
            self.sessions[mt.session_id] = state
        if state.stream is None:
            assert self.tick_model is not None
            state.stream = self.tick_model.new_session()
        return state

    def _look(self, batch: Sequence[MicroTurn]) -> dict[int, VideoFeatures]:
        """Camera features of the micro-turns (by index in ``batch``) of sessions with a camera: a frame
        now or before (a camera that stops sending goes stale). One batched step for all of them."""
        which = [
            i for i, mt in enumerate(batch) if mt.video is not None or mt.session_id in self.video.sessions
        ]
        if not which:
            return {}
        features = self.video.step([VideoInput.from_turn(batch[i]) for i in which])
        return dict(zip(which, features, strict=True))

    def _perceive(
        self,
        mt: MicroTurn,
        state: MicroturnState,
        out: MicroTurnOutput,
        heard: Heard,
        seen: VideoFeatures | None = None,
    ) -> TickInput:
        """Everything the encoders report for this micro-turn, as the network's input."""
        state.now_ms = mt.t_ms
        if mt.instructions is not None:
            state.instructions = mt.instructions or state.instructions
        out.user_speaking = heard.user_speaking
        tokens: list[str] = list(self.lexicon.annotate(heard.words))
        state.utterance += heard.words
        if heard.partial:
            out.transcripts.append(Transcript(heard.partial, final=False))
        if heard.final is not None:
            if heard.final:
                out.transcripts.append(Transcript(heard.final, final=True))
            if state.utterance:
                self._heard(state, " ".join(state.utterance))
            state.utterance = []
        for typed in mt.texts:
            words = spoken_words(typed.text)
            if words:
                tokens += [TYPED, *words, TYPED_END]
                self._heard(state, typed.text)
        before = list(state.to_say)
        self._take_background_news(mt, state)
        for news in state.to_say:
            if news in before:
                before.remove(news)
            else:
                tokens += [RESULT, *spoken_words(news)[:MAX_RESULT_WORDS], RESULT_END]
        agent_speaking = state.playing_until_ms > mt.t_ms
        video = self._camera(state, seen, out.seen) if seen is not None else ()
        return TickInput(
            heard.user_speaking,
            agent_speaking=agent_speaking,
            tokens=tuple(tokens),
            video=video if self.shows_video else (),
        )

    def _camera(self, state: MicroturnState, seen: VideoFeatures, shown: list[str]) -> tuple[str, ...]:
        """The network's video tokens for one micro-turn's camera features, written into the conversation
        too. Repetitions are counted here, not by the extractor: the count says what to say, and a new
        set after a rest starts at one again."""
        tokens: list[str] = []
        # Not "frozen": a still scene without sensor noise sends identical frames too, and the network
        # misses nothing by seeing them (anything that happens changes the picture).
        live = seen.has_video and not (seen.stale or seen.dark)
        if live != state.camera_on:  # on the change only
            state.camera_on = live
            tokens += video_tokens("on" if live else "off")
            self._camera_line(state, "camera", "the camera is on" if live else "the camera is off", shown)
        for event in seen.events:
            line = CAMERA_LINES.get(event.kind)
            if line is None:
                continue  # "vanish": the network has no token for it
            value = self._count(state, event.t_ms) if event.kind == "rep" else event.value
            tokens += video_tokens(event.kind, value)
            self._camera_line(state, event.kind, line.format(value), shown)
        return tuple(tokens)

    @staticmethod
    def _count(state: MicroturnState, t_ms: int) -> str:
        """The count of a repetition seen at session ``t_ms``: one more, or one after a long rest."""
        if state.last_rep_ms is None or t_ms - state.last_rep_ms > REP_RESTART_S * 1000:
            state.reps = 0
        state.reps += 1
        state.last_rep_ms = t_ms
        return str(state.reps)

    @staticmethod
    def _camera_line(state: MicroturnState, topic: str, text: str, shown: list[str]) -> None:
        """Say in the conversation what the camera shows: the latest line of each topic only, so a count
        is one line that moves up rather than a line per repetition; ``shown`` (``MicroTurnOutput.seen``,
        which the page shows) gets every line."""
        shown.append(text)
        old = state.camera_lines.pop(topic, None)
        if old is not None and any(m is old for m in state.history):  # unless it fell off the history
            state.history.remove(old)
        line = Message(role="user", content=f"{CAMERA} {text}", t_ms=state.now_ms)
        state.history.append(line)
        state.camera_lines[topic] = line

    @staticmethod
    def _heard(state: MicroturnState, text: str) -> None:
        state.said = [*state.said, text][-RECENT_UTTERANCES:]

    def _act(
        self, session_id: str, state: MicroturnState, decision: TickOutput, out: MicroTurnOutput
    ) -> None:
        """Carry out the network's decision, then release this micro-turn's audio."""
        if decision.act is Act.STOP:
            self._stop(state, out)
        elif decision.act is Act.SAY:
            self._say_now(state, " ".join(decision.words))
        elif decision.act is Act.ANSWER:
            self._answer(session_id, state)
        elif decision.act is Act.ASK:
            self._ask_background(session_id, state, out)
        elif decision.act is Act.NEWS and state.to_say:
            self._cut_reply(state)
            state.saying = False
            state.news = " ".join(state.to_say)
            state.to_say.clear()
            self._say(state, state.news)
        self._collect_reply(state)
        window_end_ms = state.now_ms + MICRO_TURN_MS  # the output of this micro-turn plays from here
        if out.action is Action.STOP:
            state.playing_until_ms = window_end_ms
            return
        self._speak(state, out)
        if len(out.pcm):
            played_ms = len(out.pcm) * 1000 // SAMPLE_RATE
            state.playing_until_ms = max(state.playing_until_ms, window_end_ms) + played_ms

    def _stop(self, state: MicroturnState, out: MicroTurnOutput) -> None:
        """Cut the audio now; keep what was cut, in case the user only said "uh huh"."""
        said = state.reply_said[-1] if state.reply_said else ""
        rest = [(said, state.current)] if len(state.current) else []
        state.cut = [] if state.saying else [*rest, *state.speech]
        if state.speaking:
            out.action = Action.STOP
        self._cancel_reply(state)
        state.saying = False

    def _say_now(self, state: MicroturnState, text: str) -> None:
        """A <say> plays at once: it cuts a reply short, and follows another <say>."""
        if not state.saying:
            self._cut_reply(state)
        pcm = self._synthesize_say(text)
        state.speech.append((text, pcm))
        state.saying = True

    def _cut_reply(self, state: MicroturnState) -> None:
        if state.speaking or state.speech or state.reply is not None:
            self._cancel_reply(state)

    @staticmethod
    def _take_question(state: MicroturnState) -> str:
        """What the user said since the model last took the turn: the network decides at the first
        silent micro-turn, before the recogniser has closed the utterance, so its words so far count."""
        question = " ".join([*state.said, *state.utterance]).strip()
        state.said, state.utterance = [], []
        return question

    def _answer(self, session_id: str, state: MicroturnState) -> None:
        question = self._take_question(state)
        if state.cut and set(question.split()) <= BACKCHANNEL_WORDS:
            # "uh huh" while the agent spoke: the <stop> was not meant; say on from where it was cut.
            state.speech.extend(state.cut)
            state.cut = []
            return
        state.cut = []
        if not question:
            return
        if state.reply is not None:  # a reply still being written is replaced
            state.reply.cancelled.set()
            state.reply = None
        if not state.saying:
            self._cut_reply(state)
        state.saying = False
        conversation = list(state.history)
        state.history.append(Message(role="user", content=question, t_ms=state.now_ms))
        state.reply = self._start_reply(state, question, conversation)
        log.info("session %s: replying to %r", session_id, question)

    def _ask_background(self, session_id: str, state: MicroturnState, out: MicroTurnOutput) -> None:
        question = self._take_question(state)
        if not question:
            return
        conversation = list(state.history)
        state.history.append(Message(role="user", content=question, t_ms=state.now_ms))
        self._call_background(session_id, state, question, conversation, out)

    def _synthesize_say(self, text: str) -> PcmArray:
        pcm = self._says.get(text)
        if pcm is None:
            pcm = self.tts.synthesize(text)
            self._says[text] = pcm
            if len(self._says) > SAY_CACHE:
                self._says.popitem(last=False)
        else:
            self._says.move_to_end(text)
        return pcm
