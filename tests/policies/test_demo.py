"""prism-demo on a tiny configuration: every stage runs, the report shows them, and re-runs resume."""

import json

from policies.demo_pipeline import DemoArgs, run_demo
from policies.demo_pipeline import main as demo_main


def test_demo_runs_every_stage_and_resumes(tmp_path):
    args = DemoArgs(
        out=tmp_path / "demo",
        tasks="reach",
        episodes=3,
        heldout_episodes=2,
        expert_seeds=3,
        size=32,
        cameras="front,wrist",
        grm_steps=15,
        policy_steps=300,
    )
    summary = run_demo(args)
    out = tmp_path / "demo"
    for name in (
        "report.html",
        "contact_sheet.png",
        "summary.json",
        "experts.json",
        "policy_curve.png",
        "grm/config.json",
        "eval/reach/report.html",
        "eval/reach/metrics.json",
        "policy/grm/model.zip",
        "policy/oracle/model.zip",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "summary.json").read_text())["config"]  # JSON types, not strings
    assert config["episodes"] == 3 and config["size"] == 32 and config["force"] is False
    assert config["out"] == str(out) and config["tasks"] == "reach"
    assert summary["expert_success"]["reach"] >= 2 / 3
    assert sum(summary["record"]["reach"]["outcomes"].values()) == 3
    assert set(summary["eval"]["reach"]["metrics"]) >= {"oracle"} and len(summary["eval"]["reach"]["metrics"]) == 2
    assert set(summary["policy"]["runs"]) == {"grm", "oracle"}
    assert all(run["curve"] for run in summary["policy"]["runs"].values()), "each policy run evaluates"
    page = (out / "report.html").read_text()
    for text in ("contact_sheet.png", "policy_curve.png", "eval/reach/report.html", "held-out"):
        assert text in page, text
    # Resume: finished stages are kept (files untouched), the summary is the same.
    kept = [
        next((out / "data" / "reach").rglob("*.parquet")),
        out / "grm" / "model.safetensors",
        out / "eval" / "reach" / "metrics.json",
        out / "policy" / "grm" / "model.zip",
    ]
    mtimes = [p.stat().st_mtime_ns for p in kept]
    again = run_demo(args)
    assert [p.stat().st_mtime_ns for p in kept] == mtimes
    assert again["expert_success"] == summary["expert_success"]
    assert json.loads((out / "summary.json").read_text())["eval"] == again["eval"]


def test_demo_rejects_unknown_task(tmp_path, capsys):
    assert demo_main(["--out", str(tmp_path / "d"), "--tasks", "juggle"]) == 2
    assert "juggle" in capsys.readouterr().err


def test_demo_starts_from_the_pretrained_grm(tmp_path):
    args = DemoArgs(
        out=tmp_path / "demo",
        tasks="reach",
        episodes=2,
        heldout_episodes=2,
        expert_seeds=2,
        size=32,
        cameras="front,wrist",
        policy_steps=0,
    )
    summary = run_demo(args)
    assert summary["grm"] == "grm" and not (tmp_path / "demo" / "grm").exists()
    assert set(summary["eval"]["reach"]["metrics"]) == {"grm", "oracle"}
    assert "pretrained GRM shipped with prism-rl" in (tmp_path / "demo" / "report.html").read_text()
