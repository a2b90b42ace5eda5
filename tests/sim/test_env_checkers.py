"""gymnasium's and stable-baselines3's environment checkers on every task, with and without pixels."""

import warnings

import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sim

TASKS = list(sim.TASKS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("cameras", [(), ("front", "wrist")], ids=["state", "pixels"])
def test_gymnasium_check_env(task, cameras):
    env = sim.make(task, cameras=cameras, image_size=48, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # image-size advice for tiny test images
        gym_check_env(env.unwrapped, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("cameras", [(), ("side",)], ids=["state", "pixels"])
def test_sb3_check_env(task, cameras):
    env = sim.make(task, cameras=cameras, image_size=48)
    with warnings.catch_warnings():
        # SB3 advises flattening nested Dict spaces (pixels: {camera: Box}); the env itself is valid.
        warnings.simplefilter("ignore", UserWarning)
        sb3_check_env(env.unwrapped, warn=True, skip_render_check=True)
    env.close()
