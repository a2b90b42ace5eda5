"""The four table-top tasks: reach, push, pick-and-place, drawer opening.

Each task defines its props, a seeded initial-state sampler, paraphrased instructions, a success
predicate and a staged ground-truth progress Φ = (stage + fraction_within_stage) / n_stages that is
a function of the *current* state (so undoing work lowers it).
"""

from __future__ import annotations

from typing import ClassVar

import mujoco
import numpy as np

from .env import PandaEnv
from .scene import FINGER_MAX, Scene

BLOCK_HALF = 0.02
"""Half edge of the cubes (m)."""
BLOCK_COLORS = {"red": (0.85, 0.12, 0.1, 1.0), "blue": (0.12, 0.3, 0.85, 1.0)}
TARGET_RGBA = (0.15, 0.75, 0.25, 1.0)
MARKER_RGBA = (0.95, 0.85, 0.1, 1.0)
TARGET_RADIUS = 0.045
REACH_TOLERANCE = 0.03
"""Reach: success when the grip point is this close to the marker (m)."""
PLACE_TOLERANCE = 0.03
"""Push / pick-and-place: success when the block centre is this close to the target centre in xy (m)."""
STAGE_REACH_TOLERANCE = 0.03
"""Distance at which a reach stage counts as done (m)."""
PUSH_EE_HEIGHT = 0.02
"""Grip-point height while pushing (fingertips about 1 cm above the table)."""
PUSH_OFFSET = BLOCK_HALF + 0.03
"""Pre-push point: this far behind the block centre, opposite the target direction (m)."""
LIFT_HEIGHT = 0.08
"""Pick-and-place: how high the block must be lifted to finish the lift stage (m)."""
DRAWER_TRAVEL = 0.2
DRAWER_OPEN = 0.15
"""Drawer: success when it is pulled out this far (m)."""
HANDLE_RADIUS = 0.009


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _approach_fraction(d: float, d0: float, tol: float) -> float:
    """1 when within ``tol``, 0 at the episode's initial distance ``d0``, linear in between."""
    return _clip01((d0 - d) / max(d0 - tol, 1e-6))


class PandaReachEnv(PandaEnv):
    """Move the grip point to a floating yellow marker."""

    task_name = "reach"
    stage_names = ("reach",)
    instruction_templates = (
        "reach the yellow ball",
        "move the gripper to the yellow sphere",
        "touch the yellow marker with the gripper",
        "put the gripper tip on the yellow ball",
    )

    def _build_props(self, scene: Scene) -> None:
        scene.add_marker("marker", 0.02, MARKER_RGBA)

    def _object_geom_names(self) -> list[str]:
        return ["marker_geom"]

    def _task_state_names(self) -> list[str]:
        return ["marker_x", "marker_y", "marker_z"]

    @property
    def goal_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self.model.body_mocapid[self.model.body("marker").id]].copy()

    def _reset_task(self, rng: np.random.Generator) -> None:
        m = self.model
        ee = self.data.site_xpos[self._ee_site]
        for _ in range(1000):
            goal = rng.uniform([0.32, -0.28, 0.05], [0.65, 0.28, 0.35])
            if np.linalg.norm(goal - ee) > 0.12:
                break
        self.data.mocap_pos[m.body_mocapid[m.body("marker").id]] = goal

    def _after_settle(self) -> None:
        self._d0 = float(np.linalg.norm(self.ee_pos - self.goal_pos))

    def _task_state(self) -> np.ndarray:
        return self.goal_pos

    def _stage_fraction(self) -> tuple[int, float]:
        d = float(np.linalg.norm(self.ee_pos - self.goal_pos))
        return 0, _approach_fraction(d, self._d0, REACH_TOLERANCE)

    def _success(self) -> bool:
        return float(np.linalg.norm(self.ee_pos - self.goal_pos)) < REACH_TOLERANCE


class _BlockTask(PandaEnv):
    """Shared by push and pick-and-place: a red and a blue cube and a green target disc.

    Each episode one cube (colour drawn from the seed) is the task block, the other a distractor.
    """

    def _build_props(self, scene: Scene) -> None:
        for color, rgba in BLOCK_COLORS.items():
            scene.add_block(f"{color}_block", BLOCK_HALF, rgba)
        scene.add_target("target", TARGET_RADIUS, TARGET_RGBA)
        self.block_color = "red"
        self.distractor_color = "blue"

    def _object_geom_names(self) -> list[str]:
        return [f"{c}_block_geom" for c in BLOCK_COLORS] + ["target_geom"]

    def _format_instructions(self) -> list[str]:
        return [t.format(color=self.block_color) for t in self.instruction_templates]

    def _task_state_names(self) -> list[str]:
        return [f"{who}_{ax}" for who in ("block", "distractor", "target") for ax in "xyz"]

    def _block_qadr(self, color: str) -> int:
        return int(self.model.jnt_qposadr[self.model.joint(f"{color}_block_free").id])

    def block_pos_of(self, color: str) -> np.ndarray:
        a = self._block_qadr(color)
        return self.data.qpos[a:a + 3].copy()

    @property
    def block_pos(self) -> np.ndarray:
        return self.block_pos_of(self.block_color)

    @property
    def distractor_pos(self) -> np.ndarray:
        return self.block_pos_of(self.distractor_color)

    @property
    def target_pos(self) -> np.ndarray:
        m = self.model
        return self.data.mocap_pos[m.body_mocapid[m.body("target").id]].copy()

    def block_geoms(self, color: str | None = None) -> set[int]:
        return {self.model.geom(f"{color or self.block_color}_block_geom").id}

    def _task_state(self) -> np.ndarray:
        return np.concatenate([self.block_pos, self.distractor_pos, self.target_pos])

    def _place_block(self, color: str, xy: np.ndarray, yaw: float) -> None:
        a = self._block_qadr(color)
        self.data.qpos[a:a + 3] = [xy[0], xy[1], BLOCK_HALF]
        self.data.qpos[a + 3:a + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]

    def _sample_layout(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _reset_task(self, rng: np.random.Generator) -> None:
        colors = list(BLOCK_COLORS)
        self.block_color = colors[int(rng.integers(len(colors)))]
        self.distractor_color = next(c for c in colors if c != self.block_color)
        block, distractor, target = self._sample_layout(rng)
        self._place_block(self.block_color, block, rng.uniform(-0.3, 0.3))
        self._place_block(self.distractor_color, distractor, rng.uniform(-0.3, 0.3))
        m = self.model
        self.data.mocap_pos[m.body_mocapid[m.body("target").id]] = [target[0], target[1], 0.0]

    def _success(self) -> bool:
        block = self.block_pos
        return (float(np.linalg.norm(block[:2] - self.target_pos[:2])) < PLACE_TOLERANCE
                and block[2] < BLOCK_HALF + 0.01)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


class PandaPushEnv(_BlockTask):
    """Push the named cube (fingers closed) onto the green target disc."""

    task_name = "push"
    stage_names = ("reach", "push")
    instruction_templates = (
        "push the {color} block onto the green target",
        "slide the {color} block to the green circle",
        "push the {color} cube onto the green disc",
        "move the {color} block to the green target by pushing it",
    )

    def _sample_layout(self, rng):
        for _ in range(10000):
            block = rng.uniform([0.42, -0.15], [0.58, 0.15])
            target = rng.uniform([0.4, -0.22], [0.68, 0.22])
            dist = np.linalg.norm(target - block)
            if not 0.12 <= dist <= 0.22:
                continue
            pre = block - (target - block) / dist * PUSH_OFFSET
            if not (0.33 <= pre[0] <= 0.72 and abs(pre[1]) <= 0.3):
                continue
            distractor = rng.uniform([0.35, -0.3], [0.7, 0.3])
            # keep the distractor off the path swept by the hand and away from the target
            if _segment_distance(distractor, pre - (target - block) / dist * 0.05, target) < 0.09:
                continue
            if np.linalg.norm(distractor - target) < 0.1:
                continue
            return block, distractor, target
        raise RuntimeError("push: could not sample a layout")  # pragma: no cover

    def push_point(self) -> np.ndarray:
        """Where the grip point should be to push the block straight towards the target."""
        block, target = self.block_pos, self.target_pos
        direction = target[:2] - block[:2]
        direction /= max(np.linalg.norm(direction), 1e-6)
        xy = block[:2] - direction * PUSH_OFFSET
        return np.array([xy[0], xy[1], PUSH_EE_HEIGHT])

    def _after_settle(self) -> None:
        self._d0_reach = float(np.linalg.norm(self.ee_pos - self.push_point()))
        self._d0_push = float(np.linalg.norm(self.block_pos[:2] - self.target_pos[:2]))

    def _stage_fraction(self) -> tuple[int, float]:
        d_push = float(np.linalg.norm(self.block_pos[:2] - self.target_pos[:2]))
        f_push = _approach_fraction(d_push, self._d0_push, PLACE_TOLERANCE)
        d_reach = float(np.linalg.norm(self.ee_pos - self.push_point()))
        if d_reach < STAGE_REACH_TOLERANCE or f_push > 0.05:
            return 1, f_push
        return 0, _approach_fraction(d_reach, self._d0_reach, STAGE_REACH_TOLERANCE)


class PandaPickPlaceEnv(_BlockTask):
    """Pick up the named cube and put it down on the green target disc."""

    task_name = "pickplace"
    stage_names = ("reach", "grasp", "lift", "place")
    instruction_templates = (
        "pick up the {color} block and place it on the green target",
        "put the {color} cube on the green circle",
        "move the {color} block onto the green disc",
        "grasp the {color} block and set it down on the green target",
    )

    def _sample_layout(self, rng):
        for _ in range(10000):
            block = rng.uniform([0.4, -0.2], [0.6, 0.2])
            target = rng.uniform([0.4, -0.25], [0.65, 0.25])
            if np.linalg.norm(target - block) < 0.14:
                continue
            distractor = rng.uniform([0.35, -0.3], [0.7, 0.3])
            if np.linalg.norm(distractor - block) < 0.1 or np.linalg.norm(distractor - target) < 0.1:
                continue
            return block, distractor, target
        raise RuntimeError("pickplace: could not sample a layout")  # pragma: no cover

    def _after_settle(self) -> None:
        block, target = self.block_pos, self.target_pos
        self._d0_reach = float(np.linalg.norm(self.ee_pos - block))
        self._start_xy = block[:2].copy()
        rest = np.array([target[0], target[1], BLOCK_HALF])
        lifted = np.array([block[0], block[1], BLOCK_HALF + LIFT_HEIGHT])
        self._d_place_ref = float(np.linalg.norm(lifted - rest))
        self._d0_place_xy = float(np.linalg.norm(block[:2] - target[:2]))

    def _stage_fraction(self) -> tuple[int, float]:
        block, target = self.block_pos, self.target_pos
        lifted = block[2] - BLOCK_HALF
        grasped = self.is_grasping(self.block_geoms())
        d_xy = float(np.linalg.norm(block[:2] - target[:2]))
        if grasped or lifted > 0.01:
            moved_to_target = d_xy < self._d0_place_xy - 0.02
            if lifted >= LIFT_HEIGHT or (moved_to_target and lifted > 0.005):
                rest = np.array([target[0], target[1], BLOCK_HALF])
                d = float(np.linalg.norm(block - rest))
                return 3, _approach_fraction(d, self._d_place_ref, 0.005)
            if grasped:
                return 2, lifted / LIFT_HEIGHT
        d_reach = float(np.linalg.norm(self.ee_pos - block))
        if d_reach < STAGE_REACH_TOLERANCE:
            closure = (2 * FINGER_MAX - self.gripper_width) / (2 * FINGER_MAX - 2 * BLOCK_HALF)
            return 1, 0.95 * _clip01(closure) + (0.05 if grasped else 0.0)
        return 0, _approach_fraction(d_reach, self._d0_reach, STAGE_REACH_TOLERANCE)


class PandaDrawerOpenEnv(PandaEnv):
    """Grasp the drawer's handle bar from above and pull the drawer open."""

    task_name = "drawer"
    stage_names = ("reach", "grasp", "pull")
    instruction_templates = (
        "open the drawer",
        "pull the drawer open",
        "slide the drawer out",
        "open the cabinet drawer by its handle",
    )

    def _build_props(self, scene: Scene) -> None:
        scene.add_drawer("drawer", travel=DRAWER_TRAVEL)

    def _task_state_names(self) -> list[str]:
        return ["handle_x", "handle_y", "handle_z", "drawer_opening"]

    @property
    def handle_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.model.site("drawer_handle_site").id].copy()

    @property
    def opening(self) -> float:
        return float(self.data.qpos[self.model.jnt_qposadr[self.model.joint("drawer_slide").id]])

    def handle_geoms(self) -> set[int]:
        m = self.model
        return {m.geom(n).id for n in ("drawer_handle",)}

    def _task_state(self) -> np.ndarray:
        return np.concatenate([self.handle_pos, [self.opening]])

    def _reset_task(self, rng: np.random.Generator) -> None:
        m = self.model
        pos = [rng.uniform(0.73, 0.79), rng.uniform(-0.15, 0.15), 0.0]
        self.data.mocap_pos[m.body_mocapid[m.body("drawer_cabinet").id]] = pos
        mujoco.mj_kinematics(m, self.data)

    def _after_settle(self) -> None:
        self._d0_reach = float(np.linalg.norm(self.ee_pos - self.handle_pos))

    def _stage_fraction(self) -> tuple[int, float]:
        opening = self.opening
        grasped = self.is_grasping(self.handle_geoms())
        if grasped or opening > 0.02:
            return 2, opening / DRAWER_OPEN
        d = float(np.linalg.norm(self.ee_pos - self.handle_pos))
        if d < STAGE_REACH_TOLERANCE:
            closure = (2 * FINGER_MAX - self.gripper_width) / (2 * FINGER_MAX - 2 * HANDLE_RADIUS)
            return 1, 0.95 * _clip01(closure)
        return 0, _approach_fraction(d, self._d0_reach, STAGE_REACH_TOLERANCE)

    def _success(self) -> bool:
        return self.opening >= DRAWER_OPEN
