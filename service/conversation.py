"""The media node's record of a session's conversation: the shared context a new model worker starts from.

A model worker keeps each session's conversation in its memory; when the session moves to another worker
(its worker died, or was too slow) that memory is gone. The node, which sees every micro-turn go to the
model and every output come back, keeps a bounded record of what matters for carrying on:
:class:`ConversationRecord` turns the stream of :class:`MicroTurn` / :class:`MicroTurnOutput` into a
:class:`ConversationContext`, which ``service/remote_worker.py`` mirrors to Redis for the workers.

What counts: typed text and background news the model *heard* (their micro-turn was answered), the user's
final transcripts, the agent's words (``MicroTurnOutput.text``, joined per utterance), the latest
instructions, and the background calls not finished yet. Inputs of micro-turns that were never answered
are kept apart (``unheard``): the new worker is given them again.
"""

from __future__ import annotations

from collections import deque

from service.microturn import (
    MICRO_TURN_MS,
    Action,
    BackgroundResult,
    ConversationContext,
    Message,
    MicroTurn,
    MicroTurnOutput,
    UnheardInput,
)

# Bounds of one session's record: what the models use (8 recent messages each) with room to spare, and
# small enough that its JSON stays a few KB (typed text is at most 2000 characters a message).
CONTEXT_MESSAGES = 32  # messages of both sides kept, the newest
CONTEXT_BACKGROUND = 16  # background news kept, the newest
CONTEXT_JOBS = 32  # unfinished background calls kept; a session has one or two in practice
CONTEXT_UNHEARD = 64  # unanswered micro-turns with inputs kept: typing through a long outage
CONTEXT_MESSAGE_CHARS = 2000  # of one message, as much as one typed message may have; the rest is cut
FINAL_STATUSES = frozenset({"done", "failed", "cancelled"})  # a job with one of these is over


class ConversationRecord:
    """One session's conversation as the media node saw it go to and come back from the model."""

    def __init__(self) -> None:
        self.version = 0  # bumped on every change, so a writer knows when its copy is stale
        self._answered_until = 0
        self._messages: deque[Message] = deque(maxlen=CONTEXT_MESSAGES)
        self._instructions: str | None = None
        self._jobs: dict[str, str] = {}
        self._background: deque[BackgroundResult] = deque(maxlen=CONTEXT_BACKGROUND)
        self._unheard: deque[UnheardInput] = deque(maxlen=CONTEXT_UNHEARD)
        self._utterance: Message | None = None  # the agent's message being said, extended phrase by phrase

    def sent(self, mt: MicroTurn) -> None:
        """``mt`` goes to the model: its inputs are unheard until its output comes back."""
        if mt.instructions is not None:
            # Instructions hold from the micro-turn they came with on, heard or not: keep the latest.
            self._instructions = mt.instructions
            self.version += 1
        if mt.texts or mt.background:
            self._unheard.append(UnheardInput(mt.index, list(mt.texts), list(mt.background)))
            self.version += 1

    @property
    def answered_until(self) -> int:
        """A model answered every micro-turn below this index. It moves every micro-turn without counting as
        a change (``version``): writers store it on its own, so the context itself is rewritten only when
        the conversation changes."""
        return self._answered_until

    def answered(self, out: MicroTurnOutput) -> None:
        """The model's output for micro-turn ``out.index`` came back: it heard everything up to it."""
        # Micro-turns reach a worker in order, so an answer to one means the model stepped those before.
        changed = False
        while self._unheard and self._unheard[0].index <= out.index:
            heard = self._unheard.popleft()
            for text in heard.texts:
                self._messages.append(_message("user", text.text, text.t_ms))
            for news in heard.background:
                self._hear(news)
            changed = True
        self._answered_until = max(self._answered_until, out.index + 1)
        t_ms = out.index * MICRO_TURN_MS
        for transcript in out.transcripts:
            if transcript.final and transcript.text:
                self._messages.append(_message("user", transcript.text, t_ms))
                changed = True
        if out.action is Action.STOP:
            self._utterance = None
        elif out.text:
            if out.action is Action.SPEAK or self._utterance is None:
                self._utterance = _message("assistant", out.text, t_ms)
                self._messages.append(self._utterance)
            else:
                joined = self._utterance["content"] + " " + out.text
                self._utterance["content"] = joined[:CONTEXT_MESSAGE_CHARS]
            changed = True
        for call in out.background_calls:
            self._jobs[call.job_id] = call.question
            while len(self._jobs) > CONTEXT_JOBS:
                del self._jobs[next(iter(self._jobs))]  # dicts keep insertion order: the oldest goes
        for call_id in out.background_cancels:
            self._jobs.pop(call_id, None)
        if changed or out.background_calls or out.background_cancels:
            self.version += 1

    def _hear(self, news: BackgroundResult) -> None:
        self._background.append(news)
        if news.status in FINAL_STATUSES:
            self._jobs.pop(news.job_id, None)

    def context(self) -> ConversationContext:
        """A copy of the record as it stands (nothing in it changes with the record afterwards)."""
        return ConversationContext(
            answered_until=self._answered_until,
            messages=[m.copy() for m in self._messages],
            instructions=self._instructions,
            jobs=dict(self._jobs),
            background=list(self._background),
            unheard=list(self._unheard),
        )


def _message(role: str, content: str, t_ms: int) -> Message:
    return Message(role=role, content=content[:CONTEXT_MESSAGE_CHARS], t_ms=t_ms)
