"""`microturn bench` end to end on a tiny subset: real nodes (reactive and the turn-based baseline), real
WebRTC, real flite and pocketsphinx. It asserts that running and scoring work, not what the scores are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.suite.cli import Target, run_suites, select_cases
from model.catalog import create_model

from .conftest import NodeFactory

MODELS = ("reactive", "turn-based")


@pytest.mark.slow
async def test_bench_runs_and_scores_both_models(start_node: NodeFactory, tmp_path: Path) -> None:
    quick = select_cases(["timespeak", "turntaking"], seed=None, path=None, quick=True, limit=None)
    cases = {
        "timespeak": [c for c in quick["timespeak"] if c.kind == "in"][:1],
        "turntaking": [c for c in quick["turntaking"] if c.kind == "smooth"][:1],
    }
    assert all(cases.values())
    targets = [Target(m, (await start_node(create_model(m), max_sessions=1)).url) for m in MODELS]

    path = await run_suites(list(cases), cases, targets, tmp_path, floor=False)

    data = json.loads(path.read_text())
    assert data["models"] == list(MODELS)
    assert data["versions"]["git_commit"]
    for suite in cases:
        assert set(data["summaries"][suite]) == set(MODELS)
        for model in MODELS:
            (result,) = data["results"][suite][model]
            assert result["server_model"] == model  # the node said which model it runs
            assert result["user"][0][1] > result["user"][0][0] > 0
            for segment in result["agent"]:
                assert 0 <= segment["onset_s"] < segment["offset_s"] and isinstance(segment["text"], str)
    for model in MODELS:
        ts = data["summaries"]["timespeak"][model]
        assert ts["expected"] == 1 and 0 <= ts["hits"] <= 1 and ts["false_alarms"] >= 0
        assert 0.0 <= ts["score"] <= 1.0
        tt = data["summaries"]["turntaking"][model]
        assert tt["smooth_cases"] == 1 and tt["smooth_tor"] in (0.0, 1.0)
        assert tt["smooth_latency_p50_s"] is None or 0 < tt["smooth_latency_p50_s"] <= 5.0
    table = (tmp_path / "table.md").read_text()
    assert all(f"| {m} |" in table for m in MODELS)
    for suite_cases in cases.values():
        assert (tmp_path / "timelines" / f"{suite_cases[0].id}.png").exists()
