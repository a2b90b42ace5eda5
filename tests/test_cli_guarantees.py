"""What every command promises a user: bad input gets one line on stderr and exit 2 naming the
culprit, and nothing is lost -- no input and no folder this project did not write is ever replaced.

The fuzz table at the end runs each command's ``main`` in-process (fast); a few tests run the real
console scripts as processes (SIGKILL, Ctrl-C)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from episodes import Episode
from episodes.atomic import atomic_dir, check_output_not_input, remove_stale_temporaries
from episodes.cli_errors import merge_repeated_list_flags, run_cli
from episodes.video_folder import write_episode_folder
from policies.evaluate import main as prism_eval
from policies.record import main as prism_record
from reward_models.cli import main as prism_reward

REPO = Path(__file__).resolve().parents[1]
TASK = "push the red block to the right"


def _episode(i: int, final: float, progress: np.ndarray | None = None, T: int = 12) -> Episode:
    prog = np.linspace(0, final, T).astype(np.float32) if progress is None else progress
    front = np.zeros((T, 32, 32, 3), np.uint8)
    for t in range(T):
        x = int(4 + 20 * min(1.0, max(0.0, float(np.nan_to_num(prog[t])))))
        front[t, 12:20, x : x + 8] = (255, 0, 0)
    return Episode(
        task=TASK,
        frames={"front": front},
        fps=10,
        progress=prog,
        episode_index=i,
        outcome="success" if final >= 0.99 else "fail",
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src") / "episodes"
    for i, f in enumerate((1.0, 0.3, 1.0)):
        write_episode_folder(root / f"ep{i}", _episode(i, f))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from episodes.lerobot import write_dataset

    return write_dataset(tmp_path_factory.mktemp("lerobot") / "ds", [_episode(i, f) for i, f in enumerate((1.0, 0.4))])


@pytest.fixture(scope="module")
def grm_ckpt(tmp_path_factory) -> Path:
    from reward_models.configuration_grm import GRMConfig
    from reward_models.modeling_grm import GRM, save_grm

    cfg = GRMConfig(image_size=32, cameras=("front",), embed_dim=16, conv_channels=(8, 8), hidden_dim=32, text_dim=8)
    return save_grm(GRM(cfg), tmp_path_factory.mktemp("ckpt") / "grm")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes (directories as markers)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------
# Outputs never replace an input or a folder this project did not write
# --------------------------------------------------------------------------------------------


def test_eval_refuses_to_write_over_its_data(folders, capsys):
    before = snapshot(folders)
    for out in (folders, folders / "report", folders.parent):
        assert (
            prism_reward(["eval", "--model", "oracle", "--data", str(folders), "--out", str(out), "--no-progress-bar"])
            == 2
        )
        line = one_error_line(capsys.readouterr().err, "prism-reward eval")
        assert "--out" in line and "input" in line
    assert snapshot(folders) == before


def test_outputs_replace_only_what_prism_wrote(folders, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    # eval's default replaces reports; a user folder is not one
    assert (
        prism_reward(["eval", "--model", "oracle", "--data", str(folders), "--out", str(user), "--no-progress-bar"])
        == 2
    )
    assert "not a report written by prism-rl" in one_error_line(capsys.readouterr().err, "prism-reward eval")
    # GRM training replaces checkpoints only
    assert prism_reward(["train", "--data", str(folders), "--out", str(user), "--steps", "1"]) == 2
    assert "not a checkpoint" in one_error_line(capsys.readouterr().err, "prism-reward train")
    # recording with --overwrite replaces datasets only
    assert (
        prism_record(
            [
                "--task",
                "reach",
                "--episodes",
                "1",
                "--size",
                "32",
                "--cameras",
                "front",
                "--out",
                str(user),
                "--overwrite",
            ]
        )
        == 2
    )
    assert "not a dataset" in one_error_line(capsys.readouterr().err, "prism-record")
    assert snapshot(tmp_path) == before

    # ...while a report this project wrote is replaced, and an existing output without the flag
    # names the real flag.
    report = tmp_path / "report"
    args = [
        "eval",
        "--model",
        "oracle",
        "--data",
        str(folders),
        "--out",
        str(report),
        "--no-progress-bar",
        "--videos",
        "0",
    ]
    assert prism_reward(args) == 0 and prism_reward(args) == 0
    assert prism_reward(args + ["--no-overwrite"]) == 2
    assert "pass --overwrite" in one_error_line(capsys.readouterr().err, "prism-reward eval")


def test_adapt_refuses_to_write_over_its_checkpoint(grm_ckpt, folders, capsys):
    before = snapshot(grm_ckpt)
    assert (
        prism_reward(
            ["adapt", "--checkpoint", str(grm_ckpt), "--demo", str(folders), "--out", str(grm_ckpt), "--steps", "1"]
        )
        == 2
    )
    assert "would write over the input" in one_error_line(capsys.readouterr().err, "prism-reward adapt")
    assert snapshot(grm_ckpt) == before


def test_output_checks_understand_model_specs(tmp_path):
    weights = tmp_path / "clip" / "w.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match="would write over the input"):
        check_output_not_input(tmp_path / "clip", ["oracle", f"clip:ViT-B-32:{weights}"])
    check_output_not_input(tmp_path / "elsewhere", ["oracle", f"clip:ViT-B-32:{weights}"])


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


LONG_RECORDING = 3000
"""Episodes of a recording that a test interrupts: ~1 min uninterrupted, so a signal sent once its
temporary appears lands mid-recording even when the test process is starved of CPU for seconds."""


def _record_cmd(out: Path, episodes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "policies.record",
        "--task",
        "reach",
        "--episodes",
        str(episodes),
        "--size",
        "32",
        "--cameras",
        "front",
        "--out",
        str(out),
    ]


def test_sigkilled_recording_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        _record_cmd(out, LONG_RECORDING), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: any(p.name.startswith("ds.tmp-") for p in tmp_path.iterdir()), 60, "the temporary")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = [p for p in tmp_path.iterdir() if p.name.startswith("ds.tmp-")]
    assert stale and not out.exists()
    done = subprocess.run(_record_cmd(out, 1), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"removed {stale[0]}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    live = tmp_path / f"x.tmp-{os.getpid()}-0123abcd"
    dead_pid = 2**22 + 12345  # above the default pid_max: no process has it
    dead = tmp_path / f"x.tmp-{dead_pid}-0123abcd"
    other = tmp_path / f"y.tmp-{dead_pid}-0123abcd"
    for p in (live, dead, other):
        p.mkdir()
    assert remove_stale_temporaries(tmp_path / "x") == [dead]
    assert live.exists() and other.exists() and not dead.exists()
    with atomic_dir(tmp_path / "y") as tmp:
        (tmp / "f").write_text("1")
    assert not other.exists()


def test_ctrl_c_during_recording_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "ds"
    # SIGINT at its default even when the test run itself was started in the background (a
    # non-interactive shell starts background jobs with SIGINT ignored, and children inherit that).
    proc = subprocess.Popen(
        _record_cmd(out, LONG_RECORDING),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for(lambda: any(p.name.startswith("ds.tmp-") for p in tmp_path.iterdir()), 60, "the recording to start")
    time.sleep(1.0)  # into the episode loop, past start-up (renderer and writer set-up in C code)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].endswith("prism-record: interrupted"), err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Nothing silent: repeated options, labels, configs
# --------------------------------------------------------------------------------------------


def test_repeated_model_option_keeps_every_model(folders, tmp_path):
    out = tmp_path / "report"
    assert (
        prism_reward(
            [
                "eval",
                "--model",
                "oracle",
                "--data",
                str(folders),
                "--out",
                str(out),
                "--model",
                "oracle",
                "--no-progress-bar",
                "--videos",
                "0",
            ]
        )
        == 0
    )
    assert list(json.loads((out / "metrics.json").read_text())["models"]) == ["oracle", "oracle-2"]


def test_repeated_list_options_merge_in_every_cli():
    """Every command-line config goes through the merging parser (tyro alone keeps the last)."""
    offenders = []
    for path in [*REPO.glob("*/*.py"), *REPO.glob("*/*/*.py")]:
        if ".venv" in path.parts or path.parts[-2] == "tests" or path.name == "cli_errors.py":
            continue
        if "tyro.cli(" in path.read_text():
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], f"parse with episodes.cli_errors.parse_config instead: {offenders}"

    from reward_models.train_grm import GRMTrainConfig

    merged = merge_repeated_list_flags(
        GRMTrainConfig, ["--data", "a", "--steps", "3", "--data=b", "c", "--cameras", "x"]
    )
    assert merged == ["--data", "a", "b", "c", "--steps", "3", "--cameras", "x"]


@pytest.mark.parametrize("bad", [2.5, -3.0, float("nan")])
@pytest.mark.parametrize("model", ["oracle", "grm"])
def test_out_of_range_progress_labels_are_refused(bad, model, grm_ckpt, tmp_path, capsys):
    src = tmp_path / "episodes"
    good = _episode(0, 1.0)
    write_episode_folder(src / "ep0", good)
    meta = json.loads((src / "ep0" / "episode.json").read_text())
    meta["progress"][5] = bad
    (src / "ep0" / "episode.json").write_text(json.dumps(meta))
    spec = "oracle" if model == "oracle" else str(grm_ckpt)
    assert (
        prism_reward(["eval", "--model", spec, "--data", str(src), "--out", str(tmp_path / "r"), "--no-progress-bar"])
        == 2
    )
    line = one_error_line(capsys.readouterr().err, "prism-reward eval")
    assert "progress" in line and "frame 5" in line
    with pytest.raises(ValueError, match="frame 5"):
        Episode(task=TASK, frames=good.frames, progress=np.where(np.arange(12) == 5, bad, 0.5))


def test_model_cameras_matching_none_of_the_data_is_one_line(grm_ckpt, tmp_path, capsys):
    src = tmp_path / "episodes"
    ep = _episode(0, 1.0)
    write_episode_folder(src / "ep0", Episode(task=TASK, frames={"cam_high": ep.frames["front"]}, progress=ep.progress))
    for extra in ([], ["--skip-bad"]):
        assert (
            prism_reward(
                [
                    "eval",
                    "--model",
                    str(grm_ckpt),
                    "--data",
                    str(src),
                    "--out",
                    str(tmp_path / "r"),
                    "--no-progress-bar",
                    *extra,
                ]
            )
            == 2
        )
        line = one_error_line(capsys.readouterr().err, "prism-reward eval")
        assert "['front']" in line and "['cam_high']" in line


def test_skip_bad_with_every_episode_bad_is_one_line(tmp_path, capsys):
    src = tmp_path / "episodes"
    (src / "ep0").mkdir(parents=True)
    (src / "ep0" / "front.mp4").write_bytes(b"not a video")
    assert (
        prism_reward(
            [
                "eval",
                "--model",
                "oracle",
                "--data",
                str(src),
                "--out",
                str(tmp_path / "r"),
                "--skip-bad",
                "--task",
                TASK,
                "--no-progress-bar",
            ]
        )
        == 2
    )
    assert "every episode was skipped" in one_error_line(capsys.readouterr().err, "prism-reward eval")
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_traceback(capsys):
    def body(argv):
        raise ValueError("bad value")

    assert run_cli("prog", body, ["--x"]) == 2
    assert capsys.readouterr().err == "prog: error: bad value\n"
    with pytest.raises(ValueError, match="bad value"):
        run_cli("prog", body, ["--x", "--debug"])


# --------------------------------------------------------------------------------------------
# The fuzz table: bad input x command -> exit 2, one line naming the culprit, nothing touched
# --------------------------------------------------------------------------------------------

MISSING = "no_such_path"

BAD_INPUTS = [
    # (id, command, argv (with {data} {grm} {out} {tmp}), text the error line must contain)
    (
        "eval-missing-data",
        prism_reward,
        ["eval", "--model", "oracle", "--data", "{tmp}/" + MISSING, "--out", "{out}"],
        MISSING,
    ),
    (
        "eval-unknown-model",
        prism_reward,
        ["eval", "--model", "nosuch:thing", "--data", "{data}", "--out", "{out}"],
        "nosuch:thing",
    ),
    (
        "eval-missing-grm",
        prism_reward,
        ["eval", "--model", "{tmp}/" + MISSING, "--data", "{data}", "--out", "{out}"],
        MISSING,
    ),
    (
        "eval-batch-size",
        prism_reward,
        ["eval", "--model", "oracle", "--data", "{data}", "--out", "{out}", "--batch-size", "0"],
        "--batch-size",
    ),
    ("eval-out-is-data", prism_reward, ["eval", "--model", "oracle", "--data", "{data}", "--out", "{data}"], "--out"),
    ("train-missing-data", prism_reward, ["train", "--data", "{tmp}/" + MISSING, "--out", "{out}"], MISSING),
    ("train-nan-lr", prism_reward, ["train", "--data", "{data}", "--out", "{out}", "--lr", "nan"], "--lr"),
    ("train-zero-steps", prism_reward, ["train", "--data", "{data}", "--out", "{out}", "--steps", "0"], "--steps"),
    (
        "train-dropout",
        prism_reward,
        ["train", "--data", "{data}", "--out", "{out}", "--view-dropout", "1.5"],
        "--view-dropout",
    ),
    ("train-out-is-data", prism_reward, ["train", "--data", "{data}", "--out", "{data}"], "--out"),
    (
        "adapt-missing-ckpt",
        prism_reward,
        ["adapt", "--checkpoint", "{tmp}/" + MISSING, "--demo", "{dataset}", "--out", "{out}"],
        MISSING,
    ),
    (
        "adapt-episode-range",
        prism_reward,
        ["adapt", "--checkpoint", "{grm}", "--demo", "{dataset}", "--episode", "99", "--out", "{out}"],
        "--episode 99",
    ),
    (
        "adapt-out-is-ckpt",
        prism_reward,
        ["adapt", "--checkpoint", "{grm}", "--demo", "{dataset}", "--out", "{grm}"],
        "--out",
    ),
    (
        "adapt-out-is-demo",
        prism_reward,
        ["adapt", "--checkpoint", "{grm}", "--demo", "{dataset}", "--out", "{dataset}"],
        "--out",
    ),
    (
        "adapt-nan-lr",
        prism_reward,
        ["adapt", "--checkpoint", "{grm}", "--demo", "{dataset}", "--out", "{out}", "--lr", "nan"],
        "--lr",
    ),
    (
        "ingest-missing-bag",
        prism_reward,
        ["ingest", "--bag", "{tmp}/" + MISSING, "--topics", "/cam", "--out", "{out}"],
        MISSING,
    ),
    ("record-unknown-task", prism_record, ["--task", "fly", "--out", "{out}"], "fly"),
    ("record-zero-episodes", prism_record, ["--task", "reach", "--episodes", "0", "--out", "{out}"], "--episodes"),
    ("record-odd-size", prism_record, ["--task", "reach", "--size", "7", "--out", "{out}"], "--size"),
    ("record-over-data", prism_record, ["--task", "reach", "--out", "{data}", "--overwrite"], "not a dataset"),
    ("eval-policy-missing-run", prism_eval, ["--run", "{tmp}/" + MISSING], MISSING),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_fuzz_table(case, folders, dataset, grm_ckpt, tmp_path, capsys):
    name, command, argv, culprit = case
    work = tmp_path / "work"
    work.mkdir()
    (work / "unrelated.txt").write_text("leave me alone")
    subs = {
        "data": str(folders),
        "dataset": str(dataset),
        "grm": str(grm_ckpt),
        "out": str(work / "out"),
        "tmp": str(work),
    }
    args = [a.format(**subs) for a in argv]
    inputs = {"data": folders, "dataset": dataset, "grm": grm_ckpt, "work": work}
    watched = {k: snapshot(v) for k, v in inputs.items()}
    prog = {prism_reward: f"prism-reward {argv[0]}", prism_record: "prism-record", prism_eval: "prism-eval"}[command]
    assert command(args) == 2
    line = one_error_line(capsys.readouterr().err, prog)
    assert culprit in line, line
    assert {k: snapshot(v) for k, v in inputs.items()} == watched


def test_train_never_writes_into_a_user_folder(tmp_path, capsys):
    from policies.train import main as prism_train

    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    assert prism_train(["--task", "reach", "--steps", "10", "--out", str(user)]) == 2
    assert "not a run written by prism-rl" in one_error_line(capsys.readouterr().err, "prism-train")
    assert snapshot(tmp_path) == before
