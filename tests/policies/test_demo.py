"""prism-demo on a tiny configuration: it produces the report and resumes."""

import json

from policies.demo import DemoArgs, run_demo
from policies.demo import main as demo_main


def test_demo_writes_report_and_resumes(tmp_path):
    args = DemoArgs(out=tmp_path / "demo", tasks="reach,drawer", episodes=2, expert_seeds=3, size=32,
                    cameras="front,wrist")
    summary = run_demo(args)
    out = tmp_path / "demo"
    for name in ("report.html", "contact_sheet.png", "summary.json", "experts.json"):
        assert (out / name).is_file(), name
    assert set(summary["expert_success"]) == {"reach", "drawer"}
    assert all(rate >= 2 / 3 for rate in summary["expert_success"].values())
    page = (out / "report.html").read_text()
    assert "contact_sheet.png" in page and "drawer" in page
    assert sum(summary["record"]["reach"]["outcomes"].values()) == 2
    # Resume: finished stages are kept (dataset files untouched).
    data_file = next((out / "data" / "reach").rglob("*.parquet"))
    mtime = data_file.stat().st_mtime_ns
    run_demo(args)
    assert data_file.stat().st_mtime_ns == mtime
    assert json.loads((out / "summary.json").read_text())["expert_success"] == summary["expert_success"]


def test_demo_rejects_unknown_task(tmp_path, capsys):
    assert demo_main(["--out", str(tmp_path / "d"), "--tasks", "juggle"]) == 2
    assert "juggle" in capsys.readouterr().err
