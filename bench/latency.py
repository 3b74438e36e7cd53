"""Mouth-to-ear response latency, worker step time and CPU per session, black box over WebRTC.

For each model (the micro-turn policy and the turn-based baseline, in the same run) this starts a real
``microturn serve`` process, connects aiortc clients through the public signalling endpoint, speaks flite
questions into them in real time and measures, at the client:

- response latency: end of the user's speech -> first audible agent audio (median, p95);
- the worker's step time per tick (the server's /healthz percentiles after the run);
- server CPU per connected session (from /proc, idle sessions streaming silence, and during the questions).

    .venv/bin/python -m bench.latency            # full set
    .venv/bin/python -m bench.latency --quick    # smoke set (CI)

Writes bench/results/latency-<time>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from model.tts import FliteSynthesizer
from service.client import AgentClient, level_dbfs
from service.microturn import SAMPLE_RATE, PcmArray
from service.stats import percentiles
from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent

QUESTIONS = [
    ("what is the capital of france", "slt"),
    ("how many days are in a week", "rms"),
    ("what color is the sky", "awb"),
    ("can you tell me a joke", "slt"),
    ("what is two plus two", "rms"),
    ("where do penguins live", "awb"),
    ("what time is it now", "slt"),
    ("who wrote hamlet", "rms"),
    ("how far away is the moon", "awb"),
    ("what do bees make", "slt"),
]
ANSWER_TIMEOUT = 20.0  # s: a question not answered within this counts as a miss
SPEECH_END_DBFS = -40.0  # a 20 ms frame quieter than this after the last word is trailing silence
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

    def summary(self) -> dict[str, Any]:
        return {"latency_ms": percentiles(self.latencies_ms), **asdict(self)}


def speech_end(pcm: PcmArray) -> float:
    """Seconds from the start of ``pcm`` to the end of its last audible 20 ms frame."""
    frame = SAMPLE_RATE // 50
    last = 0
    for start in range(0, len(pcm) - frame + 1, frame):
        if level_dbfs(pcm[start : start + frame]) > SPEECH_END_DBFS:
            last = start + frame
    return last / SAMPLE_RATE


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                async with http.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"server at {url} not healthy within {timeout} s")


async def measure_cpu(pid: int, seconds: float) -> float:
    before, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - t0)


async def ask(client: AgentClient, pcm: PcmArray) -> float | None:
    """Speak one question; return ms from the end of speech to the first audible answer, or None."""
    sent_at = time.monotonic()
    client.say(pcm)
    end_of_speech = sent_at + speech_end(pcm)
    deadline = end_of_speech + ANSWER_TIMEOUT
    while time.monotonic() < deadline:
        first = client.received.first_audible(after=end_of_speech)
        if first is not None:
            # Let the answer finish so the next question starts from silence.
            with contextlib.suppress(TimeoutError):
                await client.wait_for("response.audio.stopped", timeout=30, after=first)
            await asyncio.sleep(1.0)
            return (first - end_of_speech) * 1000
        await asyncio.sleep(0.05)
    return None


async def bench_model(model: str, questions: list[tuple[str, str]], progress: str) -> ModelResult:
    result = ModelResult(model=model)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/microturn"),
            "--log-level",
            "WARNING",
            "serve",
            "--port",
            str(port),
            "--model",
            model,
        ],
        cwd=ROOT,
    )
    try:
        await wait_healthy(url, proc)
        result.cpu_idle_node = await measure_cpu(proc.pid, CPU_WINDOW / 2)

        idle = [AgentClient(url) for _ in range(2)]
        for client in idle:
            await client.connect()
        result.cpu_per_idle_session = (await measure_cpu(proc.pid, CPU_WINDOW) - result.cpu_idle_node) / len(
            idle
        )
        for client in idle:
            await client.close()

        client = AgentClient(url)
        await client.connect()
        await client.wait_for("session.started", timeout=10)
        voices: dict[str, FliteSynthesizer] = {}
        cpu_before, t0 = cpu_seconds(proc.pid), time.monotonic()
        for i, (text, voice) in enumerate(questions, 1):
            synth = voices.setdefault(voice, FliteSynthesizer(voice))
            latency = await ask(client, synth.synthesize(text))
            shown = "missed" if latency is None else f"{latency:.0f} ms"
            print(f"  {progress} {model}: [{i}/{len(questions)}] {text!r} ({voice}) -> {shown}", flush=True)
            if latency is None:
                result.misses += 1
            else:
                result.latencies_ms.append(latency)
        result.cpu_talking_session = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - t0)
        await client.close()

        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
            result.step_ms = (await resp.json())["worker"]["step_ms"]
    finally:
        stop_process(proc, grace=15)
    return result


def markdown(results: list[ModelResult]) -> str:
    rows = [
        "| model | answered | latency p50 (ms) | latency p95 (ms) | step p50 / p95 / max (ms) "
        "| CPU idle session (cores) | CPU talking session (cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = percentiles(r.latencies_ms)
        n = len(r.latencies_ms) + r.misses
        rows.append(
            f"| {r.model} | {len(r.latencies_ms)}/{n} | {lat.get('p50', float('nan')):.0f} "
            f"| {lat.get('p95', float('nan')):.0f} "
            f"| {r.step_ms.get('p50', 0):.1f} / {r.step_ms.get('p95', 0):.1f} "
            f"/ {r.step_ms.get('max', 0):.1f} "
            f"| {r.cpu_per_idle_session:.2f} | {r.cpu_talking_session:.2f} |"
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
    questions = QUESTIONS[:3] if args.quick else QUESTIONS
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
