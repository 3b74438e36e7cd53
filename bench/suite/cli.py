"""``microturn bench``: run the benchmark suites against one or more models and report.

    microturn bench all --quick                      # the CI smoke run: a few cases per suite, both models
    microturn bench timespeak --model reactive --model turn-based
    microturn bench latency --server http://127.0.0.1:8080     # a node that is already running
    microturn bench cuespeak --seed 7                 # held-out style: cases generated from another seed
    microturn bench repcount --quick --model reactive  # a video suite: the camera plays a synthetic clip
    microturn bench all --cases my-cases/             # case files written elsewhere

Every model runs the same cases, each against a ``microturn serve --model NAME`` process of its own
(started and stopped here), or against ``--server``. Results go to ``bench/results/<suite>-<time>/``:
results.json, table.md (also printed) and timelines/<case>.png. One progress line per case on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench.suite.cases import CASES_DIR, SUITES, Case, Network, by_suite, load_cases, save_cases
from bench.suite.server import ROOT, serve_model, server_process

if TYPE_CHECKING:  # the rest is imported when a run starts: `microturn --help` stays light
    from bench.suite.report import CaseResult, Run

ALL = "all"
NULL_SERVER = "null-server"  # the transport floor's row
RESULTS_DIR = ROOT / "bench" / "results"
CASE_ATTEMPTS = 2  # a case whose session fails to start is tried once more


def default_models() -> list[str]:
    """The trained interaction model if it is registered and its checkpoint is there, else the reactive
    policy; and the baseline."""
    from model.catalog import model_names
    from model.interaction import DEFAULT_CHECKPOINT

    trained = "microturn" in model_names() and DEFAULT_CHECKPOINT.exists()
    return ["microturn" if trained else "reactive", "turn-based"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "suite", nargs="?", default=ALL, choices=[*SUITES, ALL], help="which suite (default all)"
    )
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME",
        help="a model to run (repeatable; default: microturn if registered else reactive, and turn-based)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the few cases per suite marked quick (smoke run)"
    )
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<suite>-<time>)")
    parser.add_argument(
        "--loss", type=float, default=0.0, help="share of outgoing audio packets dropped (0.02)"
    )
    parser.add_argument(
        "--jitter-ms", type=float, default=0.0, help="mean extra delay of outgoing audio packets"
    )
    parser.add_argument(
        "--server", help="URL of a running node to benchmark instead of starting one per model"
    )
    parser.add_argument("--seed", type=int, help="generate the cases from this seed instead of bench/cases")
    parser.add_argument(
        "--espeak-share",
        type=float,
        default=0.0,
        help="with --seed: share of utterances said by espeak-ng, the harder variant (not CueSpeak's talk)",
    )
    parser.add_argument("--cases", type=Path, help="a case file or a folder of them instead of bench/cases")
    parser.add_argument("--limit", type=int, help="at most this many cases per suite")
    parser.add_argument(
        "--save-cases", type=Path, metavar="DIR", help="write the cases used to DIR/<suite>.json"
    )
    parser.add_argument("--no-run", action="store_true", help="only generate/select (and save) the cases")
    parser.add_argument("--no-floor", action="store_true", help="skip the null-server transport floor")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG time lines")
    parser.add_argument(
        "--rescore",
        type=Path,
        metavar="RESULTS",
        help="score a results.json again with the current rules, into --out (default: beside it)",
    )


def select_cases(
    suites: Sequence[str],
    seed: int | None,
    path: Path | None,
    quick: bool,
    limit: int | None,
    espeak_share: float = 0.0,
) -> dict[str, list[Case]]:
    if seed is not None:
        from bench.suite.generate import generate

        cases = {suite: generate(suite, seed, espeak_share=espeak_share) for suite in suites}
    else:
        loaded = by_suite(load_cases(path if path is not None else CASES_DIR))
        cases = {suite: loaded.get(suite, []) for suite in suites}
    if quick:
        cases = {suite: [c for c in items if c.quick] for suite, items in cases.items()}
    if limit is not None:
        cases = {suite: items[:limit] for suite, items in cases.items()}
    return {suite: items for suite, items in cases.items() if items}


@dataclass
class Target:
    """A row of the tables: a model (own node, or ``url``) or the null server."""

    name: str
    url: str | None = None

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        if self.url is not None:
            yield self.url
        elif self.name == NULL_SERVER:
            async with server_process("bench.suite.nullserver") as server:
                yield server.url
        else:
            async with serve_model(self.name) as server:
                yield server.url


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _brief(result: CaseResult) -> str:
    m = result.score.metrics
    keys = (
        "hits",
        "expected",
        "cues",
        "false_alarms",
        "score",
        "f1",
        "takeover",
        "taken",
        "latency_s",
        "stopped",
        "stop_latency_s",
        "network",
        "latency_ms",
        "reps",
        "predicted",
        "in_time",
        "delay_s",
    )
    return " ".join(f"{k}={m[k]}" for k in keys if k in m)


def as_played(case: Case, target: str) -> Case:
    """The case as ``target`` is scored on it: the null server never answers, so only how fast it stops
    is scored, not what it says next."""
    if target != NULL_SERVER:
        return case
    return replace(case, expected=[replace(e, accepted=[]) for e in case.expected])


def rescore(path: Path, out: Path, plots: bool = True) -> Path:
    """Score a results.json again with the current rules (nothing is run) and write it to ``out``."""
    from bench.suite.report import load_run, write
    from bench.suite.scoring import SCORERS

    run = load_run(path)
    for suite, by_target in run.results.items():
        for target, results in by_target.items():
            for result in results:
                result.score = SCORERS[suite](as_played(result.case, target), result.heard)
    run.options = {**run.options, "rescored_from": str(path)}
    return write(run, out, plots)


async def run_target(run: Run, target: Target, network: Network) -> None:
    """All of ``run``'s cases (for the null server: the interruptions only) against one target."""
    from bench.suite.audio import Transcriber
    from bench.suite.report import CaseResult
    from bench.suite.runner import analyse, case_audio, case_video, run_case
    from bench.suite.scoring import SCORERS
    from service.client import SignallingError

    transcriber = await asyncio.to_thread(Transcriber)
    _progress(
        f"== {target.name}: " + (f"using {target.url}" if target.url else "starting a server of its own")
    )
    async with target.serving() as url:
        for suite, cases in run.cases.items():
            if target.name == NULL_SERVER:
                cases = [as_played(c, target.name) for c in cases if c.kind == "interruption"]
            for k, case in enumerate(cases, 1):
                audio = await asyncio.to_thread(case_audio, case)
                video = await asyncio.to_thread(case_video, case.video) if case.video else None
                began = time.monotonic()
                for attempt in range(CASE_ATTEMPTS):
                    try:
                        recording = await run_case(url, case, case.network or network, audio, video)
                        break
                    except (SignallingError, TimeoutError, aiohttp.ClientError) as exc:
                        if attempt + 1 == CASE_ATTEMPTS:
                            raise
                        _progress(f"   {case.id}: {exc!r}; trying again")
                        await asyncio.sleep(2.0)
                heard = await asyncio.to_thread(analyse, recording, transcriber)
                score = SCORERS[suite](case, heard)
                result = CaseResult(
                    case,
                    target.name,
                    score,
                    heard,
                    recording.model,
                    recording.length_s,
                    asdict(recording.impairment),
                )
                run.add(suite, result)
                _progress(
                    f"[{suite} {k}/{len(cases)}] {target.name:<13} {case.id:<10} {case.kind:<17} "
                    f"{_brief(result)} ({time.monotonic() - began:.0f} s)"
                )


async def run_suites(
    suites: Sequence[str],
    cases: dict[str, list[Case]],
    targets: Sequence[Target],
    out_dir: Path,
    network: Network | None = None,
    floor: bool = False,
    plots: bool = True,
    options: dict[str, Any] | None = None,
) -> Path:
    """Run ``cases`` against every target (plus the null server's interruptions with ``floor``), write the
    results to ``out_dir`` and return the path of results.json."""
    from bench.suite.report import Run, write

    order = [s for s in SUITES if s in suites and s in cases]
    run = Run(
        suites=order,
        targets=[t.name for t in targets],
        cases={s: cases[s] for s in order},
        options=options or {},
    )
    run.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if floor and any(c.kind == "interruption" for c in cases.get("turntaking", [])):
        targets = [*targets, Target(NULL_SERVER)]
        run.targets.append(NULL_SERVER)
    for target in targets:
        try:
            await run_target(run, target, network or Network())
        except Exception as exc:  # one model failing (its server does not start, ...) spoils only its rows
            _progress(f"== {target.name} FAILED: {exc!r}")
            run.errors[target.name] = repr(exc)
    run.finished = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = await asyncio.to_thread(write, run, out_dir, plots)
    return path


async def served_model(url: str) -> str:
    """The model a running node says it serves (/healthz)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        resp.raise_for_status()
        return str((await resp.json()).get("model", "server"))


def main(args: argparse.Namespace) -> int:
    for noisy in ("aioice", "aiortc"):  # a line per ICE check of every case's connection otherwise
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.rescore is not None:
        out = args.out or args.rescore.parent.with_name(f"{args.rescore.parent.name}-rescored")
        path = rescore(args.rescore, out, plots=not args.no_plots)
        print((out / "table.md").read_text())
        print(f"wrote {path}")
        return 0
    suites = list(SUITES) if args.suite == ALL else [args.suite]
    if args.espeak_share and args.seed is None:
        print("microturn bench: --espeak-share applies to generated cases: give --seed too", file=sys.stderr)
        return 2
    cases = select_cases(suites, args.seed, args.cases, args.quick, args.limit, args.espeak_share)
    if args.save_cases is not None:
        for suite, items in cases.items():
            save_cases(items, args.save_cases / f"{suite}.json")
        _progress(f"wrote the cases to {args.save_cases}")
    if args.no_run:
        return 0
    if not cases:
        print("microturn bench: no cases selected", file=sys.stderr)
        return 2
    if args.server:
        url = args.server.rstrip("/")
        targets = [Target(args.models[0] if args.models else asyncio.run(served_model(url)), url)]
    else:
        from model.catalog import model_names

        models = args.models or default_models()
        unknown = [m for m in models if m not in model_names()]
        if unknown:
            print(
                f"microturn bench: unknown model(s) {unknown}; choose from {model_names()}", file=sys.stderr
            )
            return 2
        targets = [Target(m) for m in models]
    out = args.out or RESULTS_DIR / f"{args.suite}-{time.strftime('%Y%m%d-%H%M%S')}"
    options = {
        "argv": sys.argv[1:],
        "quick": args.quick,
        "seed": args.seed,
        "cases": str(args.cases or CASES_DIR),
        "loss": args.loss,
        "jitter_ms": args.jitter_ms,
        "server": args.server,
    }
    path = asyncio.run(
        run_suites(
            suites,
            cases,
            targets,
            out,
            Network(args.loss, args.jitter_ms),
            floor=not args.no_floor and not args.server,
            plots=not args.no_plots,
            options=options,
        )
    )
    print((out / "table.md").read_text())
    print(f"wrote {path}")
    errors = json.loads(path.read_text())["errors"]
    for target, error in errors.items():
        print(f"microturn bench: {target} failed: {error}", file=sys.stderr)
    return 1 if errors else 0
