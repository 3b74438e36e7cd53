"""Concurrent phone calls through the SIP bridge: SIPp calls a real ``microturn serve --sip-port`` process.

For each step (N simultaneous calls) SIPp places N calls at 10 calls/s; every caller plays flite speech as
PCMU RTP (pcap play, on a loop over the call) and stays on the line for the step's duration, then hangs
up. Measured:

- SIPp's verdict: calls that completed as scripted (INVITE .. 200 .. ACK .. BYE .. 200);
- at the callers (RTP captured off the loopback interface, as the tests do): per call packets received
  from the bridge, loss (sequence gaps), RFC 3550 interarrival jitter, and the spacing of packets;
- at the node: the share of ticks whose batch missed its 200 ms deadline (/metrics), worker step time
  (/healthz), and CPU per call (/proc, all calls up, minus the idle node).

    .venv/bin/python -m bench.sip            # 4, 8 and 16 calls of 20 s each, reactive model
    .venv/bin/python -m bench.sip --quick    # 4 calls of 8 s (CI smoke run, under a minute)

Needs root (SIPp's pcap play and the capture use raw sockets) and /usr/bin/sipp. Writes
bench/results/sip-<time>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.latency import cpu_seconds, free_port, wait_healthy
from bench.suite.server import scrape_node
from model.tts import FliteSynthesizer
from service.microturn import SAMPLE_RATE
from service.sip import g711
from service.stats import percentiles
from tests.processes import stop_process
from tests.sip_tools import (
    LoopbackCapture,
    audible_packets,
    free_udp_port,
    render_scenario,
    run_sipp,
    sipp_command,
    sipp_missing_reason,
    speech_rtp,
    write_pcap,
)

ROOT = Path(__file__).resolve().parent.parent
CALL_RATE = 10.0  # calls/s SIPp places
SETTLE = 2.0  # s after the last call is placed before CPU is measured: every call answered, media flowing
SENTENCES = [
    ("what is the capital of france", "slt"),
    ("can you tell me a joke", "rms"),
    ("how far away is the moon", "awb"),
]


@dataclass
class StepResult:
    calls: int
    seconds: float
    completed: int = 0  # calls SIPp saw through as scripted
    streams: int = 0  # RTP streams (SSRCs) the callers received from the bridge
    packets: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # fraction per stream
    jitter_ms: list[float] = field(default_factory=list)  # RFC 3550 J at the end, per stream
    gap_ms_p99: list[float] = field(default_factory=list)  # 99th percentile packet spacing, per stream
    # Share of the stream's wall time its packets cover (20 ms each). Below 1 when the node's event loop
    # stalled: the output track then skips the missed frames (a timestamp jump, not a sequence gap).
    coverage: list[float] = field(default_factory=list)
    audible_streams: int = 0  # streams with audible agent audio (the model answered)
    ticks: float = 0.0
    deadline_misses: float = 0.0
    cpu_node_idle: float = 0.0  # cores
    cpu_all_calls: float = 0.0  # cores, all N calls up
    step_ms: dict[str, float] = field(default_factory=dict)

    @property
    def deadline_share(self) -> float:
        return self.deadline_misses / self.ticks if self.ticks else 0.0

    @property
    def cpu_per_call(self) -> float:
        return (self.cpu_all_calls - self.cpu_node_idle) / self.calls

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "deadline_share": self.deadline_share,
            "cpu_per_call": self.cpu_per_call,
            "loss_max": max(self.loss, default=0.0),
            "jitter_ms_max": max(self.jitter_ms, default=0.0),
        }


def rfc3550_jitter(arrivals: list[float], timestamps: list[int], rate: int = g711.G711_RATE) -> float:
    j = 0.0
    for i in range(1, len(arrivals)):
        d = (arrivals[i] - arrivals[i - 1]) * rate - (timestamps[i] - timestamps[i - 1])
        j += (abs(d) - j) / 16
    return j * 1000 / rate


async def run_step(url: str, pid: int, sip_port: int, calls: int, seconds: float, pcap: Path) -> StepResult:
    result = StepResult(calls=calls, seconds=seconds)
    work = Path(tempfile.mkdtemp(prefix="bench-sip-"))
    scenario = render_scenario("call_speech.xml", work, pcap=pcap, listen_ms=int(seconds * 1000))
    media_port = free_udp_port(even=True)
    command = sipp_command(
        scenario, f"127.0.0.1:{sip_port}", free_udp_port(), media_port, calls=calls, rate=CALL_RATE,
        timeout_s=seconds + 60,
    )  # fmt: skip
    before, _ = await scrape_node(url)
    idle0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(2.0)
    result.cpu_node_idle = (cpu_seconds(pid) - idle0) / (time.monotonic() - t0)
    with LoopbackCapture({media_port}) as capture:
        sipp = asyncio.create_task(asyncio.to_thread(run_sipp, command, work, seconds + 120))
        await asyncio.sleep(calls / CALL_RATE + SETTLE)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(max(1.0, seconds - calls / CALL_RATE - SETTLE - 1.0))
        result.cpu_all_calls = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        outcome = await sipp
    after, health = await scrape_node(url)
    result.completed = calls if outcome.returncode == 0 else _completed(outcome.output)
    result.ticks = after["microturn_ticks_total"] - before["microturn_ticks_total"]
    result.deadline_misses = (
        after["microturn_deadline_misses_total"] - before["microturn_deadline_misses_total"]
    )
    result.step_ms = health.get("worker", {}).get("step_ms", {})
    streams: dict[int, list[Any]] = {}
    for c in capture.packets:
        if c.src[1] != media_port:  # the callers' own pcap play goes the other way
            streams.setdefault(c.packet.ssrc, []).append(c)
    result.streams = len(streams)
    for packets in streams.values():
        seqs = np.unwrap(np.array([p.packet.sequence for p in packets], dtype=np.float64), period=65536)
        expected = int(seqs.max() - seqs.min()) + 1
        result.packets.append(len(packets))
        result.loss.append(max(0.0, 1 - len(set(seqs.tolist())) / expected))
        ordered = sorted(packets, key=lambda p: p.arrival)
        result.jitter_ms.append(
            rfc3550_jitter([p.arrival for p in ordered], [p.packet.timestamp for p in ordered])
        )
        gaps = np.diff([p.arrival for p in ordered]) * 1000
        span = ordered[-1].arrival - ordered[0].arrival + 0.020
        result.coverage.append(min(1.0, len(ordered) * 0.020 / span))
        result.gap_ms_p99.append(float(np.percentile(gaps, 99)) if len(gaps) else 0.0)
        result.audible_streams += bool(audible_packets(packets))
    if outcome.returncode != 0:
        print(outcome.explain()[-2000:], file=sys.stderr)
    return result


def _completed(sipp_output: str) -> int:
    """SIPp's count of successful calls from its final screen (0 if it is not there)."""
    for line in sipp_output.splitlines():
        if line.strip().startswith("Successful call"):
            return int(line.split("|")[2].strip() or 0)
    return 0


def markdown(results: list[StepResult]) -> str:
    rows = [
        "| calls | completed | RTP streams back | loss max | jitter p50 / max | spacing p99 | "
        "time covered min | audible | deadline misses | step p50 / p99 | node CPU | CPU per call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        jitter = percentiles(r.jitter_ms)
        step = r.step_ms or {}
        rows.append(
            f"| {r.calls} | {r.completed}/{r.calls} | {r.streams} | {max(r.loss, default=0):.2%} | "
            f"{jitter.get('p50', 0):.2f} / {max(r.jitter_ms, default=0):.2f} ms | "
            f"{max(r.gap_ms_p99, default=0):.1f} ms | {min(r.coverage, default=0):.0%} | "
            f"{r.audible_streams}/{r.streams} | "
            f"{r.deadline_share:.1%} of {r.ticks:.0f} ticks | "
            f"{step.get('p50', 0):.1f} / {step.get('p99', 0):.1f} ms | "
            f"{r.cpu_all_calls:.2f} cores | {r.cpu_per_call:.3f} cores |"
        )
    return "\n".join(rows)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 calls of 8 s: a smoke run")
    parser.add_argument("--calls", type=int, nargs="*", default=None, help="steps (default 4 8 16)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each call (default 20)")
    parser.add_argument("--model", default="reactive")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    reason = sipp_missing_reason()
    if reason is not None:
        print(f"bench.sip: {reason}", file=sys.stderr)
        return 2
    steps = args.calls or ([4] if args.quick else [4, 8, 16])
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    work = Path(tempfile.mkdtemp(prefix="bench-sip-"))
    speech = [FliteSynthesizer(voice).synthesize(text) for text, voice in SENTENCES]
    gap = np.zeros(SAMPLE_RATE, np.int16)
    audio = np.concatenate([part for s in speech for part in (s, gap, gap)])
    pcap = work / "callers.pcap"
    write_pcap(pcap, speech_rtp(audio))
    port, sip_port = free_port(), free_udp_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/microturn"), "--log-level", "WARNING", "serve", "--port", str(port),
            "--model", args.model, "--max-sessions", str(max(steps)), "--background-workers", "0",
            "--sip-port", str(sip_port),
        ],
        cwd=ROOT,
    )  # fmt: skip
    results = []
    try:
        await wait_healthy(url, proc)
        for i, calls in enumerate(steps, 1):
            print(f"[{i}/{len(steps)}] {calls} calls of {seconds:.0f} s", file=sys.stderr)
            results.append(await run_step(url, proc.pid, sip_port, calls, seconds, pcap))
    finally:
        stop_process(proc, grace=15)
    table = markdown(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / time.strftime("sip-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"model": args.model, "steps": [r.summary() for r in results]}, indent=2))
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0 if all(r.completed == r.calls for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
