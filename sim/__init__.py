"""MuJoCo multi-view Franka Panda tasks as gymnasium envs, with scripted experts and failure generators.

Importing ``sim`` registers ``prism/PandaReach-v0``, ``prism/PandaPush-v0``, ``prism/PandaPickPlace-v0``
and ``prism/PandaDrawerOpen-v0``. Use :func:`sim.make` (short names accepted) or ``gymnasium.make``.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any, Sequence  # noqa: E402

import gymnasium as gym  # noqa: E402

from .env import ACTION_MODES, PandaEnv  # noqa: E402
from .randomization import DomainRandomization  # noqa: E402
from .scene import CAMERA_NAMES, PANDA_XML_ENV_VAR, resolve_panda_xml  # noqa: E402
from .tasks import PandaDrawerOpenEnv, PandaPickPlaceEnv, PandaPushEnv, PandaReachEnv  # noqa: E402
from .world import WORLD_SPLITS, WORLDS  # noqa: E402

TASKS: dict[str, str] = {
    "reach": "prism/PandaReach-v0",
    "push": "prism/PandaPush-v0",
    "pickplace": "prism/PandaPickPlace-v0",
    "drawer": "prism/PandaDrawerOpen-v0",
}
"""Short task name -> gymnasium env id."""

TASK_CLASSES: dict[str, type[PandaEnv]] = {
    "reach": PandaReachEnv,
    "push": PandaPushEnv,
    "pickplace": PandaPickPlaceEnv,
    "drawer": PandaDrawerOpenEnv,
}

MAX_EPISODE_STEPS: dict[str, int] = {"reach": 50, "push": 100, "pickplace": 120, "drawer": 100}
"""Default time limits (control steps at 20 Hz) before truncation."""

for _name, _env_id in TASKS.items():
    if _env_id not in gym.registry:
        gym.register(
            id=_env_id,
            entry_point=f"{TASK_CLASSES[_name].__module__}:{TASK_CLASSES[_name].__name__}",
            max_episode_steps=MAX_EPISODE_STEPS[_name],
        )


def resolve_task(name: str) -> str:
    """Short task name for ``name`` given as a short name, env id or class name (case-insensitive)."""
    if not isinstance(name, str):
        raise ValueError(f"task must be a string, got {type(name).__name__}")
    key = name.strip()
    lowered = key.lower()
    for short, env_id in TASKS.items():
        cls = TASK_CLASSES[short]
        aliases = {
            short,
            env_id.lower(),
            env_id.split("/")[-1].lower(),
            cls.__name__.lower(),
            env_id.split("/")[-1].split("-")[0].lower(),
        }
        if lowered in aliases:
            return short
    valid = ", ".join(f"{s} ({TASKS[s]}, {TASK_CLASSES[s].__name__})" for s in TASKS)
    raise ValueError(f"unknown task {name!r}; valid tasks: {valid}")


def make(
    task: str,
    *,
    cameras: Sequence[str] = CAMERA_NAMES,
    image_size: int | Sequence[int] = 128,
    action_mode: str = "ee_delta",
    max_episode_steps: int | None = None,
    domain_randomization: DomainRandomization | bool | None = None,
    panda_xml: str | os.PathLike | None = None,
    world: str = "default",
    world_split: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Create a task env through ``gymnasium.make`` (so it carries the usual wrappers and TimeLimit).

    ``world="varied"`` draws a procedural scene variant at every reset (``sim/world.py``), from the
    ``world_split`` "train" (default) or "heldout" values; ``world="default"`` is the fixed scene.
    """
    short = resolve_task(task)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    return gym.make(
        TASKS[short],
        cameras=tuple(cameras or ()),
        image_size=image_size,
        action_mode=action_mode,
        domain_randomization=domain_randomization,
        panda_xml=panda_xml,
        world=world,
        world_split=world_split,
        **kwargs,
    )


__all__ = [
    "ACTION_MODES",
    "CAMERA_NAMES",
    "DomainRandomization",
    "MAX_EPISODE_STEPS",
    "PANDA_XML_ENV_VAR",
    "PandaDrawerOpenEnv",
    "PandaEnv",
    "PandaPickPlaceEnv",
    "PandaPushEnv",
    "PandaReachEnv",
    "TASKS",
    "TASK_CLASSES",
    "WORLDS",
    "WORLD_SPLITS",
    "make",
    "resolve_panda_xml",
    "resolve_task",
]
