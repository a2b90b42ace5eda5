"""``prism-reward eval`` end to end on real video files, LeRobot datasets and rosbags."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import episodes
from episodes import Episode
from episodes.video_folder import write_episode_folder
from reward_models.cli import main as cli_main
from reward_models.evaluate import EvalConfig, run_eval

TASK = "push the red block to the right"


def make_episode(i, final, policy, T=16):
    prog = np.linspace(0, final, T).astype(np.float32)
    front = np.zeros((T, 32, 48, 3), np.uint8)
    wrist = np.zeros((T, 32, 32, 3), np.uint8)
    for t in range(T):
        x = int(4 + 36 * prog[t])
        front[t, 12:20, x : x + 8] = (255, 0, 0)
        wrist[t] = int(255 * prog[t])
    outcome = "success" if final >= 0.99 else ("partial" if final > 0.5 else "fail")
    return Episode(
        task=TASK,
        frames={"front": front, "wrist": wrist},
        fps=10,
        progress=prog,
        outcome=outcome,
        episode_index=i,
        meta={"policy": policy},
    )


FINALS = [(1.0, "good"), (0.2, "good"), (1.0, "good"), (0.7, "bad"), (0.1, "bad")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "episodes"
    for i, (f, p) in enumerate(FINALS):
        write_episode_folder(root / f"ep{i}", make_episode(i, f, p))
    return root


def test_oracle_and_clip_side_by_side(folders, tmp_path):
    from reward_models.baselines.testing import build_tiny_clip

    cfg, weights = build_tiny_clip(tmp_path / "clip")
    out = tmp_path / "report"
    code = cli_main(
        [
            "eval",
            "--model",
            "oracle",
            f"clip:{cfg}:{weights}",
            "--data",
            str(folders),
            "--out",
            str(out),
            "--fps",
            "5",
            "--videos",
            "2",
            "--batch-size",
            "4",
            "--no-progress-bar",
        ]
    )
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_episodes"] == 5 and not m["skipped"]
    labels = list(m["models"])
    assert labels[0] == "oracle" and labels[1].startswith("clip")
    om = m["models"]["oracle"]["metrics"]
    # The oracle is the upper bound: perfect ordering, classes, detection and policy ranking.
    assert om["voc_plus"]["value"] == pytest.approx(1.0)
    assert om["completion_accuracy"]["value"] == pytest.approx(1.0)
    assert om["success_auroc"]["value"] == pytest.approx(1.0)
    assert om["end_score_mae"]["value"] == pytest.approx(0.0)
    assert om["kendall_tau"]["value"] == pytest.approx(1.0)
    assert len(om["episodes"]) == 5
    # 16 frames at 10 fps -> 5 fps keeps 8 + the final frame
    assert om["episodes"][0]["n_frames"] == 9

    table = pq.read_table(out / "progress.parquet")
    assert table.column_names[:4] == ["index", "episode_index", "frame_index", "timestamp"]
    assert {"phi.oracle", f"phi.{labels[1]}"} <= set(table.column_names)
    assert table.num_rows == 5 * 9
    meta = json.loads(table.schema.metadata[b"prism.models"])
    assert meta["phi.oracle"]["spec"] == "oracle" and "config" in meta[f"phi.{labels[1]}"]
    df = table.to_pandas()
    ep0 = df[df.episode_index == 0]
    assert ep0.frame_index.tolist()[-1] == 15 and ep0["index"].tolist()[-1] == 15
    np.testing.assert_allclose(ep0["phi.oracle"].to_numpy()[-1], 1.0, atol=1e-6)

    html = (out / "report.html").read_text()
    refs = re.findall(r"(?:src|href)='([^']+)'", html)
    assert refs and all((out / r).exists() for r in refs if not r.startswith("#"))
    assert len(list((out / "episodes").glob("*.png"))) == 5
    assert len(list((out / "episodes").glob("*.mp4"))) == 2
    assert episodes.read_video(out / "episodes" / "episode_00000.mp4").shape[0] == 9


def test_bad_episodes_fail_clearly_or_are_skipped(folders, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(folders, src)
    data = (src / "ep1" / "front.mp4").read_bytes()
    (src / "ep1" / "front.mp4").write_bytes(data[: len(data) // 3])  # truncated
    write_episode_folder(src / "ep5", make_episode(5, 1.0, "bad", T=1))  # a single frame
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text('{"previous": true}')

    with pytest.raises(Exception, match=r"ep1.*front\.mp4"):
        run_eval(EvalConfig(model=["oracle"], data=str(src), out=str(out), progress_bar=False))
    # the previous report is untouched and no temporary directory is left behind
    assert json.loads((out / "metrics.json").read_text()) == {"previous": True}
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []

    result = run_eval(
        EvalConfig(model=["oracle"], data=str(src), out=str(out), skip_bad=True, videos=0, progress_bar=False)
    )
    skipped = {Path(s["source"]).name: s["reason"] for s in result["skipped"]}
    assert set(skipped) == {"ep1", "ep5"}
    assert "truncated" in skipped["ep1"] or "corrupt" in skipped["ep1"]
    assert "1 frame" in skipped["ep5"]
    assert result["n_episodes"] == 4
    assert "Skipped (2)" in (out / "report.html").read_text()


def test_lerobot_dataset_and_rosbag_sources(tmp_path):
    eps = [make_episode(i, f, p) for i, (f, p) in enumerate(FINALS[:3])]
    for ep in eps:  # LeRobot stores one image size for all cameras
        ep.frames["wrist"] = np.repeat(ep.frames["wrist"], 3, axis=2)[:, :, :48]
    root = episodes.write_dataset(tmp_path / "ds", eps, progress=False)
    out = tmp_path / "r1"
    result = run_eval(EvalConfig(model=["oracle"], data=str(root), out=str(out), videos=0, progress_bar=False))
    assert result["source_kind"] == "lerobot" and result["n_episodes"] == 3
    assert result["models"]["oracle"]["metrics"]["voc_plus"]["value"] == pytest.approx(1.0)
    df = pq.read_table(out / "progress.parquet").to_pandas()
    assert df["index"].tolist() == list(range(48))  # the dataset's global frame index

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "episodes"))
    from test_rosbag import TOPICS, write_bag

    bag = write_bag(tmp_path / "bag", n=20)
    with pytest.raises(ValueError, match="--topics"):
        run_eval(EvalConfig(model=["oracle"], data=str(bag), out=str(tmp_path / "r2"), progress_bar=False))
    # A bag has no ground truth: the oracle cannot run -> a clear error, or a listed skip.
    res = run_eval(
        EvalConfig(
            model=["oracle"],
            data=str(bag),
            out=str(tmp_path / "r2"),
            topics=TOPICS,
            task="push",
            skip_bad=True,
            progress_bar=False,
            videos=0,
        )
    )
    assert res["skipped"] and "progress" in res["skipped"][0]["reason"]


def test_tiny_vlm_grm_end_to_end(tmp_path, folders):
    from reward_models.baselines.testing import build_tiny_qwen_vl

    model_dir = build_tiny_qwen_vl(tmp_path / "qwen", version="2.5")
    out = tmp_path / "report"
    result = run_eval(
        EvalConfig(
            model=[f"vlm-grm:{model_dir}"],
            data=str(folders),
            out=str(out),
            fps=1.0,
            max_episodes=2,
            videos=1,
            batch_size=4,
            progress_bar=False,
        )
    )
    m = result["models"][next(iter(result["models"]))]
    assert result["n_episodes"] == 2 and m["frames"] == 2 * 3
    assert m["config"]["prompts"] == 2 * 2 * 2  # (T-1) incremental + (T-1) forward hops per episode
    assert m["config"]["answers"] == 8  # every answer is accounted for (parsed or counted as a failure)
    assert m["metrics"]["success_auroc"]["n"] == 2  # one success, one failure: the metric is defined
    assert (out / "report.html").exists()


def test_cli_help_lists_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "reward_models.cli", "eval", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    for opt in ("--model", "--data", "--task", "--out", "--topics", "--skip-bad", "--device", "--batch-size", "--fps"):
        assert opt in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "reward_models.cli", "ingest", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "--topics" in proc.stdout and "--bag" in proc.stdout
