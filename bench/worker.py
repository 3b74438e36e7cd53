"""The model worker's round trip: node -> worker -> node through Redis, against the in-process worker.

What the tick pays for ``--model-workers redis``: the wall time of ``Worker.step(batch)`` on the node, for
1, 4 and 8 sessions per batch, with

- **redis**: the node's real :class:`~service.remote_worker.RedisWorkerClient` (placement, the shared
  conversation context kept in Redis, XADD to the worker's inbox, XREAD of the reply stream, JSON with
  base64 PCM both ways) and a real worker (:func:`~service.remote_worker.serve_model_worker`) in another
  process;
- **in-process**: :class:`~service.worker.InProcessWorker` (the hop to the model thread and back).

Both step the same stand-in model, which costs nothing and answers every micro-turn like an agent that is
speaking: the next 200 ms of audio, a new phrase every second and a new reply every 5 s (so the shared
conversation context changes as often as in a conversation). So the numbers are the transport alone; a
real model's step time adds to both alike. The variants take turns round trip by round trip, so drift on a
noisy machine hits both alike. A round trip slower than the 200 ms deadline comes back unanswered and is
counted.

Redis is a throwaway ``redis-server`` on a free port (``tests/redis_server.py``); the Redis the machine may
run on 6379 is never touched. Only the worker process started here is stopped.

    .venv/bin/python -m bench.worker            # full (about 1 minute)
    .venv/bin/python -m bench.worker --quick    # smoke (about 10 s)

Writes bench/results/worker-<time>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.base import InteractionModel
from service.metrics import NodeMetrics
from service.microturn import (
    MICRO_TURN_MS,
    SAMPLES_PER_TURN,
    Action,
    MicroTurn,
    MicroTurnOutput,
    Transcript,
    pack_batch,
)
from service.remote_worker import Keys, RedisWorkerClient, serve_model_worker
from service.stats import percentiles
from service.worker import InProcessWorker, Worker
from tests.fakes import noise
from tests.redis_server import redis_server

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 4, 8)  # sessions per tick: one, a few, the node's default --max-sessions
CAPACITY = 64  # sessions the bench worker takes: every batch size fits
WARMUP = 50  # round trips per variant and batch size before timing (connections, allocator, caches)
# Idle time after each round trip: real ticks are 200 ms apart, and without a gap one variant's round trip
# would start while the other's worker process and Redis still finish theirs (measured: in-process p50
# 45 -> 440 µs).
PACE_S = 0.002
WORKER_START_S = 30.0  # the worker process registers in < 2 s; slack for a loaded machine
STOP_TIMEOUT_S = 10.0  # s from SIGTERM to SIGKILL of the worker process
PHRASE_TURNS = 5  # micro-turns per phrase of the stand-in reply (1 s)
REPLY_TURNS = 25  # micro-turns per stand-in reply (5 s)
QUICK_ROUND_TRIPS = 300  # per variant and batch size
FULL_ROUND_TRIPS = 3000
REDIS = "redis (worker process)"
IN_PROCESS = "in-process"


class SpeakingModel(InteractionModel):
    """Answers every micro-turn with the next 200 ms of a reply, at no cost."""

    name = "bench-speaking"

    def __init__(self) -> None:
        self.chunk = noise(SAMPLES_PER_TURN, seed=99)

    def step(self, batch: Sequence[MicroTurn]) -> list[MicroTurnOutput]:
        return [self._answer(mt) for mt in batch]

    def _answer(self, mt: MicroTurn) -> MicroTurnOutput:
        out = MicroTurnOutput(session_id=mt.session_id, index=mt.index, pcm=self.chunk,
                              action=Action.SPEAK if mt.index % REPLY_TURNS == 0 else Action.CONTINUE)
        if mt.index % PHRASE_TURNS == 0:
            out.text = "The moon is about three hundred and eighty thousand kilometres away."
            out.transcripts = [Transcript("how far away is the moon", final=True)]
        return out

    def close_session(self, session_id: str) -> None:
        pass


def run_worker(url: str, prefix: str) -> None:
    """The worker process: a real ``microturn worker`` loop around the stand-in model until SIGTERM."""

    async def serve() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await serve_model_worker(url, SpeakingModel(), "bench", CAPACITY, prefix=prefix, stop=stop)

    asyncio.run(serve())


def batch_of(sessions: int, index: int) -> list[MicroTurn]:
    """One tick: each session heard 200 ms of audio (its session ids are its own per batch size)."""
    return [MicroTurn(session_id=f"b{sessions}-s{s}", index=index, t_ms=index * MICRO_TURN_MS,
                      pcm=noise(SAMPLES_PER_TURN, seed=s)) for s in range(sessions)]


@dataclass
class Result:
    worker: str
    batch: int
    round_trip_us: list[float] = field(default_factory=list)
    unanswered: int = 0  # micro-turns that came back without the model's answer (deadline missed)

    def summary(self) -> dict[str, Any]:
        return {"round_trip_us_stats": percentiles(self.round_trip_us), **asdict(self)}


async def round_trip(worker: Worker, result: Result, index: int) -> None:
    batch = batch_of(result.batch, index)  # built outside the timed span: the node has it already
    t0 = time.perf_counter_ns()
    outputs = await worker.step(batch)
    result.round_trip_us.append((time.perf_counter_ns() - t0) / 1000)
    result.unanswered += sum(1 for out in outputs if not len(out.pcm))
    await asyncio.sleep(PACE_S)


async def wait_registered(url: str, prefix: str, proc: multiprocessing.process.BaseProcess) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        give_up = time.monotonic() + WORKER_START_S
        while not await r.exists(Keys(prefix).worker("bench")):
            if not proc.is_alive() or time.monotonic() > give_up:
                raise RuntimeError(f"the bench worker did not register within {WORKER_START_S} s")
            await asyncio.sleep(0.05)
    finally:
        await r.aclose()


async def bench(url: str, round_trips_each: int) -> list[Result]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    # spawn, not fork: a forked child would inherit this process's event loop and connections.
    proc = multiprocessing.get_context("spawn").Process(target=run_worker, args=(url, prefix), daemon=True)
    proc.start()
    remote = RedisWorkerClient(url, NodeMetrics(), prefix=prefix)
    local = InProcessWorker(SpeakingModel(), NodeMetrics(), CAPACITY)
    workers: dict[str, Worker] = {REDIS: remote, IN_PROCESS: local}
    results: list[Result] = []
    try:
        await wait_registered(url, prefix, proc)
        for worker in workers.values():
            await worker.start()
        for size in BATCHES:
            rows = {name: Result(name, size) for name in workers}
            warmup = {name: Result(name, size) for name in workers}  # measured, then thrown away
            # Round trip by round trip, the variants take turns: machine noise hits both alike.
            for index in range(WARMUP + round_trips_each):
                for name, worker in workers.items():
                    await round_trip(worker, (rows if index >= WARMUP else warmup)[name], index)
            shown = ", ".join(f"{name} p50 {np.median(row.round_trip_us):.0f} µs"
                              for name, row in rows.items())
            print(f"  {size} session(s) per batch: {shown}", flush=True)
            results += rows.values()
    finally:
        for worker in workers.values():
            await worker.close()
        if proc.is_alive():
            proc.terminate()  # SIGTERM: the worker unregisters and stops
            proc.join(STOP_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return results


def wire_bytes() -> tuple[int, int]:
    """Bytes of one session's micro-turn and of its output as the Redis transport sends them (pack_batch)."""
    turns = batch_of(1, 0)
    return sum(map(len, pack_batch(turns))), sum(map(len, pack_batch(SpeakingModel().step(turns))))


def markdown(results: Sequence[Result]) -> str:
    mt_bytes, out_bytes = wire_bytes()
    lines = [
        "**Model worker round trip** (node `Worker.step(batch)` wall time, µs; a stand-in model that costs "
        f"nothing and speaks; {mt_bytes} B out and {out_bytes} B back per session; round trips 2 ms apart)",
        "",
        "| worker | sessions per batch | p50 | p95 | p99 | max | unanswered | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = percentiles(r.round_trip_us)
        lines.append(f"| {r.worker} | {r.batch} | {p['p50']:.0f} | {p['p95']:.0f} | {p['p99']:.0f} "
                     f"| {p['max']:.0f} | {r.unanswered} | {len(r.round_trip_us)} |")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUND_TRIPS} round trips per row (smoke)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    count = QUICK_ROUND_TRIPS if args.quick else FULL_ROUND_TRIPS
    started = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    with redis_server() as url:
        results = await bench(url, count)
    table = markdown(results)
    print(table)
    print(f"({time.monotonic() - t0:.0f} s)")
    samples = [r.summary() for r in results]  # the raw round trips too, for other statistics later
    mode = "quick" if args.quick else "full"
    path = args.out / f"worker-{started}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "worker", "set": mode, "cpu_count": os.cpu_count(),
                                "round_trips": count, "results": samples, "table": table}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
