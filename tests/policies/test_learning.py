"""Learning components judged by what they learn (small budgets, 2 CPU cores)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from policies.shaping import ProgressInfoPotential, ShapedRewardVecEnv

from toy_envs import ChainEnv


def chain_success(model, episodes=20):
    env = ChainEnv(length=20, max_steps=30, slip=0.1)
    wins = 0
    for k in range(episodes):
        obs, info = env.reset(seed=k)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(int(model.predict(obs, deterministic=True)[0]))
            done = term or trunc
        wins += info["is_success"]
    return wins / episodes


def test_ppo_learns_a_long_chain_with_progress_shaping():
    """20 steps to the goal, 30-step limit, slips: a random walk almost never succeeds; PPO on the
    oracle-shaped reward solves it within 6k steps."""
    torch.set_num_threads(1)
    results = {}
    for name, potential in (("oracle", ProgressInfoPotential(4)),):
        venv = DummyVecEnv([lambda: Monitor(ChainEnv(length=20, max_steps=30, slip=0.1))] * 4)
        env = ShapedRewardVecEnv(venv, potential, gamma=0.95)
        model = PPO(
            "MlpPolicy",
            env,
            gamma=0.95,
            n_steps=64,
            batch_size=64,
            seed=0,
            learning_rate=3e-3,
            policy_kwargs={"net_arch": [32]},
            device="cpu",
        )
        before = chain_success(model)
        model.learn(6_000)
        results[name] = (before, chain_success(model))
    assert results["oracle"][0] == 0.0 and results["oracle"][1] >= 0.8, results


def test_task_presets_are_read_from_the_shipped_configs_and_are_the_cli_defaults():
    """`prism-train --task reach` without --config starts from policies/configs/sac_reach.yaml, the one
    source of the tuned settings (package data, so an installed copy has them too); flags and --config
    still win; the per-algo SB3 hyperparameters under every run come from <algo>_defaults.yaml."""
    from fnmatch import fnmatch
    from pathlib import Path

    import tomllib

    import policies
    from policies.configuration_train import (
        PRESET_DIR,
        RLTrainConfig,
        algo_hyperparams,
        parse_train_config,
        task_preset,
    )

    repo = Path(__file__).resolve().parents[2]
    package_data = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert PRESET_DIR.parent == Path(policies.__file__).resolve().parent
    shipped_files = sorted(PRESET_DIR.glob("*.yaml"))
    assert shipped_files and all(
        any(fnmatch(str(f.relative_to(PRESET_DIR.parent)), pattern) for pattern in package_data["policies"])
        for f in shipped_files
    )
    for task, algo in (("reach", "sac"), ("push", "sac"), ("reach", "ppo")):
        shipped = RLTrainConfig.from_yaml(PRESET_DIR / f"{algo}_{task}.yaml")
        assert (shipped.task, shipped.algo) == (task, algo)
        assert parse_train_config(["--task", task, "--algo", algo]).to_dict() == shipped.to_dict(), (task, algo)
        assert RLTrainConfig.for_task(task, algo).to_dict() == shipped.to_dict(), (task, algo)
    reach = parse_train_config(["--task", "reach"])
    assert (reach.gamma, reach.hyperparams["gradient_steps"]) == (0.95, -1)
    push = parse_train_config(["--task", "push", "--gamma", "0.99", "--steps", "10"])
    assert (push.gamma, push.steps, push.n_envs) == (0.99, 10, task_preset("push", "sac")["n_envs"])
    assert parse_train_config(["--task", "prism/PandaPush-v0"]).hyperparams == task_preset("push")["hyperparams"]
    assert parse_train_config(["--task", "drawer"]).hyperparams == {}  # no preset: plain defaults
    tiny = parse_train_config(["--config", str(PRESET_DIR / "sac_reach_tiny.yaml"), "--task", "reach"])
    assert tiny.steps == 4_000
    with pytest.raises(ValueError, match="preset reach/sac"):
        RLTrainConfig.for_task("reach", "sac", gamma=2.0)
    for algo in ("sac", "ppo"):
        assert algo_hyperparams(algo) == RLTrainConfig.from_yaml(PRESET_DIR / f"{algo}_defaults.yaml").hyperparams
    assert algo_hyperparams("sac")["ent_coef"] == "auto_0.01" and algo_hyperparams("ppo")["n_steps"] == 256


def test_state_normaliser_is_saved_inside_the_model(tmp_path):
    """The policy normalises raw states itself (fixed statistics in model.zip), so a reloaded model
    acts identically on raw sim states and a wrong-sized normaliser is refused."""
    from stable_baselines3 import SAC

    from policies.envs import normalizing_policy_kwargs, state_statistics

    mean, std = state_statistics("reach", steps=120, seed=0)
    assert mean.shape == std.shape == (21,) and np.all(std >= 1e-2)
    space = gym.spaces.Box(-np.inf, np.inf, (21,), np.float32)
    env = DummyVecEnv([lambda: gym.wrappers.TimeLimit(_ConstantEnv(space), 5)])
    kwargs = normalizing_policy_kwargs("state", mean, std) | {"net_arch": [8]}
    model = SAC("MlpPolicy", env, policy_kwargs=kwargs, device="cpu", seed=0)
    obs = (mean + 3 * std).astype(np.float32)[None]
    features = model.policy.actor.extract_features(torch.as_tensor(obs), model.policy.actor.features_extractor)
    assert torch.allclose(features, torch.full((1, 21), 3.0), atol=1e-4)
    model.save(tmp_path / "m.zip")
    loaded = SAC.load(tmp_path / "m.zip", device="cpu")
    assert np.allclose(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert torch.equal(loaded.policy.actor.features_extractor.state_mean, torch.as_tensor(mean, dtype=torch.float32))
    with pytest.raises(ValueError, match="21"):
        SAC("MlpPolicy", env, policy_kwargs=normalizing_policy_kwargs("state", mean[:5], std[:5]), device="cpu")


class _ConstantEnv(gym.Env):
    """Zeros forever: only its spaces matter (for building and saving a policy)."""

    def __init__(self, space):
        self.observation_space = space
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


@pytest.mark.slow
def test_sac_on_panda_reach_with_oracle_shaping_learns_to_succeed(tmp_path):
    """Real sim, state-only SAC with the tuned reach preset (policies/configs/sac_reach_tiny.yaml), seeds 0
    and 1: the deterministic policy's true success rate on fresh seeds, averaged over the two seeds,
    rises by at least 30 points from the first evaluation (1k env steps) to the best of the last two
    (3k-4k), and the mean final progress at 4k is at least 0.55. Measured with torch 2.14.1:
    success 0 / 5 % at 1k, 45 / 40 % at 4k; final progress 0.56 / 0.77 (~45 s a seed on 2 cores).
    Two seeds, not one, because one seed's curve moves with the torch build (seed 0 alone: final
    progress 0.56 here, above 0.6 with the build before)."""
    from policies.configuration_train import PRESET_DIR, RLTrainConfig
    from policies.train import train

    curves = []
    for seed in (0, 1):
        cfg = RLTrainConfig.from_yaml(PRESET_DIR / "sac_reach_tiny.yaml")
        cfg.out, cfg.seed, cfg.progress_bar, cfg.device = tmp_path / f"run{seed}", seed, False, "cpu"
        curves.append(train(cfg).eval_curve)
    assert all(len(curve) == 4 for curve in curves), curves
    success = np.array([[row["success_rate"] for row in curve] for curve in curves]).mean(axis=0)
    final_progress = np.mean([curve[-1]["mean_final_progress"] for curve in curves])
    assert success[0] <= 0.3 and max(success[-2:]) >= success[0] + 0.3, curves
    assert final_progress >= 0.55, curves
