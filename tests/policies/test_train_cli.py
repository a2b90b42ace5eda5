"""prism-train / prism-eval / load_policy end to end on the real sim, at a tiny budget."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.configuration_train import PRESET_DIR, RLTrainConfig, parse_train_config, task_preset
from policies.evaluate import EvalArgs, evaluate, wilson_interval
from policies.evaluate import main as eval_main
from policies.train import main as train_main
from reward_models.base import ProgressModel, hop_from_progress


def tiny_config(out: Path, **kw) -> RLTrainConfig:
    base = dict(
        task="reach",
        algo="sac",
        reward="oracle",
        n_envs=2,
        steps=240,
        seed=3,
        out=out,
        max_episode_steps=30,
        eval_every=120,
        eval_episodes=2,
        video_every=1,
        checkpoint_every=120,
        progress_bar=False,
        net_arch=(32, 32),
        hyperparams={"learning_starts": 60, "batch_size": 32, "buffer_size": 2000},
    )
    base.update(kw)
    return RLTrainConfig(**base)


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--task",
        "--algo",
        "--reward",
        "--obs",
        "--n-envs",
        "--steps",
        "--seed",
        "--device",
        "--out",
        "--config",
        "--resume",
        "--gamma",
        "--query-every",
        "--success-source",
        "--normalize-reward",
    ):
        assert flag in text
    assert "naive-delta" in text and "Breaks exact telescoping" in text
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    assert "--record" in capsys.readouterr().out


def test_yaml_config_then_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: push\nalgo: ppo\nsteps: 1234\nnet_arch: [16, 16]\nhyperparams:\n  n_steps: 64\n")
    parsed = parse_train_config(["--config", str(cfg), "--steps", "99", "--out", str(tmp_path / "r")])
    assert (parsed.task, parsed.algo, parsed.steps, parsed.net_arch) == ("push", "ppo", 99, (16, 16))
    assert parsed.hyperparams == {"n_steps": 64}
    (tmp_path / "bad.yaml").write_text("task: push\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*learning_rate"):
        RLTrainConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="gamma"):
        RLTrainConfig(gamma=1.5)
    # the shipped configs load
    shipped = sorted(PRESET_DIR.glob("*.yaml"))
    assert len(shipped) >= 10, shipped
    for path in shipped:
        RLTrainConfig.from_yaml(path)


def test_flags_beat_config_which_replaces_the_preset_and_resume_reads_the_runs_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: reach\ngamma: 0.9\n")
    # --config replaces the reach preset (its 20k steps are not used); a flag wins wherever it stands
    parsed = parse_train_config(["--gamma", "0.8", "--config", str(cfg)])
    assert (parsed.task, parsed.gamma, parsed.steps, parsed.config) == ("reach", 0.8, RLTrainConfig.steps, cfg)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: reach\nsteps: 77\n")
    assert parse_train_config(["--out", str(run), "--resume"]).steps == 77
    assert parse_train_config(["--resume", "--out", str(run), "--steps", "88"]).steps == 88
    assert parse_train_config(["--out", str(run)]).steps == task_preset("push")["steps"]  # not resuming
    for bad in (["--algo", "bogus"], ["--task"], ["--steps", "many"]):  # tyro's usage error, exit 2
        with pytest.raises(SystemExit) as exc:
            parse_train_config(bad)
        assert exc.value.code == 2, bad


def test_wilson_interval():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 0)


def test_device_choice(tmp_path, capsys):
    from reward_models.devices import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device must be 'auto', 'cpu' or 'cuda"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        return
    # Asking for a GPU that is not there is an error before anything is written, not a silent CPU run.
    out = tmp_path / "run"
    assert train_main(["--task", "reach", "--steps", "100", "--device", "cuda", "--out", str(out)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_and_eval_on_cuda(tmp_path):
    from policies.run import load_policy
    from policies.train import train

    out = tmp_path / "run"
    result = train(tiny_config(out, device="cuda", video_every=0))
    assert result.env_steps == 240
    policy = load_policy(out, device="cuda")
    assert next(policy.model.policy.parameters()).is_cuda
    assert eval_main(["--run", str(out), "--episodes", "2", "--device", "cuda"]) == 0


@pytest.mark.slow
def test_train_resume_load_and_eval(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from policies.run import load_policy
    from policies.train import train

    out = tmp_path / "run"
    result = train(tiny_config(out))
    assert result.env_steps == 240
    for rel in ("config.yaml", "model.zip", "eval/curve.csv", "eval/best_model.zip", "train_summary.json"):
        assert (out / rel).is_file(), rel
    assert list((out / "eval" / "videos").glob("*.mp4"))
    assert [r["timesteps"] for r in result.eval_curve] == [120, 240]
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(out))

    # Resume from the newest checkpoint up to a larger budget: the curve continues.
    assert train_main(["--out", str(out), "--resume", "--steps", "360"]) == 0
    resumed = (out / "eval" / "curve.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in resumed[1:]] == [120, 240, 360]

    tags = set()
    for ev in (out / "tb").rglob("events.out.tfevents*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for tag in ("true/success_rate", "true/ep_return", "shaping/ep_shaped_return", "shaping/phi", "eval/success_rate"):
        assert tag in tags, (tag, sorted(tags))

    policy = load_policy(out, device="cpu")
    assert (policy.task, policy.obs_mode, policy.cameras, policy.action_mode) == ("reach", "state", (), "ee_delta")
    import sim

    env = sim.make("reach", cameras=("front",), image_size=32)
    obs, _ = env.reset(seed=0)
    env.close()
    action = policy.predict(obs)
    assert action.shape == (4,) and action.dtype == np.float32
    with pytest.raises(ValueError, match="expects"):
        policy.predict({"state": np.zeros(5, np.float32)})

    assert eval_main(["--run", str(out), "--episodes", "3", "--video", "--video-episodes", "1"]) == 0
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["episodes"] == 3 and 0.0 <= report["ci_low"] <= report["success_rate"] <= report["ci_high"] <= 1.0
    assert report["mean_return"] is not None
    assert (out / "eval" / "videos" / "eval.mp4").is_file()

    report = evaluate(EvalArgs(run=out, episodes=2, record=tmp_path / "rollouts", record_cameras="front"))
    from episodes import open_dataset

    ds = open_dataset(tmp_path / "rollouts")
    assert len(ds) == 2 and ds.cameras == ["front"]
    assert report["recorded_to"] == str(tmp_path / "rollouts") and report["mean_return"] is not None
    assert 0 < report["mean_length"] <= 30  # the run's time limit, kept by the recording


class FrontBrightness(ProgressModel):
    """A camera-based progress model stand-in: Φ from the front view's mean brightness."""

    model_id = "front-brightness"
    cameras = ("front",)

    def __init__(self):
        self.calls = 0
        self.shapes = []

    def encode(self, obs):
        self.calls += 1
        frames = np.asarray(obs["front"])
        self.shapes.append(frames.shape)
        return frames.reshape(len(frames), -1).mean(axis=1) / 255.0

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
        assert all(isinstance(t, str) and t for t in tasks)
        return hop_from_progress(before, after)


@pytest.mark.parametrize("obs_mode", ["state", "pixels"])
def test_real_sim_reward_views_reach_the_model_once_per_step(tmp_path, obs_mode):
    from policies.shaping import RewardSpec
    from policies.train import build_train_env

    model = FrontBrightness()
    cfg = tiny_config(tmp_path / "r", obs=obs_mode, cameras="front", image_size=32, max_episode_steps=8, n_envs=2)
    env, shaped = build_train_env(cfg, "cpu", reward_model=model, spec=RewardSpec.parse("grm:unused"))
    try:
        env.reset()
        rng = np.random.default_rng(0)
        dones = 0
        for _ in range(20):
            _, r, d, infos = env.step(rng.uniform(-1, 1, size=(2, 4)).astype(np.float32))
            dones += int(d.sum())
            assert np.all(np.isfinite(r))
            assert all("phi" in i["shaping"] for i in infos)
        assert dones >= 4  # crossed auto-resets (time limit 8)
        assert model.calls == 21
        assert all(s[1:] == (32, 32, 3) for s in model.shapes)
        renderers = env.get_attr("cameras_to_render", indices=[0])[0]
        assert renderers == (() if obs_mode == "pixels" else ("front",))  # pixel policy: no extra render
    finally:
        env.close()
