"""Worker step time and CPU per session, and mouth-to-ear response latency, black box over WebRTC.

For each model (the micro-turn policy and the turn-based baseline, in the same run) this starts a real
``microturn serve`` process (bench/suite/server.py), connects aiortc clients through the public signalling
endpoint and measures:

- the worker's step time per tick (the server's /healthz percentiles after the run);
- server CPU per connected session (from /proc, idle sessions streaming silence, and during the questions);
- response latency: the Latency suite's spoken questions without impairment (bench/cases/latency.json),
  played, recorded and scored by the suite's runner (end of the user's speech -> first audible agent
  audio at the client). ``microturn bench latency`` measures the same under packet loss and jitter;
- ticks on time with two sessions talking at once: the questions again, two at a time, and the share of
  the node's ticks whose batch came back within the 200 ms micro-turn (its /metrics counters).

    .venv/bin/python -m bench.latency            # full set
    .venv/bin/python -m bench.latency --quick    # smoke set (CI)

Writes bench/results/latency-<time>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.suite.cases import CASES_DIR, Case, Network, load_cases
from bench.suite.runner import analyse, case_audio, run_case
from bench.suite.scoring import score_latency
from bench.suite.server import ROOT, scrape_node, serve_model
from bench.suite.server import free_port as free_port  # re-exported: bench/background.py imports them here
from bench.suite.server import wait_healthy as wait_healthy
from service.client import AgentClient
from service.stats import percentiles

QUICK_QUESTIONS = 3
CPU_WINDOW = 10.0  # s of steady state over which server CPU is measured
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class ModelResult:
    model: str
    latencies_ms: list[float] = field(default_factory=list)
    misses: int = 0
    step_ms: dict[str, float] = field(default_factory=dict)
    cpu_idle_node: float = 0.0  # cores, no session
    cpu_per_idle_session: float = 0.0  # cores per connected session streaming silence
    cpu_talking_session: float = 0.0  # cores while one session asks questions and is answered
    concurrent_ticks: float = 0.0  # node ticks while two sessions ask questions at once
    concurrent_misses: float = 0.0  # of those, batches back later than one micro-turn

    @property
    def concurrent_on_time(self) -> float:
        return 1.0 - self.concurrent_misses / self.concurrent_ticks if self.concurrent_ticks else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "latency_ms": percentiles(self.latencies_ms),
            "concurrent_on_time": self.concurrent_on_time,
            **asdict(self),
        }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def measure_cpu(pid: int, seconds: float) -> float:
    before, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - t0)


async def bench_model(model: str, questions: list[Case], progress: str) -> ModelResult:
    result = ModelResult(model=model)
    async with serve_model(model) as server:
        url, pid = server.url, server.proc.pid
        result.cpu_idle_node = await measure_cpu(pid, CPU_WINDOW / 2)

        idle = [AgentClient(url) for _ in range(2)]
        for client in idle:
            await client.connect()
        result.cpu_per_idle_session = (await measure_cpu(pid, CPU_WINDOW) - result.cpu_idle_node) / len(idle)
        for client in idle:
            await client.close()

        cpu_before, t0 = cpu_seconds(pid), time.monotonic()
        for i, case in enumerate(questions, 1):
            recording = await run_case(url, case, Network(), await asyncio.to_thread(case_audio, case))
            latency = score_latency(case, analyse(recording, transcriber=None)).metrics["latency_ms"]
            voice = case.segments[0].voice
            shown = f"{latency:.0f} ms" if isinstance(latency, float) else "missed"
            print(
                f"  {progress} {model}: [{i}/{len(questions)}] {case.summary!r} ({voice}) -> {shown}",
                flush=True,
            )
            if isinstance(latency, float):
                result.latencies_ms.append(latency)
            else:
                result.misses += 1
        result.cpu_talking_session = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - t0)

        # Two sessions at once, each playing one question, pair after pair: the tick must keep its 200 ms.
        pairs = [questions[i : i + 2] for i in range(0, len(questions) - 1, 2)]
        audio = {id(c): await asyncio.to_thread(case_audio, c) for pair in pairs for c in pair}
        before, _ = await scrape_node(url)
        for pair in pairs:
            await asyncio.gather(*(run_case(url, c, Network(), audio[id(c)]) for c in pair))
        after, _ = await scrape_node(url)
        result.concurrent_ticks = after["microturn_ticks_total"] - before["microturn_ticks_total"]
        result.concurrent_misses = (
            after["microturn_deadline_misses_total"] - before["microturn_deadline_misses_total"]
        )
        print(
            f"  {progress} {model}: {len(pairs)} pairs of concurrent sessions, "
            f"{result.concurrent_on_time:.1%} of {result.concurrent_ticks:.0f} ticks on time",
            flush=True,
        )

        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
            result.step_ms = (await resp.json())["worker"]["step_ms"]
    return result


def markdown(results: list[ModelResult]) -> str:
    rows = [
        "| model | answered | latency p50 (ms) | latency p95 (ms) | step p50 / p95 / max (ms) "
        "| CPU idle session (cores) | CPU talking session (cores) | ticks on time, 2 sessions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = percentiles(r.latencies_ms)
        n = len(r.latencies_ms) + r.misses
        rows.append(
            f"| {r.model} | {len(r.latencies_ms)}/{n} | {lat.get('p50', float('nan')):.0f} "
            f"| {lat.get('p95', float('nan')):.0f} "
            f"| {r.step_ms.get('p50', 0):.1f} / {r.step_ms.get('p95', 0):.1f} "
            f"/ {r.step_ms.get('max', 0):.1f} "
            f"| {r.cpu_per_idle_session:.2f} | {r.cpu_talking_session:.2f} "
            f"| {r.concurrent_on_time:.1%} of {r.concurrent_ticks:.0f} |"
        )
    return "\n".join(rows)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 questions per model (smoke run)")
    parser.add_argument("--models", default="reactive,turn-based", help="comma-separated --model names")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    clean = [c for c in load_cases(CASES_DIR / "latency.json") if not (c.network and c.network.impaired)]
    questions = clean[:QUICK_QUESTIONS] if args.quick else clean
    models = args.models.split(",")
    results = []
    for i, model in enumerate(models, 1):
        print(f"[{i}/{len(models)}] {model}: {len(questions)} questions", flush=True)
        results.append(await bench_model(model, questions, f"[{i}/{len(models)}]"))
    table = markdown(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "latency",
                "set": "quick" if args.quick else "full",
                "cpu_count": os.cpu_count(),
                "results": [r.summary() for r in results],
                "table": table,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")
    answered = sum(len(r.latencies_ms) for r in results)
    return 0 if answered else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
