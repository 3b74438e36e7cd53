"""The first real model path: speech activity + streaming recognition + the embedded LLM + flite.

Two policies share these parts and differ only in *when* they act:

- :class:`ReactiveAgent` (``--model reactive``) decides every micro-turn. It answers after a short pause,
  starts speaking as soon as the first phrase of the reply is synthesised, and stops within one
  micro-turn when the user talks over it.
- :class:`TurnBasedAgent` (``--model turn-based``) is the baseline harness we measure against: it waits
  for a long pause (speech-activity endpointing), recognises, generates the *whole* reply, then speaks
  it, and yields only after sustained user speech.

Both will be replaced by the trained interaction model; they exist so that the whole path is real.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from model.asr import RecognizerPool, normalize_words
from model.background import route
from model.base import PerSessionModel
from model.llm import ChatLLM
from model.tts import FliteSynthesizer, split_phrases
from model.vad import SpeechActivity
from service.conversation import CONTEXT_MESSAGES
from service.microturn import (
    MICRO_TURN_MS,
    SAMPLES_PER_TURN,
    Action,
    BackgroundCall,
    BackgroundResult,
    ConversationContext,
    Message,
    MicroTurn,
    MicroTurnOutput,
    PcmArray,
    Transcript,
)

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant. Answer in one or two short spoken sentences. No lists, no markup."
)
SPEECH_MIN_MS = 60  # ms of speech-like frames in a micro-turn that count as the user speaking
PREROLL_TURNS = 2  # micro-turns of audio kept before speech onset: recognisers need the word's start
HISTORY_MESSAGES = 8  # conversation messages (both sides) given to the LLM with each request
# Conversation messages a session keeps, the newest: what the node's record keeps for a worker that takes the
# session over (service/conversation.py), so a moved session and one that stayed know the same past. The
# LLM and the background model read only the last HISTORY_MESSAGES; without a bound a 30-minute session
# would copy its whole conversation into every background job.
HISTORY_KEPT = CONTEXT_MESSAGES
NEWS_WAITING = 16  # background results, acknowledgements and timer ends waiting to be said
MAX_REPLY_TOKENS = 48  # a spoken reply of one or two sentences
ACKNOWLEDGE_PHRASE = "Let me work that out."
ACKNOWLEDGE_AFTER_MS = 600  # a background answer back sooner needs no "let me work that out"
CANCELLED_PHRASE = "Okay, cancelled."
FAILED_PHRASE = "Sorry, I could not finish that."
# What a user says to call off background work they no longer want.
CANCEL_REQUEST = re.compile(
    r"\b(never ?mind|cancel|forget (it|that|about it)|stop the timer)\b", re.IGNORECASE
)
# A user who only says goodbye ends the call (phones: SIP BYE; browsers: the session closes) once the
# agent's own goodbye has played. Anchored: "goodbye" inside a longer sentence is conversation.
GOODBYE_REQUEST = re.compile(
    r"^\W*(?:(?:ok(?:ay)?|thanks?|thank you|alright)\W+)*(?:good ?bye|bye(?: bye| now)?|hang up)"
    r"(?:\W+(?:now|then|thanks?|thank you))*\W*$",
    re.IGNORECASE,
)
GOODBYE_PHRASE = "Goodbye!"
LEAD_TURNS = 1  # micro-turns of audio sent ahead when an utterance starts, so tick jitter never starves it


@dataclass(frozen=True)
class AgentTiming:
    """When a policy acts. All in ms of session time."""

    endpoint_silence_ms: int  # silence after user speech that ends the user's utterance
    barge_in_ms: int  # user speech while the agent speaks that makes it stop
    stream_phrases: bool  # speak the first phrase while the rest is generated
    # Start the reply on the partial hypothesis at the first silent micro-turn, and keep it at the endpoint
    # if the recognised words did not change: the LLM's head start is one micro-turn.
    speculate: bool


REACTIVE_TIMING = AgentTiming(
    endpoint_silence_ms=400, barge_in_ms=SPEECH_MIN_MS, stream_phrases=True, speculate=True
)
# Typical harness defaults: ~0.8 s of silence before a turn is taken, ~0.6 s of speech to interrupt.
TURN_BASED_TIMING = AgentTiming(
    endpoint_silence_ms=800, barge_in_ms=600, stream_phrases=False, speculate=False
)


class ReplyJob:
    """One reply being generated on the LLM thread; phrases come back as (text, pcm) in order."""

    def __init__(self, question: str) -> None:
        self.question = question
        self.phrases: queue.SimpleQueue[tuple[str, PcmArray] | None] = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.asked = time.perf_counter()  # for the timing log: question -> first phrase ready
        self.first_phrase_logged = False


@dataclass
class SessionState:
    vad: SpeechActivity = field(default_factory=SpeechActivity)
    instructions: str = DEFAULT_INSTRUCTIONS
    preroll: deque[PcmArray] = field(default_factory=lambda: deque(maxlen=PREROLL_TURNS))
    recognizing: bool = False  # an utterance is being recognised
    partial: str = ""
    silence_ms: int = 0  # consecutive non-speech since the user last spoke
    overlap_ms: int = 0  # user speech while the agent is speaking
    history: deque[Message] = field(default_factory=lambda: deque(maxlen=HISTORY_KEPT))
    reply: ReplyJob | None = None  # being generated
    speculative: ReplyJob | None = None  # started on a partial hypothesis; not spoken unless committed
    reply_said: list[str] = field(default_factory=list)  # phrases of the current reply already started
    said_from_ms: int = 0  # session time the current utterance started at
    speech: deque[tuple[str, PcmArray]] = field(default_factory=deque)  # phrases waiting to be spoken
    current: PcmArray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))  # rest of the phrase
    speaking: bool = False
    jobs: dict[str, str] = field(default_factory=dict)  # background calls in flight: id -> question
    # Background news waiting for a fitting moment; a model that never finds one (the trained network
    # decides when to say news) forgets the oldest rather than keeping a long session's every result.
    to_say: deque[str] = field(default_factory=lambda: deque(maxlen=NEWS_WAITING))
    timers: list[tuple[int, str]] = field(default_factory=list)  # (due session ms, what to say then)
    now_ms: int = 0  # session time of the micro-turn being stepped
    news: str | None = None  # background news being said; not lost if cut off before its first word
    acks: dict[str, int] = field(default_factory=dict)  # job id -> session ms to acknowledge it at
    hanging_up: bool = False  # the user said goodbye: end the session once the agent's goodbye is out


class SpeechAgent(PerSessionModel):
    """Recognise, decide, reply, speak -- one session at a time, every micro-turn."""

    name = "speech-agent"

    def __init__(
        self, timing: AgentTiming, voice: str = "slt", extra_words: Mapping[str, str] | None = None
    ) -> None:
        """``extra_words`` teaches the recognisers more words (word -> phones, see model/asr.py)."""
        self.timing = timing
        self._extra_words = dict(extra_words or {})
        self.recognizers = RecognizerPool(extra_words=self._extra_words)
        self.tts = FliteSynthesizer(voice)
        self.llm: ChatLLM | None = None
        # Replies are generated off the worker thread: a reply takes seconds, a micro-turn 200 ms.
        self._llm_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="microturn-llm")
        self.sessions: dict[str, SessionState] = {}

    def warmup(self, max_sessions: int) -> None:
        # Every session's recogniser is built now: building one holds the GIL for ~0.3 s, which would
        # stall every session's media if it happened when somebody first speaks.
        self.recognizers = RecognizerPool(max_spares=max_sessions, extra_words=self._extra_words)
        self.recognizers.warmup(max_sessions)
        # One torch thread: with two on these two cores, generation collapses (to ~1-8 tok/s) whenever
        # recognition or WebRTC is busy, which is always during a conversation.
        torch.set_num_threads(1)
        self.llm = ChatLLM.load()
        self.llm.reply([{"role": "user", "content": "Hi"}], max_new_tokens=2)
        self.tts.synthesize("ready")

    def close_session(self, session_id: str) -> None:
        state = self.sessions.pop(session_id, None)
        if state is not None:
            for job in (state.reply, state.speculative):
                if job is not None:
                    job.cancelled.set()
        self.recognizers.close(session_id)

    def restore_session(self, session_id: str, context: ConversationContext) -> None:
        """The conversation, instructions, background calls in flight and timers not yet due when the
        previous worker last answered; what was being heard or said at that moment is gone."""
        self.close_session(session_id)
        state = SessionState(
            instructions=context.instructions or DEFAULT_INSTRUCTIONS,
            history=deque((m.copy() for m in context.messages), maxlen=HISTORY_KEPT),
            jobs=dict(context.jobs),
        )
        answered_ms = context.answered_until * MICRO_TURN_MS
        for news in context.background:
            # Counted from when the news reached the node; the previous worker counted from the micro-turn
            # that carried it, which is at most one micro-turn apart.
            timer = _timer(news, news.t_ms)
            # One due before the last answered micro-turn went to the previous worker's to-say list then.
            if timer is not None and timer[0] >= answered_ms:
                state.timers.append(timer)
        self.sessions[session_id] = state
        log.info("session %s: restored %d message(s), %d background job(s), %d timer(s)", session_id,
                 len(state.history), len(state.jobs), len(state.timers))

    def close(self) -> None:
        for sid in list(self.sessions):
            self.close_session(sid)
        self._llm_thread.shutdown(wait=True, cancel_futures=True)

    # -- one micro-turn ------------------------------------------------------------------------------
    def step_session(self, mt: MicroTurn) -> MicroTurnOutput:
        state = self.sessions.setdefault(mt.session_id, SessionState())
        state.now_ms = mt.t_ms
        out = MicroTurnOutput(session_id=mt.session_id, index=mt.index)
        if mt.instructions is not None:
            state.instructions = mt.instructions or DEFAULT_INSTRUCTIONS
        activity = state.vad.update(mt.pcm)
        out.user_speaking = activity.speech_ms >= SPEECH_MIN_MS

        self._listen(mt, state, out)
        for typed in mt.texts:
            self._ask(mt.session_id, state, typed.text, out)
        self._take_background_news(mt, state)
        if state.speaking or state.speech:
            self._maybe_yield(state, out)
        if self._fitting_moment(state, out):
            state.news = state.to_say.popleft()
            self._say(state, state.news)
        self._collect_reply(state)
        if out.action is not Action.STOP:
            self._speak(state, out)
        # The session closes once what was handed over has played (service/session.py).
        out.hangup = state.hanging_up and not (state.speaking or state.speech or state.reply)
        return out

    def _listen(self, mt: MicroTurn, state: SessionState, out: MicroTurnOutput) -> None:
        """Streaming recognition, gated by speech activity; endpointing ends the utterance."""
        sid = mt.session_id
        if out.user_speaking:
            state.silence_ms = 0
            if not state.recognizing:
                state.recognizing = True
                self.recognizers.start(sid, np.concatenate(list(state.preroll)) if state.preroll else None)
        else:
            state.silence_ms += MICRO_TURN_MS
        state.preroll.append(mt.pcm)
        if not state.recognizing:
            return
        partial = self.recognizers.accept_batch({sid: mt.pcm})[sid]
        if partial != state.partial and partial:
            state.partial = partial
            out.transcripts.append(Transcript(partial, final=False))
        if out.user_speaking:
            self._drop_speculation(state)
        elif (
            self.timing.speculate
            and state.silence_ms == MICRO_TURN_MS
            and state.partial
            and not self._needs_background(state, state.partial)
        ):
            state.speculative = self._start_reply(state, state.partial)
        if state.silence_ms >= self.timing.endpoint_silence_ms:
            final = self.recognizers.finish(sid).strip()
            state.recognizing = False
            state.partial = ""
            speculative, state.speculative = state.speculative, None
            if speculative is not None and normalize_words(speculative.question) == normalize_words(final):
                self._cancel_reply(state)
                state.history.append(Message(role="user", content=final, t_ms=state.now_ms))
                state.reply = speculative
                log.info("session %s: replying to %r (started one micro-turn early)", sid, final)
            else:
                if speculative is not None:
                    speculative.cancelled.set()
                if final:
                    self._ask(sid, state, final, out)
            if final:
                out.transcripts.append(Transcript(final, final=True))

    def _drop_speculation(self, state: SessionState) -> None:
        if state.speculative is not None:
            state.speculative.cancelled.set()
            state.speculative = None

    def _maybe_yield(self, state: SessionState, out: MicroTurnOutput) -> None:
        """Stop talking when the user talks over the agent for long enough."""
        state.overlap_ms = state.overlap_ms + MICRO_TURN_MS if out.user_speaking else 0
        if state.overlap_ms >= self.timing.barge_in_ms:
            self._cancel_reply(state)
            out.action = Action.STOP

    def _ask(self, session_id: str, state: SessionState, text: str, out: MicroTurnOutput) -> None:
        """Answer ``text``: cancel background work, hand it to the background model, or reply directly.

        Whatever was being said is dropped: the user has moved on.
        """
        if state.speaking:
            out.action = Action.STOP  # cut what is already queued for playback, not only what is not
        self._cancel_reply(state)
        conversation = list(state.history)
        state.history.append(Message(role="user", content=text, t_ms=state.now_ms))
        if GOODBYE_REQUEST.match(text):
            log.info("session %s: the user said goodbye (%r): hanging up after ours", session_id, text)
            state.hanging_up = True
            self._say(state, GOODBYE_PHRASE)
        elif CANCEL_REQUEST.search(text) and (state.jobs or state.timers):
            log.info("session %s: cancelling %d background job(s)", session_id, len(state.jobs))
            out.background_cancels.extend(state.jobs)
            state.jobs.clear()
            state.acks.clear()
            state.timers.clear()
            state.to_say.clear()
            self._say(state, CANCELLED_PHRASE)
        elif self._needs_background(state, text):
            self._call_background(session_id, state, text, conversation, out)
        else:
            state.reply = self._start_reply(state, text, conversation)
            log.info("session %s: replying to %r", session_id, text)

    @staticmethod
    def _call_background(
        session_id: str, state: SessionState, text: str, conversation: list[Message], out: MicroTurnOutput
    ) -> None:
        """Hand ``text`` to the background model with the conversation before it."""
        call_id = uuid.uuid4().hex[:12]
        state.jobs[call_id] = text
        out.background_calls.append(BackgroundCall(call_id, text, conversation, state.instructions))
        log.info("session %s: background job %s for %r", session_id, call_id, text)
        # Acknowledged unless the answer is back first; the answer is woven in when it comes.
        state.acks[call_id] = state.now_ms + ACKNOWLEDGE_AFTER_MS

    def _needs_background(self, state: SessionState, text: str) -> bool:
        """Tool work (arithmetic, time, timers, documents) goes to the background model."""
        return route(text) is not None or bool(CANCEL_REQUEST.search(text) and (state.jobs or state.timers))

    def _take_background_news(self, mt: MicroTurn, state: SessionState) -> None:
        for news in mt.background:
            if news.job_id not in state.jobs:
                continue  # cancelled meanwhile, or not ours
            if news.text or news.status in ("done", "failed", "cancelled"):
                state.acks.pop(news.job_id, None)
            timer = _timer(news, mt.t_ms)
            if timer is not None:
                state.timers.append(timer)
            if news.status == "failed":
                state.to_say.append(FAILED_PHRASE)
            elif news.text:
                state.to_say.append(news.text)
            if news.status in ("done", "failed", "cancelled"):
                del state.jobs[news.job_id]
        for job_id, at_ms in list(state.acks.items()):
            if at_ms <= mt.t_ms:
                del state.acks[job_id]
                state.to_say.append(ACKNOWLEDGE_PHRASE)
        due = [message for at_ms, message in state.timers if at_ms <= mt.t_ms]
        if due:
            state.timers = [(at_ms, message) for at_ms, message in state.timers if at_ms > mt.t_ms]
            state.to_say.extendleft(reversed(due))  # a timer's end is said before older news

    def _fitting_moment(self, state: SessionState, out: MicroTurnOutput) -> bool:
        """Background news is said when the agent is free and the user is not mid-sentence."""
        return bool(
            state.to_say
            and not out.user_speaking
            and not state.recognizing
            and state.reply is None
            and state.speculative is None
            and not state.speaking
            and not state.speech
        )

    def _say(self, state: SessionState, text: str) -> None:
        """Speak ``text`` as it is (acknowledgements, background results, timers)."""
        job = ReplyJob(text)
        state.reply = job
        self._llm_thread.submit(self._synthesize, job, text)

    def _synthesize(self, job: ReplyJob, text: str) -> None:
        try:
            for phrase in split_phrases(text):
                if job.cancelled.is_set():
                    return
                job.phrases.put((phrase, self.tts.synthesize(phrase)))
        except Exception:
            log.exception("synthesis failed")
        finally:
            job.phrases.put(None)

    def _start_reply(
        self, state: SessionState, question: str, conversation: list[Message] | None = None
    ) -> ReplyJob:
        """Generate a reply to ``question`` after the conversation so far, on the LLM thread."""
        before: Sequence[Message] = state.history if conversation is None else conversation
        recent = [*before, Message(role="user", content=question)][-HISTORY_MESSAGES:]
        # The chat template takes role and content; the session times stay out of the prompt.
        context = [{"role": m["role"], "content": m["content"]} for m in recent]
        job = ReplyJob(question)
        self._llm_thread.submit(
            self._generate, job, [{"role": "system", "content": state.instructions}, *context]
        )
        return job

    def _cancel_reply(self, state: SessionState) -> None:
        if state.news is not None and not state.reply_said:
            # A new question arrived before the news was heard: say it at the next fitting moment.
            state.to_say.appendleft(state.news)
        state.news = None
        if state.reply is not None:
            state.reply.cancelled.set()
            state.reply = None
        self._remember_said(state)
        state.speech.clear()
        state.current = np.zeros(0, dtype=np.int16)
        state.speaking = False
        state.overlap_ms = 0

    def _generate(self, job: ReplyJob, messages: list[dict[str, str]]) -> None:
        """LLM thread: stream the reply, synthesise it phrase by phrase."""
        assert self.llm is not None, "warmup() loads the LLM before the first step"
        pending = ""
        try:
            for delta in self.llm.stream_reply(messages, max_new_tokens=MAX_REPLY_TOKENS):
                if job.cancelled.is_set():
                    return
                pending += delta
                phrases = split_phrases(pending)
                if self.timing.stream_phrases and len(phrases) > 1:
                    for phrase in phrases[:-1]:
                        job.phrases.put((phrase, self.tts.synthesize(phrase)))
                    pending = phrases[-1]
            for phrase in split_phrases(pending):
                if job.cancelled.is_set():
                    return
                job.phrases.put((phrase, self.tts.synthesize(phrase)))
        except Exception:
            log.exception("reply generation failed")
        finally:
            job.phrases.put(None)

    @staticmethod
    def _remember_said(state: SessionState) -> None:
        """What the agent said of the utterance ending now joins the conversation."""
        if state.reply_said:
            state.history.append(
                Message(role="assistant", content=" ".join(state.reply_said), t_ms=state.said_from_ms)
            )
            state.reply_said = []

    def _collect_reply(self, state: SessionState) -> None:
        job = state.reply
        while job is not None:
            try:
                item = job.phrases.get_nowait()
            except queue.Empty:
                return
            if item is None:
                state.reply = None
                return
            if not job.first_phrase_logged:
                job.first_phrase_logged = True
                waited_ms = (time.perf_counter() - job.asked) * 1000
                log.info("first phrase ready %.0f ms after the reply was started", waited_ms)
            state.speech.append(item)

    def _speak(self, state: SessionState, out: MicroTurnOutput) -> None:
        """Release the next micro-turn of the agent's voice (more when an utterance starts)."""
        turns = 1 if state.speaking else 1 + LEAD_TURNS
        budget = turns * SAMPLES_PER_TURN
        chunks: list[PcmArray] = []
        texts: list[str] = []
        while budget > 0:
            if not len(state.current):
                if not state.speech:
                    break
                text, pcm = state.speech.popleft()
                state.current = pcm
                state.reply_said.append(text)
                texts.append(text)
            take = state.current[:budget]
            state.current = state.current[budget:]
            chunks.append(take)
            budget -= len(take)
        if not chunks:
            if state.speaking and state.reply is None:
                # Everything said: the utterance is over and joins the conversation.
                state.speaking = False
                state.news = None
                self._remember_said(state)
            return
        if not state.speaking:
            state.said_from_ms = state.now_ms
        out.action = Action.CONTINUE if state.speaking else Action.SPEAK
        out.pcm = np.concatenate(chunks)
        out.text = " ".join(texts)
        state.speaking = True


def _timer(news: BackgroundResult, heard_ms: int) -> tuple[int, str] | None:
    """``(due session ms, what to say then)`` of a timer the background model set, heard at ``heard_ms``."""
    timer = (news.data or {}).get("timer")
    if timer is None:
        return None
    return heard_ms + round(float(timer["seconds"]) * 1000), str(timer["done_message"])


class ReactiveAgent(SpeechAgent):
    name = "reactive"

    def __init__(self) -> None:
        super().__init__(REACTIVE_TIMING)


class TurnBasedAgent(SpeechAgent):
    name = "turn-based"

    def __init__(self) -> None:
        super().__init__(TURN_BASED_TIMING)
