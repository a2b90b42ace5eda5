"""The four table-top tasks: reach, push, pick-and-place, drawer opening.

Each task defines its props, a seeded initial-state sampler, paraphrased instructions, a success
predicate and a staged ground-truth progress Φ = (stage + fraction_within_stage) / n_stages that is
a function of the *current* state (so undoing work lowers it).
"""

from __future__ import annotations

import mujoco
import numpy as np

from .env import PandaEnv
from .scene import FINGER_MAX, Scene
from .world import (
    BLOCK_BODY,
    MARKER_NOUNS,
    OTHER_BLOCK_BODY,
    SHAPE_NOUNS,
    TARGET_NOUNS,
    horizontal_radius,
    instruction_variants,
    segment_distance,
)

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
PUSH_CLEARANCE = 0.03
"""Gap between the block's side and the pre-push point (m)."""
PUSH_OFFSET = BLOCK_HALF + PUSH_CLEARANCE
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


CLUTTER_CLEARANCE = 0.09
"""Varied world: how far clutter stays from the task's objects and the hand's paths (m)."""


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
    varied_instruction_templates = (
        "reach the {color} {noun}",
        "move the gripper to the {color} {noun}",
        "touch the {color} {noun} with the gripper",
        "put the gripper tip on the {color} {noun}",
        "go to the {color} {noun}",
        "bring the hand to the {color} {noun}",
    )

    def _build_props(self, scene: Scene) -> None:
        scene.add_marker("marker", 0.02, MARKER_RGBA)

    def _format_instructions(self) -> list[str]:
        if self.world_variant is None:
            return list(self.instruction_templates)
        return instruction_variants(
            self.varied_instruction_templates, color=[self.world_variant["marker"]["color"]], noun=MARKER_NOUNS
        )

    def _clutter_keep_clear(self):
        ee, goal = self.ee_pos[:2], self.goal_pos[:2]
        return [(ee, goal, CLUTTER_CLEARANCE), (goal, goal, CLUTTER_CLEARANCE + 0.02)]

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
        if self.world == "varied":  # shape, size and colour are the world variant's, set at reset
            bodies = (BLOCK_BODY, OTHER_BLOCK_BODY)
            for body, rgba in zip(bodies, BLOCK_COLORS.values()):
                scene.add_block(body, BLOCK_HALF, rgba)
        else:
            bodies = tuple(f"{color}_block" for color in BLOCK_COLORS)
            for color, rgba in BLOCK_COLORS.items():
                scene.add_block(f"{color}_block", BLOCK_HALF, rgba)
        scene.add_target("target", TARGET_RADIUS, TARGET_RGBA)
        self.block_color = "red"
        self.distractor_color = "blue"
        self._block_bodies = dict(zip(BLOCK_COLORS, bodies))
        """Colour name -> body of the block wearing it (this episode)."""
        self._set_block_size(BLOCK_HALF, BLOCK_HALF, BLOCK_HALF)

    def _set_block_size(self, horizontal: float, grip: float, height: float) -> None:
        self.block_half = horizontal
        """Largest horizontal half extent of the task block (m): how far behind its centre to push."""
        self.block_grip_half = grip
        """Half of the block's width between the fingers (m)."""
        self.block_half_height = height
        """Half height of the task block (m): its centre's height when it rests on the table."""
        self.push_offset = horizontal + PUSH_CLEARANCE
        """Pre-push point: this far behind the block centre, opposite the target direction (m)."""

    def _object_geom_names(self) -> list[str]:
        return [f"{c}_block_geom" for c in BLOCK_COLORS] + ["target_geom"]

    def _format_instructions(self) -> list[str]:
        variant = self.world_variant
        if variant is None:
            return [t.format(color=self.block_color) for t in self.instruction_templates]
        return instruction_variants(
            self.varied_instruction_templates,
            color=[variant["block"]["color"]],
            noun=SHAPE_NOUNS[variant["block"]["shape"]],
            target=TARGET_NOUNS[variant["target"]["shape"]],
            target_color=[variant["target"]["color"]],
        )

    def _task_state_names(self) -> list[str]:
        return [f"{who}_{ax}" for who in ("block", "distractor", "target") for ax in "xyz"]

    def _block_qadr(self, color: str) -> int:
        return int(self.model.jnt_qposadr[self.model.joint(f"{self._block_bodies[color]}_free").id])

    def block_pos_of(self, color: str) -> np.ndarray:
        a = self._block_qadr(color)
        return self.data.qpos[a : a + 3].copy()

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
        return {self.model.geom(f"{self._block_bodies[color or self.block_color]}_geom").id}

    def _task_state(self) -> np.ndarray:
        return np.concatenate([self.block_pos, self.distractor_pos, self.target_pos])

    def _place_block(self, color: str, xy: np.ndarray, yaw: float) -> None:
        a = self._block_qadr(color)
        self.data.qpos[a : a + 3] = [xy[0], xy[1], self.block_half_height]
        self.data.qpos[a + 3 : a + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]

    def _sample_layout(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _reset_task(self, rng: np.random.Generator) -> None:
        variant = self.world_variant
        if variant is None:
            colors = list(BLOCK_COLORS)
            self.block_color = colors[int(rng.integers(len(colors)))]
            self.distractor_color = next(c for c in colors if c != self.block_color)
        else:
            block, other = variant["block"], variant["other_block"]
            self.block_color, self.distractor_color = block["color"], other["color"]
            self._block_bodies = {self.block_color: BLOCK_BODY, self.distractor_color: OTHER_BLOCK_BODY}
            a, b, c = block["half_extents"]
            self._set_block_size(max(a, b), a, c)
        block, distractor, target = self._sample_layout(rng)
        self._place_block(self.block_color, block, rng.uniform(-0.3, 0.3))
        self._place_block(self.distractor_color, distractor, rng.uniform(-0.3, 0.3))
        m = self.model
        self.data.mocap_pos[m.body_mocapid[m.body("target").id]] = [target[0], target[1], 0.0]

    def _success(self) -> bool:
        block = self.block_pos
        return (
            float(np.linalg.norm(block[:2] - self.target_pos[:2])) < PLACE_TOLERANCE
            and block[2] < self.block_half_height + 0.01
        )

    def _clutter_keep_clear(self):
        block, other, target = self.block_pos[:2], self.distractor_pos[:2], self.target_pos[:2]
        other_radius = horizontal_radius(*(self.world_variant["other_block"][k] for k in ("shape", "half_extents")))
        return [
            (block, target, CLUTTER_CLEARANCE),
            (block, block, CLUTTER_CLEARANCE + 0.02),
            (target, target, CLUTTER_CLEARANCE),
            (other, other, other_radius + 0.03),
        ]


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
    varied_instruction_templates = (
        "push the {color} {noun} onto the {target_color} {target}",
        "slide the {color} {noun} onto the {target}",
        "slide the {color} {noun} over to the {target_color} {target}",
        "move the {color} {noun} to the {target_color} {target} by pushing it",
        "push the {color} {noun} to the {target}",
        "shove the {color} {noun} onto the {target_color} {target}",
        "nudge the {color} {noun} until it sits on the {target}",
    )

    def _clutter_keep_clear(self):
        # the hand comes down behind the block and sweeps along the block -> target line
        direction = self.target_pos[:2] - self.block_pos[:2]
        direction /= max(float(np.linalg.norm(direction)), 1e-6)
        behind = self.block_pos[:2] - direction * (self.push_offset + 0.05)
        return super()._clutter_keep_clear() + [(behind, self.target_pos[:2], CLUTTER_CLEARANCE)]

    def _sample_layout(self, rng):
        for _ in range(10000):
            block = rng.uniform([0.42, -0.15], [0.58, 0.15])
            target = rng.uniform([0.4, -0.22], [0.68, 0.22])
            dist = np.linalg.norm(target - block)
            if not 0.12 <= dist <= 0.22:
                continue
            pre = block - (target - block) / dist * self.push_offset
            if not (0.33 <= pre[0] <= 0.72 and abs(pre[1]) <= 0.3):
                continue
            distractor = rng.uniform([0.35, -0.3], [0.7, 0.3])
            # keep the distractor off the path swept by the hand and away from the target
            if segment_distance(distractor, pre - (target - block) / dist * 0.05, target) < 0.09:
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
        xy = block[:2] - direction * self.push_offset
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
    varied_instruction_templates = (
        "pick up the {color} {noun} and place it on the {target_color} {target}",
        "put the {color} {noun} on the {target}",
        "place the {color} {noun} onto the {target_color} {target}",
        "set the {color} {noun} down on the {target_color} {target}",
        "grab the {color} {noun} and put it on the {target}",
        "lift the {color} {noun} and set it on the {target_color} {target}",
        "move the {color} {noun} onto the {target} by picking it up",
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
        rest = np.array([target[0], target[1], self.block_half_height])
        lifted = np.array([block[0], block[1], self.block_half_height + LIFT_HEIGHT])
        self._d_place_ref = float(np.linalg.norm(lifted - rest))
        self._d0_place_xy = float(np.linalg.norm(block[:2] - target[:2]))

    def _stage_fraction(self) -> tuple[int, float]:
        block, target = self.block_pos, self.target_pos
        lifted = block[2] - self.block_half_height
        grasped = self.is_grasping(self.block_geoms())
        d_xy = float(np.linalg.norm(block[:2] - target[:2]))
        if grasped or lifted > 0.01:
            moved_to_target = d_xy < self._d0_place_xy - 0.02
            if lifted >= LIFT_HEIGHT or (moved_to_target and lifted > 0.005):
                rest = np.array([target[0], target[1], self.block_half_height])
                d = float(np.linalg.norm(block - rest))
                return 3, _approach_fraction(d, self._d_place_ref, 0.005)
            if grasped:
                return 2, lifted / LIFT_HEIGHT
        d_reach = float(np.linalg.norm(self.ee_pos - block))
        if d_reach < STAGE_REACH_TOLERANCE:
            closure = (2 * FINGER_MAX - self.gripper_width) / (2 * FINGER_MAX - 2 * self.block_grip_half)
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
    varied_instruction_templates = (
        "open the {color} drawer",
        "pull the {color} drawer open",
        "slide the {color} drawer out",
        "open the drawer",
        "pull out the drawer by its handle",
        "grab the handle and open the {color} drawer",
    )

    def _format_instructions(self) -> list[str]:
        if self.world_variant is None:
            return list(self.instruction_templates)
        return instruction_variants(self.varied_instruction_templates, color=[self.world_variant["drawer"]["color"]])

    def _clutter_keep_clear(self):
        # the cabinet, the drawer's travel and the hand's path to the handle and back with it
        cabinet = self.data.mocap_pos[self.model.body_mocapid[self.model.body("drawer_cabinet").id]][:2]
        pulled = cabinet - [0.12 + 0.065 + DRAWER_TRAVEL + 0.05, 0.0]
        return [(cabinet + [0.12, 0.0], pulled, 0.2), (self.ee_pos[:2], self.handle_pos[:2], CLUTTER_CLEARANCE)]

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
