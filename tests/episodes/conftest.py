"""Synthetic episodes for the episodes/ tests: a coloured square moving over a smooth background.

A smooth scene with one moving object makes codec round trips meaningful: the decoded frames
must match closely, and frames of different episodes or timesteps differ clearly (the square is
elsewhere), so an off-by-one or a wrong episode boundary shows up as a large error.
"""

from __future__ import annotations

import numpy as np
import pytest

from episodes import Episode

FPS = 10
IMAGE_SIZE = (48, 64)
CAMERAS = ("front", "wrist")


def moving_square(t_steps: int, seed: int, camera_offset: int = 0, size=IMAGE_SIZE) -> np.ndarray:
    """uint8 (T, H, W, 3): smooth gradient background plus a square that moves each step."""
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    background = np.stack([60 + 100 * xx / w, 60 + 100 * yy / h, np.full_like(xx, 90 + 40 * camera_offset)], axis=-1)
    colour = np.array([[230, 40, 40], [40, 200, 60], [50, 70, 230], [220, 210, 40]])[(seed + camera_offset) % 4]
    frames = np.empty((t_steps, h, w, 3), np.uint8)
    for t in range(t_steps):
        frame = background.copy()
        x0 = (3 * t + 7 * seed) % (w - 12)
        y0 = (2 * t + 5 * seed + 9 * camera_offset) % (h - 12)
        frame[y0 : y0 + 12, x0 : x0 + 12] = colour
        frames[t] = frame.round().astype(np.uint8)
    return frames


def make_episode(
    length: int,
    seed: int = 0,
    task: str = "reach the red cube",
    cameras=CAMERAS,
    size=IMAGE_SIZE,
    state_dim: int = 5,
    action_dim: int = 3,
    labels: bool = True,
) -> Episode:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return Episode(
        task=task,
        frames={cam: moving_square(length, seed, i, size) for i, cam in enumerate(cameras)},
        fps=FPS,
        task_name="reach" if "reach" in task else "push",
        state=rng.normal(size=(length, state_dim)).astype(np.float32) if state_dim else None,
        action=rng.normal(size=(length, action_dim)).astype(np.float32) if action_dim else None,
        reward=rng.normal(size=length).astype(np.float32) if labels else None,
        done=(t == length - 1) if labels else None,
        success=(t >= length - 2) if labels else None,
        progress=np.linspace(0, 1, length, dtype=np.float32) if labels else None,
        stage=(t // 4).astype(np.int64) if labels else None,
        outcome=("success", "partial", "fail")[seed % 3] if labels else None,
        meta={"seed": seed, "policy": "scripted"},
    )


@pytest.fixture
def episodes() -> list[Episode]:
    """Five episodes of different lengths over two tasks."""
    tasks = ["reach the red cube", "push the cube to the goal"]
    return [make_episode(n, seed=i, task=tasks[i % 2]) for i, n in enumerate([12, 30, 7, 25, 18])]


@pytest.fixture
def episode_factory():
    """``make_episode`` as a fixture, so test modules need not import conftest by name."""
    return make_episode


@pytest.fixture
def square_video():
    """``moving_square`` as a fixture."""
    return moving_square
