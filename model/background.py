"""The background model: answers one slow job -- a tool call and/or an LLM answer -- as a stream of steps.

The interaction model steps every 200 ms and cannot wait seconds for an answer, so it hands questions
that need a tool or a longer answer to a background job; :class:`BackgroundAgent` answers one such job
on a worker thread and streams :data:`BackgroundStep` s back: the tool calls it made, timers the caller
must schedule, and the text of the spoken answer in deltas.

**Routing, not tool calling.** SmolLM2-135M cannot reliably emit tool calls, so :func:`route` decides
from the request's text which tool is needed: arithmetic -> calculator, time/date/timer -> clock, "in the
docs" / "according to" / "search" -> document search, else none (the LLM answers from the conversation).

**Tool results are spoken from templates, not phrased by the LLM** (``phrase_tool_results=False``, the
default). Measured on SmolLM2-135M-Instruct (greedy, 10 calculator questions with the result in the
prompt, three prompt designs incl. few-shot): the answer contained the right result in 8, 9 and 7 of 10,
and even the best prompt re-spelled operands ("17 plus 25" -> "One hundred and twenty-five is 42",
"3.5 times 4" -> "Three.5 times four is 14"). With four document passages it answered 3 of 4 correctly
and invented the fourth ("The pool opens on Saturday, which is a Monday."). A spoken wrong number is
worse than a plain sentence, so the tool's own result is said as is: the calculator and clock return
finished sentences ("12 times 13 is 156.", echoing the operands so a misrecognised number is audible),
and a document answer is the passage sentence that best matches the question, with its file name. This
is also ~1 s faster, as no LLM runs. ``phrase_tool_results=True`` hands the result to the LLM to phrase
instead; enable it only for a backend verified to repeat results faithfully (a large model behind
:class:`OpenAIChatBackend`).

``python -m model.background ask "what is twelve times thirteen"`` prints the steps with their timing.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from model.tools import (
    DOCS_ENV,
    Calculator,
    Clock,
    DocumentSearch,
    Timer,
    Tool,
    ToolError,
    parse_duration,
    parse_timer_label,
    spoken_to_expression,
    terms,
)

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant. Answer in one or two short spoken sentences. No lists, no markup."
)
HISTORY_MESSAGES = 8  # most recent conversation messages (both sides) given to the LLM
MAX_ANSWER_TOKENS = 64  # a spoken answer of one or two sentences
ROLES = ("user", "assistant")


class ChatBackend(Protocol):
    """A chat LLM that streams its reply; :class:`model.llm.ChatLLM` and :class:`OpenAIChatBackend` are."""

    def stream_reply(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int = ...,
        temperature: float = ...,
        seed: int | None = ...,
    ) -> Iterator[str]: ...


@dataclass
class BackgroundRequest:
    """One job for the background model."""

    question: str  # what the user asked for
    # The conversation so far, oldest first: {"role": "user" | "assistant", "content": str}; other keys
    # (such as a numeric "t_ms") are allowed and ignored.
    conversation: list[dict[str, Any]] = field(default_factory=list)
    instructions: str = ""  # the session's system instructions; "" for DEFAULT_INSTRUCTIONS

    def __post_init__(self) -> None:
        # Checked here, at the job boundary, so a malformed job fails when it is made, not mid-answer.
        for message in self.conversation:
            if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise ValueError(f"conversation messages need a role in {ROLES} and a content: {message!r}")


@dataclass(frozen=True)
class ToolCall:
    """A tool the agent ran. ``error`` is None on success; otherwise ``result`` is empty."""

    name: str
    args: dict[str, object]
    result: str
    error: str | None = None


@dataclass(frozen=True)
class TimerSet:
    """A timer the caller must schedule: after ``timer.seconds``, say ``timer.done_message()``."""

    timer: Timer


@dataclass(frozen=True)
class TextDelta:
    """The next piece of the spoken answer."""

    text: str


BackgroundStep = ToolCall | TimerSet | TextDelta


# ----------------------------------------------------------------------------------------------------
# Routing

CALCULATOR, CLOCK, DOCUMENTS = Calculator.name, Clock.name, DocumentSearch.name


@dataclass(frozen=True)
class ToolPlan:
    tool: str
    args: dict[str, object]


_TIMER = re.compile(r"\b(?:timer|count ?down)\b|\bremind me in\b")
# Narrow on purpose: "what time does the shop close" is not a question about the current time.
_TIME = re.compile(
    r"\btime is it\b|\bwhat(?:'s|s| is) the (?:current )?time\b|\bcurrent time\b|\btell me the time\b"
)
_DATE = re.compile(
    r"\b(?:what|which)(?:'s|s| is)? (?:the |today'?s )?(?:date|day)\b|\bwhat day is it\b|\btoday'?s date\b"
    r"|\bwhat (?:year|month) is it\b|\bcurrent date\b"
)
_PLACE = re.compile(r"\b(?:in|at) (?P<place>[a-z][a-z .'-]*?)\s*(?:right now|now|today)?\s*[?.!]*$")
_NOT_PLACES = frozenset({"the moment", "the morning", "the afternoon", "the evening", "here"})
_DOCS = re.compile(
    r"\b(?:docs?|documents?|documentation|my notes|our notes|the notes|the manual|the handbook|the wiki)\b"
    r"|\baccording to\b|^\s*(?:search|look up)\b"
)
# The part of a document request that says where to look, not what to look for: left out of the query.
_DOC_REQUEST = re.compile(
    r"\b(?:according to|search(?: for| in| through)?|look up|look in|in|from)?\s*(?:the |my |our )?"
    r"(?:docs?|documents?|documentation)\b(?:\s+(?:for|about))?|\baccording to\b|^\s*(?:search|look up)\b",
    re.IGNORECASE,
)


def route(question: str) -> ToolPlan | None:
    """The tool call a request needs, judged from its text, or None when the LLM should just answer.

    Timers come first (their durations contain numbers, which would otherwise look like arithmetic),
    then document search (a question about the docs may mention times and numbers), then time and date,
    then arithmetic, which must be a calculation and nothing else (see :func:`spoken_to_expression`).
    """
    text = question.lower().strip()
    if _TIMER.search(text):
        args: dict[str, object] = {"action": "timer", "label": parse_timer_label(text)}
        seconds = parse_duration(text)
        if seconds is not None:  # without it the clock says how to ask
            args["seconds"] = seconds
        return ToolPlan(CLOCK, args)
    if _DOCS.search(text):
        query = " ".join(_DOC_REQUEST.sub(" ", question).split()).strip(" ,.;:!?")
        return ToolPlan(DOCUMENTS, {"query": query or question})
    is_time, is_date = bool(_TIME.search(text)), bool(_DATE.search(text))
    if is_time or is_date:
        args = {"action": "time" if is_time else "date"}
        place = _PLACE.search(text)
        if place and place["place"] not in _NOT_PLACES:
            args["place"] = place["place"]
        return ToolPlan(CLOCK, args)
    expression = spoken_to_expression(question)
    if expression is not None:
        return ToolPlan(CALCULATOR, {"expression": expression})
    return None


# What the agent says it could not do when a tool fails.
_FAILED = {CALCULATOR: "work that out", CLOCK: "do that", DOCUMENTS: "search the documents"}
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
MAX_SPOKEN_SENTENCES = 3  # of a document passage, said as the answer
SENTENCE_WORDS = 6  # fewer words than this is more likely a heading ("Warranty.") than an answer
_PASSAGE_LINE = re.compile(r"^\[(?P<file>[^\]]+)\] (?P<text>.+)$")


def _spoken_passage(result: str, query: str) -> str:
    """The best passage's sentences that answer the query, with the passage's file name.

    Extractive on purpose: every word said is in the document (see the module docstring). Of the runs of
    up to :data:`MAX_SPOKEN_SENTENCES` consecutive sentences, the one that contains the most distinct
    query terms wins ("when does the pool open on sundays" needs both the "Opening hours:" and the
    "Sunday" sentence); among equals the shorter run, then the one with a real sentence rather than a
    heading, then the earlier one.
    """
    match = _PASSAGE_LINE.match(result.splitlines()[0]) if result else None
    if match is None:  # "Nothing in the documents matches ..."
        return result
    wanted = set(terms(query))
    sentences = [s for s in _SENTENCE.split(match["text"]) if s.strip()]
    found = [wanted & set(terms(s)) for s in sentences]
    best_key: tuple[int, int, int] = (-1, 0, 0)
    best = sentences[0]
    for first in range(len(sentences)):
        covered: set[str] = set()
        for last in range(first, min(first + MAX_SPOKEN_SENTENCES, len(sentences))):
            covered |= found[last]
            words = sum(len(s.split()) for s in sentences[first : last + 1])
            key = (len(covered), first - last, min(words, SENTENCE_WORDS))
            if key > best_key:
                best_key, best = key, " ".join(sentences[first : last + 1])
    return f"According to {match['file']}: {best}"


# ----------------------------------------------------------------------------------------------------
# The agent


class BackgroundAgent:
    """Answers one :class:`BackgroundRequest` with the routed tool and/or the LLM, as a stream of steps.

    Steps come in order: the :class:`ToolCall` (if a tool was needed), a :class:`TimerSet` for a timer,
    then the answer's :class:`TextDelta` s. A failing tool never fails the job: the step carries the
    error and the answer apologises, saying the tool's message when it is a :class:`ToolError`. LLM
    backend errors (an unreachable server) propagate to the caller. ``cancelled`` is polled before
    the tool runs, after it, and before every text delta; the LLM stream is closed at once when it is
    set, which for :class:`OpenAIChatBackend` closes the connection.
    """

    def __init__(
        self,
        llm: ChatBackend,
        tools: Sequence[Tool],
        *,
        phrase_tool_results: bool = False,
        max_answer_tokens: int = MAX_ANSWER_TOKENS,
    ) -> None:
        self.llm = llm
        self.tools = {tool.name: tool for tool in tools}
        if len(self.tools) != len(tools):
            raise ValueError(f"tool names must be unique: {[tool.name for tool in tools]}")
        self.phrase_tool_results = phrase_tool_results
        self.max_answer_tokens = max_answer_tokens

    def run(
        self, request: BackgroundRequest, cancelled: Callable[[], bool] = lambda: False
    ) -> Iterator[BackgroundStep]:
        """Answer ``request``, yielding its steps; stops early once ``cancelled()`` returns True."""
        if cancelled():
            return
        plan = route(request.question)
        if plan is None or plan.tool not in self.tools:
            yield from self._stream(self._messages(request), cancelled)
            return
        call, apology = self._call(plan)
        yield call
        if cancelled():
            return
        if call.error is not None:
            yield TextDelta(apology)
        else:
            if plan.tool == CLOCK and plan.args.get("action") == "timer":
                yield TimerSet(Timer.from_args(plan.args))
            if self.phrase_tool_results:
                yield from self._stream(self._messages(request, call), cancelled)
            elif plan.tool == DOCUMENTS:
                yield TextDelta(_spoken_passage(call.result, str(plan.args["query"])))
            else:
                yield TextDelta(call.result)

    def _call(self, plan: ToolPlan) -> tuple[ToolCall, str]:
        """Run the planned tool: (the step, what to say if it failed)."""
        apology = f"Sorry, I couldn't {_FAILED[plan.tool]}."
        try:
            result = self.tools[plan.tool].run(plan.args)
        except ToolError as e:
            return ToolCall(plan.tool, plan.args, "", error=str(e)), f"{apology} {e}"
        except Exception as e:  # a bug in a tool must not take the job down; its details are not spoken
            log.exception("tool %s failed on %r", plan.tool, plan.args)
            return ToolCall(plan.tool, plan.args, "", error=f"{type(e).__name__}: {e}"), apology
        return ToolCall(plan.tool, plan.args, result), apology

    def _messages(self, request: BackgroundRequest, call: ToolCall | None = None) -> list[dict[str, str]]:
        """Chat messages: instructions, the recent conversation, the question (with a tool's result)."""
        system = request.instructions.strip() or DEFAULT_INSTRUCTIONS
        history = [{"role": m["role"], "content": m["content"]} for m in request.conversation]
        question = request.question.strip()
        # The caller usually sends the question as the conversation's last message too: say it once.
        if history and history[-1]["role"] == "user" and history[-1]["content"].strip() == question:
            history.pop()
        history = history[-HISTORY_MESSAGES:]
        if call is not None:
            system += " Answer with the tool result given below; copy its numbers and names exactly."
            question = f"{question}\n\nResult of the {call.name} tool:\n{call.result}"
        return [{"role": "system", "content": system}, *history, {"role": "user", "content": question}]

    def _stream(self, messages: list[dict[str, str]], cancelled: Callable[[], bool]) -> Iterator[TextDelta]:
        stream = self.llm.stream_reply(messages, max_new_tokens=self.max_answer_tokens)
        try:
            for delta in stream:
                if cancelled():
                    return
                yield TextDelta(delta)
        finally:
            # Stop generation now rather than when the generator is garbage-collected: for a remote
            # backend this closes the HTTP stream, so the server stops generating too.
            close = getattr(stream, "close", None)
            if callable(close):
                close()


# ----------------------------------------------------------------------------------------------------
# An OpenAI-compatible chat backend

OPENAI_TIMEOUT_S = 60.0  # per socket operation: connecting, and each wait for the next chunk
MAX_SSE_LINE_BYTES = 1024 * 1024  # one server-sent-events line; a chunk of a chat stream is ~200 bytes
MAX_ERROR_BODY_BYTES = 2000  # of an error response, quoted in the BackendError


class BackendError(RuntimeError):
    """The chat server could not be reached, refused the request, or sent something unreadable."""


def sse_data(stream: IO[bytes]) -> Iterator[str]:
    """The ``data`` of each server-sent event on ``stream`` (the WHATWG EventSource format).

    An event is a block of lines ended by a blank line; its ``data:`` lines are joined by newlines;
    comments (``:``) and the other fields (``event``, ``id``, ``retry``) carry nothing a chat stream
    needs. An event cut off by the end of the stream is dropped, as the format prescribes.
    """
    data: list[str] = []
    while True:
        raw = stream.readline(MAX_SSE_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_SSE_LINE_BYTES:
            raise BackendError(f"server-sent event line longer than {MAX_SSE_LINE_BYTES} bytes")
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))


def _chunk_text(data: str) -> str:
    """The text delta of one ``chat.completion.chunk`` ("" for role-only or final chunks)."""
    try:
        chunk: Any = json.loads(data)
    except json.JSONDecodeError as e:
        raise BackendError(f"chat stream sent a non-JSON event: {data[:200]!r}") from e
    if not isinstance(chunk, dict):
        raise BackendError(f"chat stream sent an unexpected event: {data[:200]!r}")
    if "error" in chunk:  # servers report failures after the 200 status inside the stream
        raise BackendError(f"chat server error: {chunk['error']}")
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""  # e.g. the usage-only chunk some servers send last
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


class OpenAIChatBackend:
    """Any OpenAI-compatible ``/chat/completions`` endpoint, streamed (``stream: true``).

    ``base_url`` is the API root, as in OpenAI's clients: ``http://127.0.0.1:8000/v1``. Blocking
    :mod:`urllib` on purpose: it runs on the background worker's thread, and the standard library needs no
    event loop there. Closing the iterator early closes the connection.
    """

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = OPENAI_TIMEOUT_S
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s

    def stream_reply(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int = MAX_ANSWER_TOKENS,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        payload: dict[str, object] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if seed is not None:
            payload["seed"] = seed
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(payload).encode(), headers, method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as e:
            with e:
                detail = e.read(MAX_ERROR_BODY_BYTES).decode("utf-8", "replace").strip()
            raise BackendError(f"{self.url} answered HTTP {e.code}: {detail}") from e
        except OSError as e:  # URLError, refused, timed out
            raise BackendError(f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from e
        with response:
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                raise BackendError(f"{self.url} answered {content_type!r}, not an event stream")
            try:
                for data in sse_data(response):
                    if data == "[DONE]":
                        return
                    text = _chunk_text(data)
                    if text:
                        yield text
            except OSError as e:  # the server went away or stalled for timeout_s mid-answer
                raise BackendError(f"stream from {self.url} broke off: {e}") from e


# ----------------------------------------------------------------------------------------------------
# CLI: answer one question, printing each step with its time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.background", description="The background agent")
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer one question, printing each step and when it came")
    ask.add_argument("question")
    ask.add_argument("--docs", help=f"document folder (default: ${DOCS_ENV})")
    ask.add_argument("--timezone", help="clock's time zone, e.g. Europe/Paris (default: this machine's)")
    ask.add_argument("--base-url", help="an OpenAI-compatible API root; default: the embedded SmolLM2")
    ask.add_argument("--model", default="", help="model name for --base-url")
    ask.add_argument("--phrase-tool-results", action="store_true", help="let the LLM phrase tool results")
    ask.add_argument("--threads", type=int, help="torch intra-op threads for the embedded LLM")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    llm: ChatBackend
    if args.base_url:
        llm = OpenAIChatBackend(args.base_url, args.model)
    else:
        import torch  # only the embedded model needs it

        from model.llm import ChatLLM

        if args.threads:
            torch.set_num_threads(args.threads)
        embedded = ChatLLM.load()
        embedded.reply([{"role": "user", "content": "Hi"}], max_new_tokens=2)  # first-call allocations
        llm = embedded
    tools: list[Tool] = [Calculator(), Clock(args.timezone), DocumentSearch(args.docs)]
    agent = BackgroundAgent(llm, tools, phrase_tool_results=args.phrase_tool_results)
    print(f"ready in {time.perf_counter() - t0:.2f} s")

    t0 = time.perf_counter()
    answer = ""
    for step in agent.run(BackgroundRequest(args.question)):
        print(f"{(time.perf_counter() - t0) * 1e3:8.1f} ms  {step}")
        if isinstance(step, TextDelta):
            answer += step.text
    print(f"answer in {(time.perf_counter() - t0) * 1e3:.1f} ms: {answer}")


if __name__ == "__main__":
    main()
