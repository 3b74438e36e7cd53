"""Tools for driving the SIP bridge with SIPp: pcap files of RTP, a loopback capture, running SIPp.

- :func:`speech_rtp` / :func:`write_pcap`: speech (16 kHz PCM, e.g. flite) → 20 ms PCMU RTP packets →
  a pcap file SIPp's ``play_pcap_audio`` replays (Ethernet/IPv4/UDP, as SIPp's pcap reader expects).
- :class:`LoopbackCapture`: what the bridge really sent to SIPp's media port, read off the loopback
  interface with an ``AF_PACKET`` socket (root, like SIPp's pcap play itself). SIPp 3.6 can only echo
  RTP, not report on it, so the tests and the benchmark look at the wire themselves.
- :func:`run_sipp`: one SIPp run of a scenario from tests/sipp/ (placeholders ``@NAME@`` filled in).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.audio import PcmResampler, pcm_frame
from service.microturn import SAMPLE_RATE, PcmArray
from service.sip import g711, rtp

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
SCENARIOS = Path(__file__).resolve().parent / "sipp"
PTIME = 0.020  # s, 20 ms G.711 packetisation
FRAME_8K = 160  # samples in one 20 ms packet at 8 kHz
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # sll_pkttype of the copy of a looped-back packet on its way out


def sipp_missing_reason() -> str | None:
    """Why SIPp tests cannot run here, or None."""
    if not os.path.exists(SIPP):
        return "SIPp is not installed (scripts/setup.sh --dev installs Debian's sip-tester)"
    if os.geteuid() != 0:
        return "SIPp's pcap play and the loopback capture need raw sockets (root)"
    return None


def free_udp_port(even: bool = False) -> int:
    """A free UDP port on 127.0.0.1 (even, with the next two free too, for SIPp's media ports)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not even:
            return port
        if port % 2 or port > 65000:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 1, port + 2, port + 3):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    sock.bind(("127.0.0.1", p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port")


def to_8k(pcm: PcmArray) -> PcmArray:
    """16 kHz → 8 kHz, through the same resampler the bridge uses."""
    down = PcmResampler(rate=g711.G711_RATE)
    out = [
        *down(pcm_frame(pcm, SAMPLE_RATE)),
        *down(pcm_frame(np.zeros(SAMPLE_RATE // 10, np.int16), SAMPLE_RATE)),
    ]
    return np.concatenate(out)[: len(pcm) // 2]


def speech_rtp(pcm16k: PcmArray, payload_type: int = g711.PCMU, ssrc: int = 0x12345678) -> list[bytes]:
    """RTP packets (20 ms of G.711 each, consecutive sequence numbers and timestamps) of ``pcm16k``."""
    pcm = to_8k(pcm16k)
    pcm = np.pad(pcm, (0, -len(pcm) % FRAME_8K))
    packets = []
    for i in range(len(pcm) // FRAME_8K):
        chunk = pcm[i * FRAME_8K : (i + 1) * FRAME_8K]
        payload = g711.encode(chunk, payload_type)
        packets.append(rtp.build(payload_type, 1000 + i, 8000 + i * FRAME_8K, ssrc, payload, marker=i == 0))
    return packets


def write_pcap(path: Path, payloads: list[bytes], src_port: int = 6000, dst_port: int = 6000) -> None:
    """A pcap (Ethernet, IPv4, UDP, 127.0.0.1) of ``payloads`` sent one every 20 ms."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # DLT_EN10MB
        for i, payload in enumerate(payloads):
            udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
            ip = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                i & 0xFFFF,
                0,
                64,
                17,
                0,
                socket.inet_aton("127.0.0.1"),
                socket.inet_aton("127.0.0.1"),
            )
            frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
            t = i * PTIME
            f.write(struct.pack("<IIII", int(t), round((t % 1) * 1e6), len(frame), len(frame)))
            f.write(frame)


@dataclass
class Captured:
    arrival: float  # time.monotonic()
    src: tuple[str, int]
    dst_port: int
    packet: rtp.RtpPacket


@dataclass
class LoopbackCapture:
    """Captures RTP sent over the loopback interface to ``ports`` (a background thread)."""

    ports: set[int]
    packets: list[Captured] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def __enter__(self) -> LoopbackCapture:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="rtp-capture", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, meta = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if meta[2] == PACKET_OUTGOING or len(data) < 14 + 28 or data[12:14] != b"\x08\x00":
                continue
            ip = data[14:]
            if ip[9] != 17:  # UDP
                continue
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", ip, ihl)
            if dport not in self.ports:
                continue
            packet = rtp.parse(ip[ihl + 8 :])
            if packet is not None:
                src = (socket.inet_ntoa(ip[12:16]), sport)
                self.packets.append(Captured(time.monotonic(), src, dport, packet))

    def audio(self, payload_type: int = g711.PCMU) -> PcmArray:
        """The captured G.711 of ``payload_type``, decoded, in arrival order."""
        chunks = [
            g711.decode(c.packet.payload, payload_type)
            for c in self.packets
            if c.packet.payload_type == payload_type
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def level_dbfs(pcm: PcmArray) -> float:
    if not len(pcm):
        return -120.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20 * np.log10(max(rms, 1e-9) / 32768)


def audible_packets(packets: list[Captured], threshold_dbfs: float = -45.0) -> list[Captured]:
    return [
        c
        for c in packets
        if level_dbfs(g711.decode(c.packet.payload, c.packet.payload_type)) > threshold_dbfs
    ]


@dataclass
class SippResult:
    returncode: int
    output: str
    logs: str  # SIPp's error log and message trace, when it made them

    def explain(self) -> str:
        return f"sipp exited {self.returncode}\n{self.output[-3000:]}\n{self.logs[-6000:]}"


def render_scenario(name: str, workdir: Path, **values: object) -> Path:
    """tests/sipp/``name`` with ``@KEY@`` placeholders filled in, written to ``workdir``."""
    text = (SCENARIOS / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    path = workdir / name
    path.write_text(text)
    return path


def sipp_command(
    scenario: Path,
    target: str,
    local_port: int,
    media_port: int,
    calls: int = 1,
    rate: float = 1.0,
    limit: int | None = None,
    timeout_s: float = 60,
    extra: list[str] | None = None,
) -> list[str]:
    return [
        SIPP, target, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(local_port), "-mp", str(media_port),
        "-m", str(calls), "-r", str(rate), "-l", str(limit or calls), "-nostdin",
        "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-trace_err", "-trace_msg",
        *(extra or []),
    ]  # fmt: skip


def run_sipp(command: list[str], workdir: Path, timeout_s: float = 90) -> SippResult:
    """Run SIPp (started by us, in ``workdir``) to the end; return its exit status and logs."""
    proc = subprocess.run(
        command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    logs = ""
    for log in sorted(workdir.glob("*_errors.log")) + sorted(workdir.glob("*_messages.log")):
        logs += f"--- {log.name}\n{log.read_text(errors='replace')[-8000:]}\n"
    return SippResult(proc.returncode, proc.stdout.decode(errors="replace"), logs)
