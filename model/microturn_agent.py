"""The trained interaction model behind ``--model microturn``: encoders -> TickModel -> speech.

Every micro-turn, for all sessions of the tick together:

1. **Encoders -> TickInput** (model/ticks.py). Speech activity and committed words come from
   :class:`model.listening.Listening` (pocketsphinx, taught the lexicon's foreign words), each word followed
   by its lexicon annotations (model/lexicon.py); typed text is spelled as the recogniser would
   (``<typed> every two seconds say hop </typed>``); background news (results, timers that went off,
   acknowledgements) enters as ``<result> ... </result>``; ``<agent>`` is set while the agent's own audio
   plays.
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
from model.scenarios import BACKCHANNELS
from model.speech_agent import REACTIVE_TIMING, SessionState, SpeechAgent
from model.ticks import RESULT, RESULT_END, TYPED, TYPED_END, Act, TickInput, TickOutput
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
            self.tick_model = TickModel.load(checkpoint, self.device)
            log.info("tick model loaded in %.1f s", time.perf_counter() - t0)
        for text in ("one", "two", "three"):
            self._synthesize_say(text)

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
        # A fault in one session's part stays that session's (as in PerSessionModel): it gets an error
        # and sits out this network step; the others go on.
        live: list[int] = []
        inputs: list[TickInput] = []
        for i, (mt, state, out) in enumerate(zip(batch, states, outputs, strict=True)):
            try:
                inputs.append(self._perceive(mt, state, out, heard[i]))
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

    def _perceive(
        self, mt: MicroTurn, state: MicroturnState, out: MicroTurnOutput, heard: Heard
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
        return TickInput(heard.user_speaking, agent_speaking=agent_speaking, tokens=tuple(tokens))

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
