"""The background agent: routing, the real SmolLM2 end to end, and the OpenAI-compatible backend against a
real local HTTP server that streams server-sent events the way OpenAI's API does.

The SmolLM2 tests need the GGUF (``python -m model.weights fetch``) and are skipped, saying so, without it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from model.background import (
    BackendError,
    BackgroundAgent,
    BackgroundRequest,
    BackgroundStep,
    OpenAIChatBackend,
    TextDelta,
    TimerSet,
    ToolCall,
    ToolPlan,
    route,
)
from model.llm import ChatLLM
from model.tools import Calculator, Clock, DocumentSearch, Timer, Tool, ToolArgs, ToolError
from model.weights import SMOLLM2_GGUF_NAME, smollm2_gguf_path, weights_dir
from tests.conftest import free_port


def _has_gguf() -> bool:
    try:
        smollm2_gguf_path()
    except FileNotFoundError:
        return False
    return True


needs_gguf = pytest.mark.skipif(
    not _has_gguf(), reason=f"{SMOLLM2_GGUF_NAME} not in {weights_dir()}: run `python -m model.weights fetch`"
)


def answer_of(steps: list[BackgroundStep]) -> str:
    return "".join(step.text for step in steps if isinstance(step, TextDelta))


def tool_calls(steps: list[BackgroundStep]) -> list[ToolCall]:
    return [step for step in steps if isinstance(step, ToolCall)]


# ----------------------------------------------------------------------------------------------------
# Routing


@pytest.mark.parametrize(
    ("question", "plan"),
    [
        ("what is twelve times thirteen", ToolPlan("calculator", {"expression": "12 * 13"})),
        ("What's 17 plus 25?", ToolPlan("calculator", {"expression": "17 + 25"})),
        ("what time is it", ToolPlan("clock", {"action": "time"})),
        ("whats the time in new york right now?", ToolPlan("clock", {"action": "time", "place": "new york"})),
        ("what is the date today", ToolPlan("clock", {"action": "date"})),
        ("which day is it", ToolPlan("clock", {"action": "date"})),
        (
            "set a pasta timer for ten minutes",
            ToolPlan("clock", {"action": "timer", "label": "pasta", "seconds": 600.0}),
        ),
        ("set a timer", ToolPlan("clock", {"action": "timer", "label": ""})),  # the clock asks how long
        (
            "According to the docs, what time does the pool open on Sundays?",
            ToolPlan("documents", {"query": "what time does the pool open on Sundays"}),
        ),
        ("search the docs for the wifi password", ToolPlan("documents", {"query": "the wifi password"})),
        (
            "what does the handbook say about lunch breaks",
            ToolPlan("documents", {"query": "what does the handbook say about lunch breaks"}),
        ),
        ("What is the capital of France?", None),
        ("what time does the shop close", None),  # not the current time
        ("how many days are in 2 weeks", None),  # not a bare calculation
        ("tell me a joke", None),
    ],
)
def test_route(question: str, plan: ToolPlan | None) -> None:
    assert route(question) == plan


# ----------------------------------------------------------------------------------------------------
# The agent's prompt and fault handling, with a backend that records what it is asked


@dataclass
class ScriptedBackend:
    """A ChatBackend that answers with fixed deltas and keeps what it was sent and whether it was closed."""

    deltas: list[str] = field(default_factory=lambda: ["Hello", " there", "."])
    received: list[list[dict[str, str]]] = field(default_factory=list)
    pulled: int = 0
    closed: bool = False

    def stream_reply(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        self.received.append(messages)
        try:
            for delta in self.deltas:
                self.pulled += 1
                yield delta
        finally:
            self.closed = True


def test_prompt_has_instructions_recent_history_and_the_question_once() -> None:
    backend = ScriptedBackend()
    conversation: list[dict[str, Any]] = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}", "t_ms": 1000 * i}
        for i in range(12)
    ]
    conversation.append({"role": "user", "content": "Tell me a joke", "t_ms": 12_000})
    steps = list(
        BackgroundAgent(backend, []).run(BackgroundRequest("Tell me a joke", conversation, "Be brief."))
    )
    assert answer_of(steps) == "Hello there."
    (messages,) = backend.received
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[-1] == {"role": "user", "content": "Tell me a joke"}
    # The 8 messages before the question, without their timestamps; the question is not repeated.
    assert messages[1:-1] == [{"role": m["role"], "content": m["content"]} for m in conversation[4:12]]
    assert BackgroundAgent(backend, []).run(BackgroundRequest("Hi")).__next__() == TextDelta("Hello")
    assert "friendly voice assistant" in backend.received[-1][0]["content"]  # default instructions


def test_malformed_requests_and_duplicate_tools_are_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        BackgroundRequest("hi", [{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="content"):
        BackgroundRequest("hi", [{"role": "user"}])
    with pytest.raises(ValueError, match="unique"):
        BackgroundAgent(ScriptedBackend(), [Calculator(), Calculator()])


class BrokenCalculator:
    """A calculator with a bug."""

    name = "calculator"
    description = "always fails"

    def run(self, args: ToolArgs) -> str:
        raise RuntimeError("internal state corrupted")


def test_cancellation_is_checked_before_after_the_tool_and_between_deltas() -> None:
    backend = ScriptedBackend(deltas=["one", " two", " three", " four"])
    agent = BackgroundAgent(backend, [Calculator()])
    assert list(agent.run(BackgroundRequest("Hi"), cancelled=lambda: True)) == []
    assert backend.received == []  # nothing was generated

    steps: list[BackgroundStep] = []
    for step in agent.run(BackgroundRequest("Hi"), cancelled=lambda: len(steps) >= 2):
        steps.append(step)
    assert answer_of(steps) == "one two"
    # The delta that found the job cancelled was the last one generated, and the stream was closed.
    assert backend.pulled == 3 and backend.closed

    steps = []
    for step in agent.run(BackgroundRequest("what is 2 plus 2"), cancelled=lambda: bool(steps)):
        steps.append(step)
    assert steps == [ToolCall("calculator", {"expression": "2 + 2"}, "2 plus 2 is 4.")]


def test_a_phrased_tool_result_goes_to_the_llm_with_the_question() -> None:
    backend = ScriptedBackend(deltas=["Twelve times thirteen is 156."])
    agent = BackgroundAgent(backend, [Calculator()], phrase_tool_results=True)
    steps = list(agent.run(BackgroundRequest("what is twelve times thirteen")))
    assert tool_calls(steps)[0].result == "12 times 13 is 156."
    assert answer_of(steps) == "Twelve times thirteen is 156."
    system, user = backend.received[0][0]["content"], backend.received[0][-1]["content"]
    assert "copy its numbers" in system
    assert user == "what is twelve times thirteen\n\nResult of the calculator tool:\n12 times 13 is 156."


# ----------------------------------------------------------------------------------------------------
# End to end with the real SmolLM2-135M-Instruct


@pytest.fixture(scope="module")
def llm() -> ChatLLM:
    return ChatLLM.load()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "pool.md").write_text(
        "# Opening hours\n\nMonday to Friday 6 am to 10 pm. Saturday 8 am to 8 pm. Sunday 9 am to 6 pm.\n\n"
        "# Towels\n\nTowels can be rented at the desk for 2 euros."
    )
    (tmp_path / "office.txt").write_text("The wifi password is maple-42-river. It changes every month.")
    return tmp_path


@pytest.fixture
def agent(llm: ChatLLM, docs: Path) -> BackgroundAgent:
    return BackgroundAgent(llm, [Calculator(), Clock(), DocumentSearch(docs)])


@needs_gguf
def test_spoken_arithmetic_is_answered_exactly(agent: BackgroundAgent) -> None:
    started = time.perf_counter()
    steps = list(agent.run(BackgroundRequest("what is twelve times thirteen")))
    elapsed_ms = (time.perf_counter() - started) * 1e3
    assert steps[0] == ToolCall("calculator", {"expression": "12 * 13"}, "12 times 13 is 156.")
    assert "156" in answer_of(steps)
    print(f"\ncalculator question answered in {elapsed_ms:.1f} ms")


@needs_gguf
def test_without_a_tool_the_llm_answers_from_the_conversation(agent: BackgroundAgent) -> None:
    conversation = [
        {"role": "user", "content": "Hi, my name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
        {"role": "user", "content": "What is my name?"},
    ]
    started = time.perf_counter()
    first_ms = None
    steps: list[BackgroundStep] = []
    for step in agent.run(BackgroundRequest("What is my name?", conversation)):
        first_ms = first_ms or (time.perf_counter() - started) * 1e3
        steps.append(step)
    answer = answer_of(steps)
    assert not tool_calls(steps) and len(steps) > 1  # streamed in deltas
    assert "Ada" in answer, answer
    print(f"\nfirst delta after {first_ms:.0f} ms, {answer!r} in {(time.perf_counter() - started):.2f} s")


@needs_gguf
def test_a_failing_tool_is_reported_and_answered_gracefully(llm: ChatLLM) -> None:
    steps = list(BackgroundAgent(llm, [BrokenCalculator()]).run(BackgroundRequest("what's 2 plus 2")))
    assert steps == [
        ToolCall("calculator", {"expression": "2 + 2"}, "", error="RuntimeError: internal state corrupted"),
        TextDelta("Sorry, I couldn't work that out."),  # a bug's details are logged, not spoken
    ]
    # A ToolError's message is meant for the user and is said.
    steps = list(BackgroundAgent(llm, [Calculator()]).run(BackgroundRequest("what is 5 divided by zero")))
    assert tool_calls(steps)[0].error == "You can't divide by zero."
    assert answer_of(steps) == "Sorry, I couldn't work that out. You can't divide by zero."


@needs_gguf
def test_timers_time_and_documents(agent: BackgroundAgent) -> None:
    steps = list(agent.run(BackgroundRequest("set a pasta timer for eight minutes")))
    assert steps[1:] == [TimerSet(Timer(480.0, "pasta")), TextDelta("Pasta timer set for 8 minutes.")]
    assert isinstance(steps[1], TimerSet)
    assert steps[1].timer.done_message() == "Your 8 minutes pasta timer is done."
    time_answer = answer_of(list(agent.run(BackgroundRequest("What time is it?"))))
    assert re.fullmatch(r"It's \d+:\d\d [AP]M\.", time_answer), time_answer

    steps = list(agent.run(BackgroundRequest("According to the docs, when does the pool open on Sundays?")))
    assert tool_calls(steps)[0].result.startswith("[pool.md] Opening hours.")
    # The sentence that answers, word for word from the document.
    assert answer_of(steps) == "According to pool.md: Sunday 9 am to 6 pm."
    steps = list(agent.run(BackgroundRequest("search the docs for the wifi password")))
    assert answer_of(steps) == "According to office.txt: The wifi password is maple-42-river."


@needs_gguf
def test_cancellation_stops_generation(llm: ChatLLM) -> None:
    class Counting:
        """The real model, counting the deltas it generated."""

        generated = 0

        def stream_reply(
            self,
            messages: list[dict[str, str]],
            max_new_tokens: int = 48,
            temperature: float = 0.0,
            seed: int | None = None,
        ) -> Iterator[str]:
            for delta in llm.stream_reply(messages, max_new_tokens, temperature, seed):
                self.generated += 1
                yield delta

    backend = Counting()
    steps: list[BackgroundStep] = []
    for step in BackgroundAgent(backend, []).run(
        BackgroundRequest("Tell me a long story about the moon."), cancelled=lambda: len(steps) >= 3
    ):
        steps.append(step)
    assert len(steps) == 3 and backend.generated == 4


# ----------------------------------------------------------------------------------------------------
# The OpenAI-compatible backend against a real local server


def sse_chunk(content: str | None = None, role: str | None = None, finish: str | None = None) -> str:
    """One ``chat.completion.chunk`` event, as OpenAI's API sends it."""
    delta: dict[str, str] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n"


def openai_stream(*deltas: str) -> list[str]:
    """A whole streamed completion: the role chunk, one chunk per delta, the finish chunk, [DONE]."""
    return [
        sse_chunk(role="assistant", content=""),
        *map(sse_chunk, deltas),
        sse_chunk(finish="stop"),
        "data: [DONE]\n\n",
    ]


class ChatServer(ThreadingHTTPServer):
    """Serves POST /v1/chat/completions with a scripted event stream; records requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), ChatHandler)
        self.events: list[str] = []
        self.status = 200
        self.delay_s = 0.0  # between events
        self.requests: list[tuple[str, dict[str, str], Any]] = []  # path, headers, JSON body
        self.sent = 0
        self.disconnected = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked transfer, as real servers stream
    server: ChatServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, dict(self.headers), body))
        if self.server.status != 200:
            error = json.dumps(
                {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
            )
            self.send_response(self.server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error.encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in self.server.events:
                data = event.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                self.server.sent += 1
                time.sleep(self.server.delay_s)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected.set()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures, not every request."""


@pytest.fixture
def server() -> Iterator[ChatServer]:
    chat = ChatServer()
    # A short poll interval: shutdown() waits for the serving loop's next poll.
    thread = threading.Thread(target=chat.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield chat
    chat.shutdown()
    chat.server_close()
    thread.join()


def test_openai_backend_streams_deltas_and_sends_the_request(server: ChatServer) -> None:
    # Real streams also carry comments (keep-alives) and CRLF line ends; both must be handled.
    server.events = [": keep-alive\n\n", *openai_stream("Hel", "lo, ", "wörld 😀", "!")]
    server.events[2] = server.events[2].replace("\n", "\r\n")
    backend = OpenAIChatBackend(server.base_url + "/", "test-model", api_key="sk-test")
    messages = [{"role": "user", "content": "Say hello"}]
    deltas = list(backend.stream_reply(messages, max_new_tokens=20, temperature=0.5, seed=3))
    assert deltas == ["Hel", "lo, ", "wörld 😀", "!"]
    ((path, headers, body),) = server.requests
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body == {
        "model": "test-model",
        "messages": messages,
        "stream": True,
        "max_tokens": 20,
        "temperature": 0.5,
        "seed": 3,
    }


def test_openai_backend_reports_http_and_stream_errors(server: ChatServer) -> None:
    backend = OpenAIChatBackend(server.base_url, "test-model")
    server.status = 401
    with pytest.raises(BackendError, match=r"HTTP 401: .*Incorrect API key"):
        list(backend.stream_reply([{"role": "user", "content": "hi"}]))
    server.status = 200
    server.events = [sse_chunk("partial"), 'data: {"error": {"message": "model overloaded"}}\n\n']
    stream = backend.stream_reply([{"role": "user", "content": "hi"}])
    assert next(stream) == "partial"
    with pytest.raises(BackendError, match="model overloaded"):
        next(stream)
    server.events = ["data: {not json\n\n"]
    with pytest.raises(BackendError, match="non-JSON"):
        list(backend.stream_reply([{"role": "user", "content": "hi"}]))
    closed_port = free_port()
    with pytest.raises(BackendError, match="cannot reach"):
        list(OpenAIChatBackend(f"http://127.0.0.1:{closed_port}/v1", "m").stream_reply([]))


def test_openai_backend_times_out_on_a_stalled_stream(server: ChatServer) -> None:
    server.events = [sse_chunk("slow"), sse_chunk("er")]
    server.delay_s = 1.0
    stream = OpenAIChatBackend(server.base_url, "m", timeout_s=0.2).stream_reply([])
    assert next(stream) == "slow"
    with pytest.raises(BackendError, match="broke off"):
        next(stream)


def test_cancelling_the_agent_closes_the_connection(server: ChatServer) -> None:
    server.events = openai_stream(*[f" word{i}" for i in range(50)])
    server.delay_s = 0.02
    agent = BackgroundAgent(OpenAIChatBackend(server.base_url, "m"), [])
    steps: list[BackgroundStep] = []
    for step in agent.run(BackgroundRequest("Tell me a story"), cancelled=lambda: len(steps) >= 2):
        steps.append(step)
    assert answer_of(steps) == " word0 word1"
    # The server notices the closed connection on its next writes and stops streaming.
    assert server.disconnected.wait(timeout=5.0)
    assert server.sent < 20


def test_agent_with_openai_backend_answers_and_phrases_tool_results(server: ChatServer) -> None:
    server.events = openai_stream("Twelve times thirteen", " is 156.")
    agent = BackgroundAgent(OpenAIChatBackend(server.base_url, "m"), [Calculator()], phrase_tool_results=True)
    conversation = [
        {"role": "user", "content": "I need some maths."},
        {"role": "assistant", "content": "Sure."},
    ]
    steps = list(agent.run(BackgroundRequest("what is twelve times thirteen", conversation)))
    assert tool_calls(steps)[0].result == "12 times 13 is 156."
    assert answer_of(steps) == "Twelve times thirteen is 156."
    messages = server.requests[0][2]["messages"]
    assert messages[1:3] == conversation
    assert messages[-1]["content"].endswith("Result of the calculator tool:\n12 times 13 is 156.")


def test_tool_protocol_is_satisfied_by_plain_classes() -> None:
    """The agent takes any object with name, description and run; a ToolError from it is spoken."""

    class OfflineArchive:
        name = "documents"
        description = "pretends to search"

        def run(self, args: ToolArgs) -> str:
            raise ToolError("The archive is offline.")

    tools: list[Tool] = [OfflineArchive()]
    steps = list(BackgroundAgent(ScriptedBackend(), tools).run(BackgroundRequest("search the docs for rain")))
    assert answer_of(steps) == "Sorry, I couldn't search the documents. The archive is offline."
