"""LayerNorm critics for SAC: what they bound, and that runs with them save, resume and load."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import SAC

from policies.configuration_train import RLTrainConfig
from policies.critics import LayerNormMlpPolicy, LayerNormMultiInputPolicy


def _q(model: SAC, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        q1, q2 = model.critic(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(action, dtype=torch.float32))
    return torch.minimum(q1, q2).numpy().ravel()


def test_layer_norm_bounds_how_far_the_critic_extrapolates():
    env = gym.make("Pendulum-v1")
    plain = SAC("MlpPolicy", env, policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")
    normed = SAC(LayerNormMlpPolicy, env, policy_kwargs={"net_arch": [32, 32]}, seed=0, device="cpu")
    for net in (normed.critic, normed.critic_target):
        assert sum(isinstance(m, torch.nn.LayerNorm) for m in net.modules()) == 2 * 2  # twin critics × 2 layers
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in normed.actor.modules())

    # Inputs far outside any data range: a plain MLP's Q grows with the input's scale, a LayerNorm
    # critic's converges (each hidden layer is scale-invariant), whatever its weights are.
    rng = np.random.default_rng(0)
    obs, action = rng.normal(size=(16, 3)), rng.uniform(-1, 1, size=(16, 1))
    plain_gap = np.abs(_q(plain, 1e4 * obs, 1e4 * action) - _q(plain, 1e3 * obs, 1e3 * action)).max()
    normed_gap = np.abs(_q(normed, 1e4 * obs, 1e4 * action) - _q(normed, 1e3 * obs, 1e3 * action)).max()
    assert plain_gap > 10.0
    assert normed_gap < 1e-2


def test_saved_layer_norm_models_load_with_plain_sac_load(tmp_path):
    env = gym.make("Pendulum-v1")
    model = SAC(
        LayerNormMlpPolicy,
        env,
        policy_kwargs={"net_arch": [16]},
        learning_starts=20,
        batch_size=16,
        seed=1,
        device="cpu",
    )
    model.learn(60)
    model.save(tmp_path / "model.zip")
    loaded = SAC.load(tmp_path / "model.zip", device="cpu")
    assert type(loaded.policy) is LayerNormMlpPolicy
    obs, action = np.zeros((4, 3)) + 0.3, np.zeros((4, 1)) - 0.2
    np.testing.assert_allclose(_q(loaded, obs, action), _q(model, obs, action), rtol=1e-6)


def test_critic_layer_norm_is_for_sac_only(tmp_path):
    with pytest.raises(ValueError, match="--algo sac"):
        RLTrainConfig(algo="ppo", critic_layer_norm=True, out=tmp_path)


@pytest.mark.parametrize("obs_mode", ["state", "pixels"])
def test_prism_train_builds_layer_norm_critics_and_resumes_them(tmp_path, obs_mode):
    from policies.run import load_policy
    from policies.train import train

    from test_train_cli import tiny_config  # tests/policies is on sys.path (conftest.py)

    out = tmp_path / "run"
    pixels = {"obs": "pixels", "cameras": "front", "image_size": 48} if obs_mode == "pixels" else {}

    def config(steps: int, resume: bool) -> RLTrainConfig:
        return tiny_config(
            out, steps=steps, resume=resume, eval_every=0, video_every=0, critic_layer_norm=True, **pixels
        )

    train(config(120, resume=False))
    resumed = train(config(180, resume=True))
    assert resumed.env_steps == 180
    policy = load_policy(out, device="cpu")
    expected = LayerNormMultiInputPolicy if obs_mode == "pixels" else LayerNormMlpPolicy
    assert type(policy.model.policy) is expected
