"""Scripted experts and failure generators for every task (privileged state, ``ee_delta`` actions).

Use :func:`make_policy` with a name from :data:`POLICIES`::

    policy = make_policy("failure-mix", env, seed=0)
    obs, info = env.reset(seed=1)
    policy.reset(obs, info)            # policy.kind says what it will do this episode
    action = policy.act(obs, info)

Experts are closed-loop state machines (they re-plan from the current state every step), so they
tolerate action noise. Failure generators reuse them with a wrong goal, a stop, or an undo phase.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from .env import EE_STEP_M
from .tasks import (
    DRAWER_OPEN,
    LIFT_HEIGHT,
    PUSH_EE_HEIGHT,
    PandaDrawerOpenEnv,
    PandaEnv,
    PandaPickPlaceEnv,
    PandaPushEnv,
    PandaReachEnv,
)

POLICIES = ("expert", "noisy", "random", "partial", "stall", "wrong-object", "wrong-target", "rewind", "failure-mix")
"""Behaviour names accepted by :func:`make_policy`."""

DEFAULT_NOISE = {"expert": 0.0, "noisy": 0.3}
"""Gaussian action-noise std per behaviour when ``noise`` is not given (others: 0)."""
EXPERT_PROBABILITY_IN_MIX = 0.4
FAILURE_KINDS = ("partial", "random", "stall", "wrong-object", "wrong-target", "rewind")
"""What ``failure-mix`` picks from when it does not pick the expert."""

OPEN, CLOSED = -1.0, 1.0
SAFE_Z = 0.09
"""Grip-point height for moving above props without touching them (block tops are at 4 cm)."""


def _toward(ee: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Proportional Cartesian command that reaches ``goal`` in one step when it is within 2 cm."""
    return np.clip((np.asarray(goal) - ee) / EE_STEP_M, -1.0, 1.0)


class ScriptedPolicy:
    """Base of all scripted behaviours: ``reset(obs, info)``, ``act(obs, info)`` and ``kind``."""

    kind: str = "expert"

    def __init__(self, env: gym.Env, seed: int = 0, noise: float = 0.0):
        self.env = env
        self.u: PandaEnv = env.unwrapped
        if self.u.action_mode != "ee_delta":
            raise ValueError("scripted policies emit ee_delta actions; make the env with action_mode='ee_delta'")
        self.rng = np.random.default_rng(seed)
        self.noise = float(noise)

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        pass

    def _act(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def act(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        action = np.asarray(self._act(obs, info), dtype=np.float64)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# Task experts. Each takes "goal getters" so failure generators can aim them at the wrong thing.
# ---------------------------------------------------------------------------------------------------
class ReachExpert(ScriptedPolicy):
    def __init__(self, env, seed=0, noise=0.0, goal: Callable[[], np.ndarray] | None = None, rewind_at=None):
        super().__init__(env, seed, noise)
        self.goal = goal or (lambda: self.u.goal_pos)
        self.rewind_at = rewind_at  # progress at which to turn back (rewind behaviour)

    def reset(self, obs, info):
        self.start = self.u.ee_pos
        self.returning = False

    def _act(self, obs, info):
        if self.rewind_at is not None and info["progress"] >= self.rewind_at:
            self.returning = True
        goal = self.start if self.returning else self.goal()
        return np.r_[_toward(self.u.ee_pos, goal), OPEN]


class PushExpert(ScriptedPolicy):
    """Go behind the block (fingers closed), descend, push it along the block->target line."""

    def __init__(self, env, seed=0, noise=0.0, block=None, target=None, rewind_at=None):
        super().__init__(env, seed, noise)
        self.block = block or (lambda: self.u.block_pos)
        self.target = target or (lambda: self.u.target_pos)
        self.rewind_at = rewind_at  # fraction of the push after which the block is pushed back

    def reset(self, obs, info):
        self.phase = "approach"
        self.start_block = self.block().copy()
        self.start_dist = float(np.linalg.norm(self.target()[:2] - self.start_block[:2]))
        self.start_ee = self.u.ee_pos
        self.returning = False

    def _goal_target(self) -> np.ndarray:
        if self.rewind_at is not None and not self.returning:
            done = 1.0 - np.linalg.norm(self.target()[:2] - self.block()[:2]) / max(self.start_dist, 1e-6)
            if done >= self.rewind_at:
                self.returning = True
                self.phase = "retreat"
        return self.start_block if self.returning else self.target()

    def _act(self, obs, info):
        ee, block = self.u.ee_pos, self.block()
        target = self._goal_target()
        delta = target[:2] - block[:2]
        dist = float(np.linalg.norm(delta))
        direction = delta / max(dist, 1e-6)
        # the block's size is the episode's (the varied world draws it)
        half, push_offset = self.u.block_half, self.u.push_offset
        pre = block[:2] - direction * push_offset
        if self.returning and (self.phase == "home" or dist < 0.02):
            # block is back where it started: lift off and return the hand to its start pose
            self.phase = "home"
            goal = [ee[0], ee[1], SAFE_Z] if ee[2] < SAFE_Z - 0.02 else self.start_ee
            return np.r_[_toward(ee, goal), CLOSED]
        rel = ee[:2] - block[:2]
        lateral = abs(direction[0] * rel[1] - direction[1] * rel[0])
        along = float(direction @ rel)
        if self.phase == "push" and (lateral > 0.02 or along > -half or along < -push_offset - 0.05):
            self.phase = "retreat"
        if self.phase == "retreat":
            if ee[2] > SAFE_Z - 0.02:
                self.phase = "approach"
            else:
                return np.r_[_toward(ee, [ee[0], ee[1], SAFE_Z]), CLOSED]
        if self.phase == "approach":
            if np.linalg.norm(ee[:2] - pre) < 0.012:
                self.phase = "descend"
            else:
                return np.r_[_toward(ee, [pre[0], pre[1], SAFE_Z]), CLOSED]
        if self.phase == "descend":
            if np.linalg.norm(ee[:2] - pre) > 0.03:
                self.phase = "approach"
                return np.r_[_toward(ee, [pre[0], pre[1], SAFE_Z]), CLOSED]
            if ee[2] < PUSH_EE_HEIGHT + 0.01:
                self.phase = "push"
            else:
                return np.r_[_toward(ee, [pre[0], pre[1], PUSH_EE_HEIGHT]), CLOSED]
        if dist < 0.004:  # arrived (only reached when success does not end the episode)
            return np.r_[0.0, 0.0, 0.0, CLOSED]
        # Aim through the pre-push point of the *current* block pose: corrects drift sideways.
        goal = pre + direction * (push_offset - half - 0.008 + min(0.025, dist))
        return np.r_[_toward(ee, [goal[0], goal[1], PUSH_EE_HEIGHT]), CLOSED]


class PickPlaceExpert(ScriptedPolicy):
    """Above block -> descend -> close -> lift -> carry -> lower -> release -> retreat."""

    CLOSE_STEPS = 6

    def __init__(self, env, seed=0, noise=0.0, block=None, target=None, block_color=None, rewind=False):
        super().__init__(env, seed, noise)
        self.block = block or (lambda: self.u.block_pos)
        self.target = target or (lambda: self.u.target_pos)
        self.block_color = block_color  # None: the task block
        self.rewind = rewind

    def reset(self, obs, info):
        self.phase = "above"
        self.count = 0
        if self.rewind:  # put the block back where it started
            start = self.block().copy()
            self.target = lambda: start

    def _grasped(self) -> bool:
        return self.u.is_grasping(self.u.block_geoms(self.block_color))

    def _act(self, obs, info):
        ee, block, target = self.u.ee_pos, self.block(), self.target()
        half = self.u.block_half_height  # the episode's block (the varied world draws its size)
        carry_z = half + LIFT_HEIGHT + 0.04  # carry height of the block's centre
        if self.phase in ("lift", "carry", "lower") and not self._grasped() and block[2] < half + 0.005:
            self.phase = "above"  # dropped it: start over
        if self.phase == "above":
            goal = [block[0], block[1], block[2] + 0.1]
            if np.linalg.norm(ee[:2] - block[:2]) < 0.01:
                self.phase = "descend"
            else:
                return np.r_[_toward(ee, goal), OPEN]
        if self.phase == "descend":
            if np.linalg.norm(ee[:2] - block[:2]) > 0.025:
                self.phase = "above"
                return np.r_[_toward(ee, [block[0], block[1], block[2] + 0.1]), OPEN]
            if np.linalg.norm(ee - block) < 0.01:
                self.phase, self.count = "close", 0
            else:
                return np.r_[_toward(ee, block), OPEN]
        if self.phase == "close":
            self.count += 1
            if self.count > self.CLOSE_STEPS:
                self.phase = "lift"
            else:
                return np.r_[_toward(ee, block), CLOSED]
        if self.phase == "lift":
            if block[2] >= half + LIFT_HEIGHT + 0.02:
                self.phase = "carry"
            else:
                return np.r_[_toward(ee, [ee[0], ee[1], carry_z + ee[2] - block[2] + half]), CLOSED]
        offset = ee - block  # grasp offset: steer the *block* to its goal
        if self.phase == "carry":
            if np.linalg.norm(block[:2] - target[:2]) < 0.01:
                self.phase = "lower"
            else:
                return np.r_[_toward(ee, np.r_[target[:2], carry_z] + offset), CLOSED]
        if self.phase == "lower":
            if block[2] < half + 0.004:
                self.phase, self.count = "release", 0
            else:
                return np.r_[_toward(ee, np.r_[target[:2], half] + offset), CLOSED]
        if self.phase == "release":
            self.count += 1
            if self.count > 4:
                self.phase = "retreat"
            return np.r_[0.0, 0.0, 0.0, OPEN]
        return np.r_[_toward(ee, [ee[0], ee[1], 0.22]), OPEN]  # retreat


class DrawerExpert(ScriptedPolicy):
    """Above handle -> descend -> close on the bar -> pull out (-x); rewind pushes it back."""

    CLOSE_STEPS = 6

    def __init__(self, env, seed=0, noise=0.0, handle=None, pull_to: float = DRAWER_OPEN + 0.02, rewind: bool = False):
        super().__init__(env, seed, noise)
        self.handle = handle or (lambda: self.u.handle_pos)
        self.pull_to = pull_to
        self.rewind = rewind

    def reset(self, obs, info):
        self.phase = "above"
        self.count = 0
        self.pull_start_x = None

    def _act(self, obs, info):
        ee, handle = self.u.ee_pos, self.handle()
        if self.phase in ("pull", "push-back") and np.linalg.norm(ee - handle) > 0.04:
            self.phase = "above"  # slipped off the handle
        if self.phase == "above":
            if np.linalg.norm(ee[:2] - handle[:2]) < 0.01:
                self.phase = "descend"
            else:
                return np.r_[_toward(ee, handle + [0, 0, 0.08]), OPEN]
        if self.phase == "descend":
            if np.linalg.norm(ee[:2] - handle[:2]) > 0.025:
                self.phase = "above"
                return np.r_[_toward(ee, handle + [0, 0, 0.08]), OPEN]
            if np.linalg.norm(ee - handle) < 0.01:
                self.phase, self.count = "close", 0
            else:
                return np.r_[_toward(ee, handle), OPEN]
        if self.phase == "close":
            self.count += 1
            if self.count > self.CLOSE_STEPS:
                self.phase = "pull"
                self.pull_start_x = ee[0]
            else:
                return np.r_[_toward(ee, handle), CLOSED]
        if self.phase == "pull":
            pulled = self.pull_start_x - ee[0]
            if pulled >= self.pull_to:
                self.phase = "push-back" if self.rewind else "hold"
            else:
                goal = np.r_[ee[0] - 0.03, handle[1], handle[2]]
                return np.r_[_toward(ee, goal), CLOSED]
        if self.phase == "push-back":
            if ee[0] >= self.pull_start_x - 0.002:
                self.phase, self.count = "release", 0
            else:
                goal = np.r_[min(ee[0] + 0.03, self.pull_start_x), handle[1], handle[2]]
                return np.r_[_toward(ee, goal), CLOSED]
        if self.phase == "release":
            self.count += 1
            if self.count > 4:
                self.phase = "retreat"
            return np.r_[0.0, 0.0, 0.0, OPEN]
        if self.phase == "retreat":
            return np.r_[_toward(ee, [ee[0] - 0.03, ee[1], 0.25]), OPEN]
        return np.r_[0.0, 0.0, 0.0, CLOSED]  # hold


# ---------------------------------------------------------------------------------------------------
# Behaviours
# ---------------------------------------------------------------------------------------------------
def _wrong_point(
    u: PandaEnv, rng: np.random.Generator, avoid: list[np.ndarray], z: float | None = None, min_dist: float = 0.15
) -> np.ndarray:
    """A reachable point on (or above) the table at least ``min_dist`` from every point in ``avoid``."""
    for _ in range(1000):
        p = rng.uniform([0.35, -0.28, 0.05], [0.65, 0.28, 0.3])
        if z is not None:
            p[2] = z
        if all(np.linalg.norm(p[:2] - a[:2]) >= min_dist for a in avoid):
            return p
    return p


def _task_expert(env: gym.Env, seed: int, noise: float, variant: str = "expert") -> ScriptedPolicy:
    """The task's expert, or the expert aimed wrong / rewinding (``variant``)."""
    u = env.unwrapped
    rng = np.random.default_rng([seed, 7])
    if isinstance(u, PandaReachEnv):
        if variant in ("wrong-object", "wrong-target"):
            holder: dict[str, np.ndarray] = {}

            class _WrongReach(ReachExpert):
                def reset(self, obs, info):
                    super().reset(obs, info)
                    holder["p"] = _wrong_point(u, rng, [u.goal_pos])

            return _WrongReach(env, seed, noise, goal=lambda: holder["p"])
        if variant == "rewind":
            return ReachExpert(env, seed, noise, rewind_at=float(rng.uniform(0.55, 0.8)))
        return ReachExpert(env, seed, noise)
    if isinstance(u, (PandaPushEnv, PandaPickPlaceEnv)):
        cls = PushExpert if isinstance(u, PandaPushEnv) else PickPlaceExpert
        if variant == "wrong-object":
            kw = {"block": lambda: u.distractor_pos}
            if cls is PickPlaceExpert:
                kw["block_color"] = None

                class _WrongObject(PickPlaceExpert):
                    def reset(self, obs, info):
                        super().reset(obs, info)
                        self.block_color = u.distractor_color

                return _WrongObject(env, seed, noise, **kw)
            return cls(env, seed, noise, **kw)
        if variant == "wrong-target":
            holder = {}
            base = cls

            class _WrongTarget(base):  # type: ignore[misc, valid-type]
                def reset(self, obs, info):
                    holder["p"] = _wrong_point(
                        u, rng, [u.target_pos, u.block_pos, u.distractor_pos], z=0.0, min_dist=0.12
                    )
                    super().reset(obs, info)

            return _WrongTarget(env, seed, noise, target=lambda: holder["p"])
        if variant == "rewind":
            if cls is PushExpert:
                return PushExpert(env, seed, noise, rewind_at=float(rng.uniform(0.5, 0.7)))
            return PickPlaceExpert(env, seed, noise, rewind=True)
        return cls(env, seed, noise)
    if isinstance(u, PandaDrawerOpenEnv):
        if variant in ("wrong-object", "wrong-target"):
            side = 1.0 if rng.random() < 0.5 else -1.0
            # beside the bar, in front of the panel: closes on air and "pulls" nothing
            return DrawerExpert(env, seed, noise, handle=lambda: u.handle_pos + [0.0, side * 0.11, 0.0])
        if variant == "rewind":
            return DrawerExpert(env, seed, noise, pull_to=float(rng.uniform(0.07, 0.11)), rewind=True)
        return DrawerExpert(env, seed, noise)
    raise ValueError(f"no scripted expert for env {type(u).__name__}")


class RandomPolicy(ScriptedPolicy):
    kind = "random"

    def _act(self, obs, info):
        return self.rng.uniform(-1.0, 1.0, 4)


class StallPolicy(ScriptedPolicy):
    """Barely moves: tiny random jitter around zero."""

    kind = "stall"

    def _act(self, obs, info):
        return np.r_[self.rng.normal(0.0, 0.03, 3), OPEN]


class PartialPolicy(ScriptedPolicy):
    """Follows the expert until a random progress level between 25% and 75%, then holds still."""

    kind = "partial"

    def __init__(self, env, seed=0, noise=0.0):
        super().__init__(env, seed, noise)
        self.expert = _task_expert(env, seed, 0.0)

    def reset(self, obs, info):
        self.expert.reset(obs, info)
        self.stop_at = float(self.rng.uniform(0.25, 0.75))
        self.stopped = False
        self.gripper = OPEN

    def _act(self, obs, info):
        if not self.stopped and info["progress"] >= self.stop_at:
            self.stopped = True
        if self.stopped:
            return np.r_[0.0, 0.0, 0.0, self.gripper]
        action = self.expert._act(obs, info)
        self.gripper = float(action[3])
        if info["progress"] > self.stop_at - 0.2:
            action[:3] *= 0.3  # creep up to the stop point so one step cannot jump to success
        return action


class _Variant(ScriptedPolicy):
    """An expert variant (wrong object/target, rewind, noisy) behind the ScriptedPolicy interface."""

    def __init__(self, env, seed=0, noise=0.0, variant="expert"):
        super().__init__(env, seed, noise)
        self.kind = variant
        self.inner = _task_expert(env, seed, 0.0, "expert" if variant == "noisy" else variant)

    def reset(self, obs, info):
        self.inner.reset(obs, info)

    def _act(self, obs, info):
        return self.inner._act(obs, info)


class FailureMixPolicy(ScriptedPolicy):
    """Each episode: the expert with probability 0.4, else one failure behaviour chosen uniformly."""

    def __init__(self, env, seed=0, noise=0.0):
        super().__init__(env, seed, noise)
        self.choices = {
            name: make_policy(name, env, seed=seed + 1 + i, noise=noise or None)
            for i, name in enumerate(("expert",) + FAILURE_KINDS)
        }
        self.kind = "expert"
        self.current: ScriptedPolicy = self.choices["expert"]

    def reset(self, obs, info):
        if self.rng.random() < EXPERT_PROBABILITY_IN_MIX:
            self.kind = "expert"
        else:
            self.kind = FAILURE_KINDS[int(self.rng.integers(len(FAILURE_KINDS)))]
        self.current = self.choices[self.kind]
        self.current.reset(obs, info)

    def act(self, obs, info):
        return self.current.act(obs, info)


def make_policy(name: str, env: gym.Env, seed: int = 0, noise: float | None = None) -> ScriptedPolicy:
    """Create the scripted behaviour ``name`` (one of :data:`POLICIES`) for ``env``.

    ``noise`` is the std of Gaussian noise added to every action (default: 0.3 for ``noisy``, else 0).
    """
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}")
    noise = DEFAULT_NOISE.get(name, 0.0) if noise is None else float(noise)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if name == "random":
        return RandomPolicy(env, seed, noise)
    if name == "stall":
        return StallPolicy(env, seed, noise)
    if name == "partial":
        return PartialPolicy(env, seed, noise)
    if name == "failure-mix":
        return FailureMixPolicy(env, seed, noise)
    return _Variant(env, seed, noise, variant=name)
