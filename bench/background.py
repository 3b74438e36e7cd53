"""The background model and its job queue: answer latency, jobs/s, transport price, tick deadline share.

Four parts, each comparing the Redis job queue with the in-process one in the same run where that applies:

1. **latency** -- submit -> first partial -> done of background jobs answered by the embedded SmolLM2
   agent, for tool questions (calculator, clock) and open questions the LLM answers. Redis: a separate
   ``python -m service.cli background`` process; in-process: ``serve_jobs`` on this process's loop. The
   questions alternate between the two queues, one job at a time, so both see the same machine noise.
2. **throughput** -- jobs/s of a burst of calculator jobs through one worker (Redis process vs in-process),
   then through two worker processes on Redis.
3. **transport** -- the price of the future distributed model-worker transport: a MicroTurn batch is
   serialised (``to_dict`` -> JSON), XADDed to a Redis stream, read by a responder in another process that
   answers with MicroTurnOutputs carrying 200 ms of audio the same way, and deserialised (``from_dict``);
   against an asyncio queue hop in one process passing the objects (and that hop with the JSON round
   trips added, which separates serialisation from Redis).
4. **ticks** -- share of 200 ms ticks whose batch came back within its deadline on a real ``microturn
   serve`` node with two aiortc sessions streaming silence, without and with its embedded background
   worker kept busy by open LLM questions submitted through the node's own Redis queue. Each load level gets
   a fresh node, so the node's /healthz step-time percentiles cover that level alone.

Every Redis here is a throwaway ``redis-server`` on a free port (``tests/redis_server.py``); the Redis the
machine may run on 6379 is never touched. Only processes started here are stopped.

    .venv/bin/python -m bench.background            # full set (about 5 minutes on 2 cores)
    .venv/bin/python -m bench.background --quick    # smoke set (about 1.5 minutes)
    .venv/bin/python -m bench.background --quick --parts transport,ticks

Writes bench/results/background-<time>.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np
import redis.asyncio as aioredis

from bench.latency import free_port, wait_healthy
from service.background_worker import BackgroundConfig, background_handler, create_background_agent
from service.client import AgentClient
from service.jobs import (
    MAX_DEADLINE_S,
    InProcessJobQueue,
    JobHandler,
    JobQueue,
    JobStatus,
    follow_job,
    open_job_queue,
    serve_jobs,
)
from service.microturn import (
    BACKGROUND_JOB_KIND,
    MICRO_TURN_MS,
    SAMPLES_PER_TURN,
    Action,
    MicroTurn,
    MicroTurnOutput,
    PcmArray,
    TextInput,
    Transcript,
)
from service.stats import percentiles
from tests.processes import stop_process
from tests.redis_server import redis_server

ROOT = Path(__file__).resolve().parent.parent

# Each routes to a tool (model.background.route), so no LLM runs: these price the queue and the agent.
CALCULATOR_QUESTIONS = [
    "what is twelve times thirteen",
    "what is seventeen plus twenty five",
    "what is one hundred divided by four",
    "how much is two hundred minus fifty seven",
]
CLOCK_QUESTIONS = ["what time is it", "what is the date today"]
# Calculator and clock alternating.
TOOL_QUESTIONS = [q for pair in zip(CALCULATOR_QUESTIONS, CLOCK_QUESTIONS * 2, strict=True) for q in pair]
# None routes to a tool: SmolLM2 answers each (~2 s on one core for its 64-token limit).
OPEN_QUESTIONS = [
    "tell me something about the moon",
    "why is the sky blue",
    "how do plants grow",
    "tell me about the ocean",
    "what is a volcano",
    "who was ada lovelace",
]

JOB_TIMEOUT_S = 60.0  # s: a latency job not done within this counts as a miss
WORKER_START_TIMEOUT_S = 120.0  # s: a worker process loads SmolLM2 in ~2 s; slack for a loaded machine
STOP_TIMEOUT_S = 15.0  # s from SIGTERM to SIGKILL for the processes started here
BURST_TIMEOUT_S = 300.0  # s: a burst must be through within this, or the part fails
WARMUP_JOBS = 3  # calculator jobs through each worker before a burst is timed (first-call costs)
TRANSPORT_WARMUP = 50  # round trips per variant before timing (connections, allocator, caches)
TRANSPORT_ROUNDS = 5  # variants alternate in this many rounds, so drift on a noisy machine hits all alike
TRANSPORT_BATCHES = (1, 8)  # sessions per tick: one, and the node's default --max-sessions
# A reply later than this means the responder died; the first one also waits for the responder to start
# (a spawned process imports this module: ~2 s).
TRANSPORT_BLOCK_MS = 60_000
STREAM_MAXLEN = 1000  # entries kept per transport stream (approximate trim): bounds the throwaway Redis
PCM_AMPLITUDE = 3000  # of the stand-in audio; its base64 size does not depend on what it sounds like
SETTLE_S = 2.0  # s after the sessions connect before a tick phase starts (ICE, first packets)
LOAD_JOBS_IN_FLIGHT = 2  # one running and one queued, so the background worker never waits for work
SESSION_START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Sizes:
    tool_questions: int  # per queue
    open_questions: int  # per queue
    burst_jobs: int
    burst_repeats: int  # per configuration
    round_trips: int  # per transport variant and batch size
    tick_phase_s: float  # per load level


QUICK = Sizes(tool_questions=2, open_questions=1, burst_jobs=20, burst_repeats=1, round_trips=200,
              tick_phase_s=5.0)
FULL = Sizes(tool_questions=40, open_questions=20, burst_jobs=200, burst_repeats=5, round_trips=2000,
             tick_phase_s=30.0)

REDIS_MODE = "redis (worker process)"
IN_PROCESS_MODE = "in-process"


def question_payload(question: str) -> dict[str, Any]:
    return {"question": question, "conversation": [], "instructions": ""}


def unique(name: str) -> str:
    """A session id no earlier run on the same Redis used."""
    return f"bench-{name}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------------------
# Processes started here


@contextlib.asynccontextmanager
async def worker_processes(url: str, queue: JobQueue) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Yields ``add()``, which starts one more ``microturn background`` process on ``url`` and returns once
    every process started so far has answered a question through ``queue``; all are stopped on exit."""
    procs: dict[str, subprocess.Popen[bytes]] = {}  # by consumer name

    async def add() -> None:
        consumer = f"bench-{os.getpid()}-{len(procs)}"
        procs[consumer] = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "background",
             "--redis-url", url, "--consumer", consumer],
            cwd=ROOT,
        )
        await until_all_answered(queue, procs)

    try:
        yield add
    finally:
        for proc in procs.values():
            stop_process(proc, STOP_TIMEOUT_S)


async def until_all_answered(queue: JobQueue, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Ask open questions, one per worker at a time, until each worker has run one: then all of them take
    jobs, and each has paid its first generation's one-time costs, which no timed job should include.

    A blocked XREADGROUP does not list its consumer in the group (Redis 7.0), so the queue's own ``running``
    updates, which name the consumer, are what tells the workers apart.
    """
    seen: set[str] = set()
    async with asyncio.timeout(WORKER_START_TIMEOUT_S):
        while not procs.keys() <= seen:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"background worker {name} exited with {proc.returncode}")
            # Queued together: a worker still loading leaves its job to one that is busy with another.
            question = question_payload(OPEN_QUESTIONS[0])
            jobs = [await queue.submit(unique("warm-up"), BACKGROUND_JOB_KIND, question) for _ in procs]
            for job in jobs:
                async with contextlib.aclosing(follow_job(queue, job)) as updates:
                    async for update in updates:
                        if update.status is JobStatus.RUNNING and update.data is not None:
                            seen.add(str(update.data["consumer"]))


@contextlib.asynccontextmanager
async def redis_queue(url: str) -> AsyncIterator[JobQueue]:
    """The Redis job queue as a requester (the media node) uses it: default prefix, like the workers."""
    queue = await open_job_queue(url)
    try:
        yield queue
    finally:
        await queue.close()


@contextlib.asynccontextmanager
async def in_process_worker(handler: JobHandler) -> AsyncIterator[JobQueue]:
    """An in-process queue with one ``serve_jobs`` task on this loop, as ``microturn serve`` embeds it."""
    queue = InProcessJobQueue()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_jobs(queue, "bench-in-process", handler, stop=stop))
    try:
        yield queue
    finally:
        stop.set()
        await task
        await queue.close()


# ---------------------------------------------------------------------------------------------------------
# 1. Latency


@dataclass
class JobTiming:
    first_partial_ms: float
    done_ms: float


@dataclass
class LatencyResult:
    mode: str
    kind: str  # "tool" | "open"
    first_partial_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    misses: int = 0

    def summary(self) -> dict[str, Any]:
        return {"first_partial": percentiles(self.first_partial_ms), "done": percentiles(self.done_ms),
                **asdict(self)}


async def time_job(queue: JobQueue, question: str) -> JobTiming | None:
    """Submit one job and follow it as a requester does; None if it failed or timed out."""
    t0 = time.monotonic()
    job = await queue.submit(unique("latency"), BACKGROUND_JOB_KIND, question_payload(question))
    first: float | None = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(JOB_TIMEOUT_S), contextlib.aclosing(follow_job(queue, job)) as updates:
            async for update in updates:
                now = time.monotonic()
                if update.status is JobStatus.PARTIAL and first is None:
                    first = now
                elif update.status is JobStatus.DONE and first is not None:
                    return JobTiming((first - t0) * 1000, (now - t0) * 1000)
                elif update.status.final:
                    break
    await queue.cancel(job.id)  # a no-op when final; otherwise the worker stops working on it
    return None


async def bench_latency(sizes: Sizes, handler: JobHandler, url: str) -> list[LatencyResult]:
    plan = [("tool", TOOL_QUESTIONS[i % len(TOOL_QUESTIONS)]) for i in range(sizes.tool_questions)]
    plan += [("open", OPEN_QUESTIONS[i % len(OPEN_QUESTIONS)]) for i in range(sizes.open_questions)]
    results = {(mode, kind): LatencyResult(mode, kind)
               for mode in (REDIS_MODE, IN_PROCESS_MODE) for kind in ("tool", "open")}
    async with (
        redis_queue(url) as remote,
        worker_processes(url, remote) as add_worker,
        in_process_worker(handler) as local,
    ):
        await add_worker()  # its first (untimed) answer is its warm-up
        # The same warm-up for this process's agent: its first generation pays one-time allocation costs.
        if await time_job(local, OPEN_QUESTIONS[0]) is None:
            raise RuntimeError("warm-up job through the in-process queue did not finish")
        queues = {REDIS_MODE: remote, IN_PROCESS_MODE: local}
        for i, (kind, question) in enumerate(plan, 1):
            modes = list(queues) if i % 2 else list(reversed(queues))  # neither always goes first
            for mode in modes:
                timing = await time_job(queues[mode], question)
                result = results[mode, kind]
                if timing is None:
                    result.misses += 1
                    shown = "missed"
                else:
                    result.first_partial_ms.append(timing.first_partial_ms)
                    result.done_ms.append(timing.done_ms)
                    shown = f"first partial {timing.first_partial_ms:.0f} ms, done {timing.done_ms:.0f} ms"
                print(f"  [{i}/{len(plan)}] {mode}, {kind} {question!r}: {shown}", flush=True)
    return list(results.values())


# ---------------------------------------------------------------------------------------------------------
# 2. Throughput


@dataclass
class ThroughputResult:
    mode: str
    workers: int
    jobs_per_s: list[float] = field(default_factory=list)  # one per burst
    failed: int = 0

    def summary(self) -> dict[str, Any]:
        return {"jobs_per_s_median": median(self.jobs_per_s), **asdict(self)}


def median(values: Sequence[float]) -> float:
    return percentiles(values).get("p50", float("nan"))


async def burst(queue: JobQueue, jobs: int) -> tuple[float, int]:
    """Submit ``jobs`` calculator jobs at once; (jobs/s from the first submit to the last final update,
    jobs that did not end ``done``)."""
    session = unique("burst")
    finals = 0
    failed = 0
    all_final = asyncio.Event()
    last_final = 0.0

    async def follow() -> None:
        nonlocal finals, failed, last_final
        async with contextlib.aclosing(queue.updates(session)) as updates:
            async for update in updates:
                if update.status.final:
                    finals += 1
                    failed += update.status is not JobStatus.DONE
                    last_final = time.monotonic()
                    if finals == jobs:
                        all_final.set()
                        return

    reader = asyncio.create_task(follow())
    try:
        t0 = time.monotonic()
        for i in range(jobs):
            question = CALCULATOR_QUESTIONS[i % len(CALCULATOR_QUESTIONS)]
            # The longest deadline: a burst measures throughput, and queueing is what a burst does.
            await queue.submit(session, BACKGROUND_JOB_KIND, question_payload(question), MAX_DEADLINE_S)
        async with asyncio.timeout(BURST_TIMEOUT_S):
            await all_final.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return jobs / (last_final - t0), failed


async def bench_throughput(sizes: Sizes, handler: JobHandler, url: str) -> list[ThroughputResult]:
    one_redis = ThroughputResult(REDIS_MODE, 1)
    one_local = ThroughputResult(IN_PROCESS_MODE, 1)
    two_redis = ThroughputResult(REDIS_MODE, 2)

    async def run(result: ThroughputResult, queue: JobQueue, repeat: int) -> None:
        rate, failed = await burst(queue, sizes.burst_jobs)
        result.jobs_per_s.append(rate)
        result.failed += failed
        print(f"  [{repeat}/{sizes.burst_repeats}] {result.mode}, {result.workers} worker(s): "
              f"{sizes.burst_jobs} jobs at {rate:.1f} jobs/s, {failed} not done", flush=True)

    async with (
        redis_queue(url) as remote,
        worker_processes(url, remote) as add_worker,
        in_process_worker(handler) as local,
    ):
        await add_worker()
        await burst(remote, WARMUP_JOBS)
        await burst(local, WARMUP_JOBS)
        for repeat in range(1, sizes.burst_repeats + 1):
            pairs = [(one_redis, remote), (one_local, local)]
            for result, queue in pairs if repeat % 2 else reversed(pairs):
                await run(result, queue, repeat)
        await add_worker()
        await burst(remote, WARMUP_JOBS)
        for repeat in range(1, sizes.burst_repeats + 1):
            await run(two_redis, remote, repeat)
    return [one_redis, one_local, two_redis]


# ---------------------------------------------------------------------------------------------------------
# 3. Transport


def stand_in_pcm(seed: int) -> PcmArray:
    rng = np.random.default_rng(seed)
    return rng.integers(-PCM_AMPLITUDE, PCM_AMPLITUDE, SAMPLES_PER_TURN, dtype=np.int16)


def sample_turns(batch: int, index: int) -> list[MicroTurn]:
    """One tick's batch: each session heard 200 ms of audio and typed twice."""
    t_ms = index * MICRO_TURN_MS
    return [
        MicroTurn(
            session_id=f"session-{s}",
            index=index,
            t_ms=t_ms,
            pcm=stand_in_pcm(s),
            texts=[TextInput(t_ms + 20, "what is twelve times thirteen"),
                   TextInput(t_ms + 140, "and what time is it in tokyo")],
        )
        for s in range(batch)
    ]


def answer(turns: Sequence[MicroTurn], chunk: PcmArray) -> list[MicroTurnOutput]:
    """What a model worker sends back: the next 200 ms of a reply and a transcript, per session."""
    return [
        MicroTurnOutput(session_id=t.session_id, index=t.index, action=Action.CONTINUE,
                        text="The moon is about", pcm=chunk,
                        transcripts=[Transcript("what is twelve times thirteen", final=False)])
        for t in turns
    ]


def encode(items: Sequence[MicroTurn] | Sequence[MicroTurnOutput]) -> str:
    return json.dumps([item.to_dict() for item in items], separators=(",", ":"))


# XREAD's reply with bytes responses, as redis-py returns it (its stubs cannot say so).
StreamsReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


def respond_forever(url: str, turns_key: str, outputs_key: str) -> None:
    """The responder process: answers each batch on ``turns_key`` on ``outputs_key``, as a model worker
    behind Redis would (minus the model)."""

    async def serve() -> None:
        r = aioredis.Redis.from_url(url)
        chunk = stand_in_pcm(seed=99)
        cursor: bytes | str = "0-0"  # from the start: the requester may write before this process is up
        while True:
            # BLOCK 0: wait indefinitely.
            reply = cast(StreamsReply, await r.xread({turns_key: cursor}, count=1, block=0))
            for _, entries in reply:
                for entry_id, fields in entries:
                    cursor = entry_id
                    turns = [MicroTurn.from_dict(d) for d in json.loads(fields[b"batch"])]
                    await r.xadd(outputs_key, {"batch": encode(answer(turns, chunk))},
                                 maxlen=STREAM_MAXLEN, approximate=True)

    asyncio.run(serve())


@dataclass
class TransportResult:
    transport: str
    batch: int
    json_bytes_out: int  # JSON of one tick's MicroTurn batch; 0 where objects are passed
    json_bytes_back: int  # JSON of its MicroTurnOutputs; 0 where objects are passed
    round_trip_us: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"round_trip_us_stats": percentiles(self.round_trip_us), **asdict(self)}


class RedisHop:
    """The requester side of the Redis transport: XADD a batch, XREAD its answer."""

    def __init__(self, r: aioredis.Redis, turns_key: str, outputs_key: str) -> None:
        self.r, self.turns_key, self.outputs_key = r, turns_key, outputs_key
        self.cursor: bytes | str = "0-0"

    async def __call__(self, turns: list[MicroTurn]) -> list[MicroTurnOutput]:
        await self.r.xadd(self.turns_key, {"batch": encode(turns)}, maxlen=STREAM_MAXLEN, approximate=True)
        reply = cast(StreamsReply, await self.r.xread({self.outputs_key: self.cursor}, count=1,
                                                      block=TRANSPORT_BLOCK_MS))
        if not reply:
            raise TimeoutError(f"no answer from the responder within {TRANSPORT_BLOCK_MS} ms")
        entry_id, fields = reply[0][1][0]
        self.cursor = entry_id
        return [MicroTurnOutput.from_dict(d) for d in json.loads(fields[b"batch"])]


class QueueHop:
    """The in-process transport: an asyncio queue each way and a responder task on this loop; with
    ``serialise`` both sides also do the JSON round trip the Redis transport does."""

    def __init__(self, serialise: bool) -> None:
        self.serialise = serialise
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        self.chunk = stand_in_pcm(seed=99)
        self.task = asyncio.create_task(self._respond())

    async def _respond(self) -> None:
        while True:
            request = await self.requests.get()
            if self.serialise:
                turns = [MicroTurn.from_dict(d) for d in json.loads(request)]
                self.replies.put_nowait(encode(answer(turns, self.chunk)))
            else:
                self.replies.put_nowait(answer(request, self.chunk))

    async def __call__(self, turns: list[MicroTurn]) -> list[MicroTurnOutput]:
        self.requests.put_nowait(encode(turns) if self.serialise else turns)
        reply = await self.replies.get()
        if self.serialise:
            return [MicroTurnOutput.from_dict(d) for d in json.loads(reply)]
        return cast(list[MicroTurnOutput], reply)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


Hop = Callable[[list[MicroTurn]], Awaitable[list[MicroTurnOutput]]]


async def round_trips(hop: Hop, batch: int, count: int, first_index: int) -> list[float]:
    """``count`` sequential round trips; µs each, from before serialising to after deserialising."""
    times = []
    for i in range(first_index, first_index + count):
        turns = sample_turns(batch, i)  # built outside the timed span: the node has them already
        t0 = time.perf_counter_ns()
        outputs = await hop(turns)
        times.append((time.perf_counter_ns() - t0) / 1000)
        if [o.index for o in outputs] != [t.index for t in turns]:
            raise RuntimeError(f"round trip {i} came back with the wrong outputs")
    return times


OBJECTS_HOP = "in-process queue (objects)"


async def bench_transport(sizes: Sizes, url: str) -> list[TransportResult]:
    turns_key, outputs_key = f"bench:{uuid.uuid4().hex[:8]}:turns", f"bench:{uuid.uuid4().hex[:8]}:outputs"
    # spawn, not fork: a forked child would inherit this process's event loop and Redis connections.
    responder = multiprocessing.get_context("spawn").Process(
        target=respond_forever, args=(url, turns_key, outputs_key), daemon=True)
    responder.start()
    r = aioredis.Redis.from_url(url)
    hops: dict[str, Hop] = {
        "redis (responder process)": RedisHop(r, turns_key, outputs_key),
        OBJECTS_HOP: QueueHop(serialise=False),
        "in-process queue + JSON": QueueHop(serialise=True),
    }
    results: list[TransportResult] = []
    try:
        index = 0
        for batch in TRANSPORT_BATCHES:
            turns = sample_turns(batch, 0)
            out, back = len(encode(turns)), len(encode(answer(turns, stand_in_pcm(seed=99))))
            by_hop = {name: TransportResult(name, batch, *((0, 0) if name == OBJECTS_HOP else (out, back)))
                      for name in hops}
            for hop in hops.values():
                await round_trips(hop, batch, TRANSPORT_WARMUP, index)
                index += TRANSPORT_WARMUP
            per_round = sizes.round_trips // TRANSPORT_ROUNDS
            for rnd in range(1, TRANSPORT_ROUNDS + 1):
                for name, hop in hops.items():
                    by_hop[name].round_trip_us += await round_trips(hop, batch, per_round, index)
                    index += per_round
                shown = ", ".join(f"{name} p50 {median(res.round_trip_us):.0f} µs"
                                  for name, res in by_hop.items())
                print(f"  batch {batch}, round {rnd}/{TRANSPORT_ROUNDS}: {shown}", flush=True)
            results += by_hop.values()
    finally:
        for hop in hops.values():
            if isinstance(hop, QueueHop):
                await hop.close()
        await r.aclose()
        responder.terminate()
        responder.join(STOP_TIMEOUT_S)
    return results


# ---------------------------------------------------------------------------------------------------------
# 4. Ticks


@dataclass
class TickResult:
    load: str
    ticks: int = 0
    deadline_misses: int = 0
    # /healthz at the phase's start (after connecting and settling) and end; a node's percentiles cover all
    # of its steps, which is why each phase has a node of its own.
    step_ms_before: dict[str, float] = field(default_factory=dict)
    step_ms: dict[str, float] = field(default_factory=dict)
    background_jobs_done: int = 0

    @property
    def within_deadline(self) -> float:
        return 1 - self.deadline_misses / self.ticks if self.ticks else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"within_deadline": self.within_deadline, **asdict(self)}


async def snapshot(http: aiohttp.ClientSession, url: str) -> tuple[int, int, dict[str, float]]:
    """(ticks, deadline misses) from the node's /metrics, and its worker's step-time percentiles."""
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    counts = []
    for name in ("microturn_ticks_total", "microturn_deadline_misses_total"):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"{name} not in {url}/metrics")
        counts.append(round(float(match.group(1))))
    async with http.get(f"{url}/healthz") as resp:
        health = await resp.json()
    return counts[0], counts[1], health["worker"]["step_ms"]


async def keep_busy(queue: JobQueue, seconds: float) -> int:
    """Keep the background worker answering open questions for ``seconds``; returns the jobs it finished."""
    session = unique("load")
    in_flight: set[str] = set()
    done = 0
    asked = 0

    async def ask() -> None:
        nonlocal asked
        job = await queue.submit(session, BACKGROUND_JOB_KIND,
                                 question_payload(OPEN_QUESTIONS[asked % len(OPEN_QUESTIONS)]))
        asked += 1
        in_flight.add(job.id)

    for _ in range(LOAD_JOBS_IN_FLIGHT):
        await ask()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds), contextlib.aclosing(queue.updates(session)) as updates:
            async for update in updates:
                if update.status.final and update.job_id in in_flight:
                    in_flight.discard(update.job_id)
                    done += update.status is JobStatus.DONE
                    await ask()
    for job_id in in_flight:  # so the node's worker is idle again when the next phase starts
        await queue.cancel(job_id)
    return done


async def tick_phase(loaded: bool, seconds: float) -> TickResult:
    """A fresh node with two silent sessions for ``seconds``; with ``loaded``, its background worker busy."""
    result = TickResult("open LLM questions" if loaded else "none")
    with redis_server() as redis_url:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/microturn"), "--log-level", "WARNING", "serve", "--port", str(port),
             "--redis-url", redis_url, "--background-workers", "1"],
            cwd=ROOT,
        )
        clients: list[AgentClient] = []
        try:
            await wait_healthy(url, proc)
            async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
                mode = (await resp.json())["jobs"]
            if mode != "redis":
                raise RuntimeError(f"the node runs its job queue {mode}, not on {redis_url}")
            for _ in range(2):
                client = AgentClient(url)
                clients.append(client)
                await client.connect()  # its microphone streams silence while nothing is said
                await client.wait_for("session.started", timeout=SESSION_START_TIMEOUT_S)
            await asyncio.sleep(SETTLE_S)
            async with aiohttp.ClientSession() as http:
                ticks0, misses0, result.step_ms_before = await snapshot(http, url)
                if loaded:
                    async with redis_queue(redis_url) as queue:  # the node's queue: same URL and prefix
                        result.background_jobs_done = await keep_busy(queue, seconds)
                else:
                    await asyncio.sleep(seconds)
                ticks1, misses1, result.step_ms = await snapshot(http, url)
            result.ticks, result.deadline_misses = ticks1 - ticks0, misses1 - misses0
        finally:
            for client in clients:
                # The node may be what failed: hang up anyway, and let its error be the one reported.
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await client.close()
            stop_process(proc, STOP_TIMEOUT_S)
    return result


async def bench_ticks(sizes: Sizes) -> list[TickResult]:
    results = []
    for i, loaded in enumerate((False, True), 1):
        result = await tick_phase(loaded, sizes.tick_phase_s)
        print(f"  [{i}/2] background load {result.load}: {result.ticks} ticks, {result.deadline_misses} "
              f"deadline misses, {result.within_deadline:.2%} within deadline, step p95 "
              f"{result.step_ms.get('p95', float('nan')):.1f} ms, {result.background_jobs_done} jobs done",
              flush=True)
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------------------
# Report


def fmt(stats: dict[str, float], key: str, spec: str = ".0f") -> str:
    return format(stats[key], spec) if key in stats else "–"


def markdown(latency: list[LatencyResult], throughput: list[ThroughputResult],
             transport: list[TransportResult], ticks: list[TickResult], sizes: Sizes) -> str:
    out: list[str] = []
    if latency:
        out += [
            "**Background latency** (embedded SmolLM2 agent, one job at a time; ms from submit; the first "
            "partial is the tool call for tool questions, the first phrase for open ones)",
            "",
            "| questions | queue | answered | first partial p50 | p95 | done p50 | p95 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in latency:
            first, done = percentiles(r.first_partial_ms), percentiles(r.done_ms)
            out.append(f"| {r.kind} | {r.mode} | {len(r.done_ms)}/{len(r.done_ms) + r.misses} "
                       f"| {fmt(first, 'p50', '.1f')} | {fmt(first, 'p95', '.1f')} "
                       f"| {fmt(done, 'p50', '.1f')} | {fmt(done, 'p95', '.1f')} |")
        out.append("")
    if throughput:
        out += [
            f"**Jobs/s** (bursts of {sizes.burst_jobs} calculator jobs, first submit to last `done`)",
            "",
            "| queue | workers | jobs/s (median) | each burst | not done |",
            "|---|---|---|---|---|",
        ]
        for t in throughput:
            each = ", ".join(f"{rate:.1f}" for rate in t.jobs_per_s)
            out.append(f"| {t.mode} | {t.workers} | {median(t.jobs_per_s):.1f} | {each} | {t.failed} |")
        out.append("")
    if transport:
        out += [
            "**MicroTurn round trip** (prices the future distributed model-worker transport; µs)",
            "",
            "| transport | sessions per batch | JSON out / back (bytes) | p50 | p95 | p99 | n |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in transport:
            rt = percentiles(x.round_trip_us)
            moved = f"{x.json_bytes_out} / {x.json_bytes_back}" if x.json_bytes_out else "–"
            out.append(f"| {x.transport} | {x.batch} | {moved} | {fmt(rt, 'p50')} "
                       f"| {fmt(rt, 'p95')} | {fmt(rt, 'p99')} | {len(x.round_trip_us)} |")
        out.append("")
    if ticks:
        out += [
            f"**Tick deadline** (`microturn serve`, 2 silent aiortc sessions, {sizes.tick_phase_s:.0f} s per "
            "row, a fresh node each)",
            "",
            "| background load | ticks | deadline misses | within deadline | step p50 / p95 / max (ms) "
            "| background jobs done |",
            "|---|---|---|---|---|---|",
        ]
        for k in ticks:
            out.append(f"| {k.load} | {k.ticks} | {k.deadline_misses} | {k.within_deadline:.2%} "
                       f"| {fmt(k.step_ms, 'p50', '.1f')} / {fmt(k.step_ms, 'p95', '.1f')} "
                       f"/ {fmt(k.step_ms, 'max', '.1f')} | {k.background_jobs_done} |")
    return "\n".join(out).rstrip()


PARTS = ("latency", "throughput", "transport", "ticks")


@contextlib.contextmanager
def part(name: str, index: int, total: int) -> Iterator[None]:
    print(f"[{index}/{total}] {name}", flush=True)
    t0 = time.monotonic()
    yield
    print(f"[{index}/{total}] {name}: {time.monotonic() - t0:.0f} s", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds per part (smoke run)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    sizes = QUICK if args.quick else FULL
    handler: JobHandler | None = None
    if {"latency", "throughput"} & set(parts):
        # The in-process queue's worker runs this process's own agent, as `microturn serve` embeds it.
        handler = background_handler(await asyncio.to_thread(create_background_agent, BackgroundConfig()))
    latency: list[LatencyResult] = []
    throughput: list[ThroughputResult] = []
    transport: list[TransportResult] = []
    ticks: list[TickResult] = []
    started = time.strftime("%Y%m%d-%H%M%S")
    for i, name in enumerate(parts, 1):
        with part(name, i, len(parts)):
            if name == "ticks":
                ticks = await bench_ticks(sizes)
                continue
            # A Redis of the part's own: nothing one part left queued can reach the next part's workers.
            with redis_server() as url:
                if name == "latency":
                    assert handler is not None
                    latency = await bench_latency(sizes, handler, url)
                elif name == "throughput":
                    assert handler is not None
                    throughput = await bench_throughput(sizes, handler, url)
                else:
                    transport = await bench_transport(sizes, url)
    table = markdown(latency, throughput, transport, ticks, sizes)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"background-{started}.json"
    path.write_text(json.dumps(
        {
            "benchmark": "background",
            "set": "quick" if args.quick else "full",
            "cpu_count": os.cpu_count(),
            "sizes": asdict(sizes),
            "latency": [r.summary() for r in latency],
            "throughput": [r.summary() for r in throughput],
            "transport": [r.summary() for r in transport],
            "ticks": [r.summary() for r in ticks],
            "table": table,
        },
        indent=2,
    ))
    print(f"wrote {path}")
    missed = sum(r.misses for r in latency) + sum(t.failed for t in throughput)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
