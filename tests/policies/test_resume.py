"""Crash-safe, exact resume of prism-train: checkpoints are one unit, a damaged newest one falls
back to the one before, Ctrl-C / SIGTERM checkpoint and exit cleanly, and a run SIGKILLed at random
points and resumed ends where an uninterrupted run of the same seed ends."""

import json
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from policies.callbacks import latest_checkpoint, read_eval_curve, verify_checkpoint
from policies.configuration_train import RLTrainConfig
from policies.train import main as train_main
from policies.train import train

REPO = Path(__file__).resolve().parents[2]

# A ~1 s run: checkpoints come only from evaluations (checkpoint_every keeps its default, which
# is far beyond `steps`), and the replay buffer (200 transitions) wraps around.
TINY = dict(
    task="reach",
    algo="sac",
    reward="oracle",
    n_envs=2,
    steps=400,
    seed=5,
    max_episode_steps=20,
    eval_every=50,
    eval_episodes=1,
    video_every=0,
    progress_bar=False,
    net_arch=[16, 16],
    obs_stats_steps=100,
    hyperparams={"learning_starts": 40, "batch_size": 16, "buffer_size": 200},
)


def tiny(out: Path, **kw) -> RLTrainConfig:
    return RLTrainConfig(**{**TINY, "out": out, **kw})


def buffer_of(checkpoint: Path):
    with open(checkpoint / "replay_buffer.pkl", "rb") as f:
        return pickle.load(f)


def curve_steps(run: Path) -> list[int]:
    return [int(r["timesteps"]) for r in read_eval_curve(run / "eval" / "curve.csv")]


def test_checkpoint_is_one_unit_and_a_damaged_newest_falls_back(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny(out, steps=120, eval_every=40))
    ckpts = sorted((out / "checkpoints").iterdir())
    # one directory per evaluation, each complete: model, the buffer of that very step, state
    assert [p.name for p in ckpts] == ["step_000000040", "step_000000080", "step_000000120"]
    for path in ckpts:
        manifest = verify_checkpoint(path)
        assert set(manifest["files"]) == {"model.zip", "replay_buffer.pkl", "state.pkl"}
        step = int(path.name.split("_")[1])
        assert manifest["timesteps"] == step
        buf = buffer_of(path)
        assert buf.size() * buf.n_envs == min(step, 200)  # every transition of the steps counted

    # The newest is damaged, a newer one is half-written: resume from step 80, say so, carry on.
    with open(ckpts[-1] / "replay_buffer.pkl", "r+b") as f:
        f.truncate(1000)
    partial = out / "checkpoints" / "step_000000999"
    partial.mkdir()
    (partial / "model.zip").write_bytes(b"PK")
    assert latest_checkpoint(out) == (ckpts[1], 80)
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--steps", "160"]) == 0
    err = capsys.readouterr().err
    assert "step_000000999 is unusable" in err and "no manifest.json" in err
    assert "step_000000120 is unusable" in err and "damaged" in err and "trying the previous one" in err
    assert (out / "checkpoints" / "step_000000999.unusable").is_dir()
    # one curve row per evaluation step: the row of the lost step 120 is redone, not duplicated
    assert curve_steps(out) == [40, 80, 120, 160]
    assert json.loads((out / "train_summary.json").read_text())["env_steps"] == 160
    assert latest_checkpoint(out)[1] == 160
    assert len(list((out / "checkpoints").glob("step_?????????"))) == 3  # bounded


def test_fresh_run_never_inherits_an_old_curve(tmp_path):
    # A run that died before its first checkpoint: its config and a curve row, no checkpoints.
    out = tmp_path / "run"
    (out / "eval").mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(TINY))
    (out / "eval" / "curve.csv").write_text(
        "timesteps,success_rate,mean_return,mean_length,mean_final_progress,episodes\n40,1.0,1.0,5,1.0,1\n"
    )
    result = train(tiny(out, steps=80, eval_every=40))
    assert curve_steps(out) == [40, 80] == [int(r["timesteps"]) for r in result.eval_curve]


def _write_config(tmp_path: Path, **kw) -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, **kw}))
    return cfg


def _start(args: list[str]) -> subprocess.Popen:
    # SIGINT at its default even when the test run itself was started in the background (a
    # non-interactive shell starts background jobs with SIGINT ignored, and children inherit that).
    return subprocess.Popen(
        [sys.executable, "-m", "policies.train", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _signal_after_next_checkpoint(proc: subprocess.Popen, run: Path, sig: int, delay: float) -> tuple[int, str]:
    """Wait for a checkpoint newer than the run's newest so far, then ``delay`` s, then ``sig``."""
    newest = latest_checkpoint(run)
    seen = newest[1] if newest else 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        now = latest_checkpoint(run)
        if now is not None and now[1] > seen:
            break
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    train(tiny(reference))
    cfg = _write_config(tmp_path)
    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    args = ["--config", str(cfg), "--out", str(run)]
    for _ in range(2):
        rc, err = _signal_after_next_checkpoint(_start(args), run, signal.SIGKILL, rng.uniform(0.0, 0.3))
        kills += rc == -signal.SIGKILL
        args = ["--out", str(run), "--resume"]
    assert kills >= 1, "the run finished before any kill; make it longer"
    assert train_main(["--out", str(run), "--resume"]) == 0

    ref_summary = json.loads((reference / "train_summary.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["env_steps"] == ref_summary["env_steps"] == 400
    assert curve_steps(run) == curve_steps(reference) == list(range(50, 401, 50))
    (ref_ckpt, ref_step), (ckpt, step) = latest_checkpoint(reference), latest_checkpoint(run)
    assert step == ref_step == 400
    ref_buf, buf = buffer_of(ref_ckpt), buffer_of(ckpt)
    assert (buf.size(), buf.pos, buf.full) == (ref_buf.size(), ref_buf.pos, ref_buf.full)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_checkpoints_and_exits_cleanly(tmp_path, sig):
    cfg = _write_config(tmp_path, steps=100_000)  # still running when the signal comes
    run = tmp_path / "run"
    rc, err = _signal_after_next_checkpoint(_start(["--config", str(cfg), "--out", str(run)]), run, sig, 0.1)
    assert rc == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    m = re.fullmatch(
        r"prism-train: interrupted at step (\d+); checkpoint saved in (\S+); "
        r"resume with: prism-train --out (\S+) --resume",
        lines[0],
    )
    assert m, lines[0]
    step, where = int(m.group(1)), Path(m.group(2))
    assert verify_checkpoint(where)["timesteps"] == step and latest_checkpoint(run) == (where, step)
    assert buffer_of(where).size() * 2 == min(step, 200)
    assert curve_steps(run) == list(range(50, step + 1, 50))
    assert train_main(["--out", m.group(3), "--resume", "--steps", str(step + 100)]) == 0
    assert json.loads((run / "train_summary.json").read_text())["env_steps"] == step + 100
    steps = curve_steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == step + 100
