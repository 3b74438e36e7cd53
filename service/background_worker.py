"""Runs the background model on jobs from the queue: embedded in ``microturn serve``, or alone as
``microturn background`` (any number of processes, on other machines too, when the queue is Redis).

The agent (:class:`model.background.BackgroundAgent`) is blocking -- tools, then LLM tokens -- so it runs
on a thread of its own and its steps are bridged into the job's async stream of partials. Text is
published phrase by phrase rather than token by token: the interaction model speaks phrases, and a
partial per token would be dozens of queue writes per answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from model.background import (
    BackgroundAgent,
    BackgroundRequest,
    BackgroundStep,
    ChatBackend,
    OpenAIChatBackend,
    TextDelta,
    TimerSet,
    ToolCall,
)
from model.tools import Calculator, Clock, DocumentSearch
from model.tts import split_phrases
from service.jobs import Job, JobHandler, JobPartial
from service.microturn import BACKGROUND_JOB_KIND

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackgroundConfig:
    docs_dir: Path | None = None  # folder of .md/.txt the document search tool reads (None: $MICROTURN_DOCS)
    llm_url: str | None = None  # an OpenAI-compatible API root (…/v1); None: the embedded SmolLM2
    llm_model: str = "default"  # the model name sent to that endpoint
    llm_api_key: str | None = None


def create_background_agent(config: BackgroundConfig) -> BackgroundAgent:
    """The background model with its tools; loads the embedded LLM unless an endpoint is configured."""
    llm: ChatBackend
    if config.llm_url:
        llm = OpenAIChatBackend(config.llm_url, config.llm_model, api_key=config.llm_api_key)
        log.info("background LLM: %s at %s", config.llm_model, config.llm_url)
    else:
        import torch

        from model.llm import ChatLLM

        # One thread: on two cores, two torch threads collapse under load (measured ~13x slower).
        torch.set_num_threads(1)
        llm = ChatLLM.load("cuda" if torch.cuda.is_available() else "cpu")
        log.info("background LLM: embedded SmolLM2-135M-Instruct")
    return BackgroundAgent(llm, [Calculator(), Clock(), DocumentSearch(config.docs_dir)])


def background_handler(agent: BackgroundAgent) -> JobHandler:
    """A job handler answering ``BACKGROUND_JOB_KIND`` jobs with ``agent``, one job at a time."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="microturn-background")

    async def handle(job: Job) -> AsyncGenerator[str | JobPartial, None]:
        if job.kind != BACKGROUND_JOB_KIND:
            raise ValueError(f"unknown job kind {job.kind!r}; this worker answers {BACKGROUND_JOB_KIND!r}")
        payload = job.payload
        request = BackgroundRequest(
            question=str(payload["question"]),
            conversation=list(payload["conversation"]),
            instructions=str(payload["instructions"]),
        )
        cancelled = threading.Event()
        steps = _bridge(agent.run(request, cancelled.is_set), executor)
        pending = ""
        try:
            async for step in steps:
                if isinstance(step, ToolCall):
                    yield JobPartial(data={"tool": asdict(step)})
                elif isinstance(step, TimerSet):
                    # The interaction model lives in time: it schedules the timer and speaks when it ends.
                    timer = step.timer
                    yield JobPartial(
                        data={
                            "timer": {
                                "seconds": timer.seconds,
                                "label": timer.label,
                                "done_message": timer.done_message(),
                            }
                        }
                    )
                elif isinstance(step, TextDelta):
                    pending += step.text
                    phrases = split_phrases(pending)
                    for phrase in phrases[:-1]:
                        yield phrase
                    pending = phrases[-1] if phrases else ""
            for phrase in split_phrases(pending):
                yield phrase
        finally:
            # Cancelled, timed out or reclaimed: the agent stops at its next step.
            cancelled.set()
            await steps.aclose()

    return handle


_END = object()


async def _bridge(
    steps: Iterator[BackgroundStep], executor: ThreadPoolExecutor
) -> AsyncGenerator[BackgroundStep, None]:
    """Iterate a blocking iterator on ``executor``, yielding its items on the event loop."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[object] = asyncio.Queue()

    def produce() -> None:
        try:
            for step in steps:
                loop.call_soon_threadsafe(items.put_nowait, step)
        except Exception as exc:
            loop.call_soon_threadsafe(items.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(items.put_nowait, _END)

    done = loop.run_in_executor(executor, produce)
    try:
        while True:
            item = await items.get()
            if item is _END:
                break
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        # The producer checks the job's cancelled flag between steps; wait for it so that the next job
        # never shares the agent with a dying one.
        await asyncio.shield(done)
