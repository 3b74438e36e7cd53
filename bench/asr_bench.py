"""CPU per micro-turn and word accuracy of the streaming recogniser: pocketsphinx defaults vs tuned.

Flite speaks a set of assistant-style requests in several voices; each is recognised the way the service
does it live: start() with 200 ms of pre-roll, then 200 ms chunks up to 600 ms after the speech, then
finish(). CPU is the calling thread's CPU time per chunk (process_raw + partial hypothesis), so load from
other processes on the machine does not inflate it. Also checks whether decoding in two threads runs in
parallel (it would if pocketsphinx released the GIL).

    .venv/bin/python -m bench.asr_bench [--voices slt rms awb kal] [--snr-db 20]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from pocketsphinx import Config

from model.asr import FAST_DECODER_CONFIG, DecoderConfig, StreamingRecognizer, word_accuracy
from model.tts import FliteSynthesizer
from service.microturn import SAMPLE_RATE, SAMPLES_PER_TURN, PcmArray

SENTENCES = [
    "what is the capital of france",
    "please turn on the lights in the kitchen",
    "how is the weather going to be tomorrow",
    "can you tell me a joke",
    "set a timer for ten minutes",
    "i would like to book a table for two",
    "what time is it in new york",
    "call my mother on her phone",
    "how far is the moon from the earth",
    "remind me to buy milk after work",
    "what is the best way to learn a new language",
    "i think we should stop here",
    "tell me more about the history of rome",
    "could you speak a little slower please",
    "where can i find a good restaurant nearby",
    "thank you that was very helpful",
]
PREROLL_MS = 200  # audio before the detected onset that the policy hands to start()
TAIL_MS = 600  # silence decoded after the speech before the policy decides the utterance is over
ROOM_NOISE_DBFS = -70.0  # a quiet room's background, so that "silence" is not digital zeros


def _noise(samples: int, dbfs: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    return rng.normal(0.0, 32768.0 * 10.0 ** (dbfs / 20.0), samples)


def live_audio(speech: PcmArray, snr_db: float | None, rng: np.random.Generator) -> tuple[PcmArray, PcmArray]:
    """(pre-roll, rest) as the recogniser would get them: speech in room noise (or at ``snr_db``)."""
    speech_rms_dbfs = 20.0 * np.log10(np.sqrt(np.mean(speech.astype(np.float64) ** 2)) / 32768.0)
    noise_dbfs = ROOM_NOISE_DBFS if snr_db is None else speech_rms_dbfs - snr_db
    preroll = PREROLL_MS * SAMPLE_RATE // 1000
    tail = TAIL_MS * SAMPLE_RATE // 1000
    signal = np.concatenate([np.zeros(preroll), speech, np.zeros(tail)])
    signal = np.clip(signal + _noise(signal.size, noise_dbfs, rng), -32768, 32767).astype(np.int16)
    return signal[:preroll], signal[preroll:]


def decode(
    recognizer: StreamingRecognizer, preroll: PcmArray, audio: PcmArray
) -> tuple[str, list[float], float]:
    """Recognise one utterance; return (final text, CPU ms per chunk, CPU ms of finish())."""
    cpu_ms = []
    recognizer.start(preroll)
    for offset in range(0, audio.size, SAMPLES_PER_TURN):
        t0 = time.thread_time_ns()
        recognizer.accept(audio[offset : offset + SAMPLES_PER_TURN])
        cpu_ms.append((time.thread_time_ns() - t0) / 1e6)
    t0 = time.thread_time_ns()
    text = recognizer.finish()
    return text, cpu_ms, (time.thread_time_ns() - t0) / 1e6


def evaluate(
    name: str, config: DecoderConfig, clips: Mapping[tuple[str, str], tuple[PcmArray, PcmArray]]
) -> None:
    recognizer = StreamingRecognizer(config)
    accuracy: dict[str, list[float]] = {}
    chunk_ms: list[float] = []
    finish_ms: list[float] = []
    for (voice, sentence), (preroll, audio) in clips.items():
        text, cpu, fin = decode(recognizer, preroll, audio)
        accuracy.setdefault(voice, []).append(word_accuracy(sentence, text))
        chunk_ms += cpu
        finish_ms.append(fin)
    per_voice = "  ".join(f"{voice} {statistics.mean(acc):.3f}" for voice, acc in accuracy.items())
    median, p95 = np.median(chunk_ms), np.percentile(chunk_ms, 95)
    print(f"{name:8s} word accuracy: {per_voice}")
    print(
        f"{name:8s} CPU ms per 200 ms chunk: median {median:.1f}  p95 {p95:.1f}  max {max(chunk_ms):.1f}"
        f"  | finish() median {np.median(finish_ms):.1f}"
    )


def gil_check(config: DecoderConfig, audio: PcmArray) -> None:
    """Decode the same audio in two recognisers, one after the other and then in two threads."""
    recognizers = [StreamingRecognizer(config) for _ in range(2)]

    def run(recognizer: StreamingRecognizer) -> None:
        recognizer.start()
        for offset in range(0, audio.size, SAMPLES_PER_TURN):
            recognizer.accept(audio[offset : offset + SAMPLES_PER_TURN])
        recognizer.finish()

    t0, c0 = time.perf_counter(), time.process_time()
    for recognizer in recognizers:
        run(recognizer)
    sequential_s, sequential_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    threads = [threading.Thread(target=run, args=(r,)) for r in recognizers]
    t0, c0 = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    threaded_s, threaded_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"GIL: 2 streams one after the other {sequential_s:.2f} s wall "
        f"({sequential_cpu_s / sequential_s:.2f} cores busy), "
        f"in 2 threads {threaded_s:.2f} s wall ({threaded_cpu_s / threaded_s:.2f} cores busy): "
        f"speed-up {sequential_s / threaded_s:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--voices", nargs="+", default=["slt", "rms", "awb", "kal"])
    parser.add_argument(
        "--snr-db", type=float, default=None, help="white noise at this SNR instead of room noise"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    clips = {
        (voice, sentence): live_audio(FliteSynthesizer(voice).synthesize(sentence), args.snr_db, rng)
        for voice in args.voices
        for sentence in SENTENCES
    }
    defaults = Config()
    pocketsphinx_defaults = {key: defaults[key] for key in FAST_DECODER_CONFIG}
    print(f"{len(SENTENCES)} sentences x {len(args.voices)} voices, noise: {args.snr_db or 'room'}")
    evaluate("default", pocketsphinx_defaults, clips)
    evaluate("tuned", FAST_DECODER_CONFIG, clips)
    gil_check(FAST_DECODER_CONFIG, np.concatenate([audio for _, audio in clips.values()][:8]))


if __name__ == "__main__":
    main()
