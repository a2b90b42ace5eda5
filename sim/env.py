"""The shared Panda table-top environment: control, observations, cameras, progress bookkeeping.

Tasks (``sim/tasks.py``) subclass :class:`PandaEnv` and supply the props, the initial-state
sampler, the instructions, the success predicate and the staged ground-truth progress.
"""

from __future__ import annotations

import atexit
import copy
import importlib.util
import os
import sys
import weakref
from typing import Any, ClassVar, Sequence

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from .randomization import DomainRandomization, Randomizer  # noqa: E402
from .scene import CAMERA_NAMES, FINGER_MAX, Scene  # noqa: E402
from .world import VariedWorld, check_world  # noqa: E402

ACTION_MODES = ("ee_delta", "joint")

HOME_QPOS = np.array([0.0, -0.3202, 0.0, -2.5556, 0.0, 2.2354, -0.7854])
"""Arm joint angles at reset: grip point near (0.42, 0, 0.28), hand pointing down, fingers along x."""

CONTROL_SUBSTEPS = 25
"""Physics steps per control step: 25 x 2 ms = 50 ms, i.e. 20 Hz control (a MoveIt Servo-like rate)."""
EE_STEP_M = 0.02
"""End-effector displacement commanded by a full-scale ee_delta action on one axis (m per control step)."""
WORKSPACE_LOW = np.array([0.25, -0.42, 0.012])
WORKSPACE_HIGH = np.array([0.80, 0.42, 0.50])
"""Box that the end-effector target is kept inside (m, world frame; table top is z = 0)."""
MAX_TARGET_LEAD_M = 0.05
"""How far the Cartesian target may run ahead of the real grip point (anti wind-up when blocked)."""
IK_DAMPING = 0.05
"""Damping of the damped-least-squares IK (keeps joint steps small near singularities)."""
IK_NULLSPACE_GAIN = 0.2
"""Pull towards the home posture inside the Jacobian's null space (avoids elbow drift)."""
IK_ROT_WEIGHT = 0.5
"""Weight of the orientation error relative to the position error in the IK."""


_OPEN_ENVS: "weakref.WeakSet[PandaEnv]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_open_envs() -> None:
    # Renderers left open until interpreter shutdown would be freed after EGL is torn down
    # (noisy EGLError tracebacks); close them while EGL still works.
    for env in list(_OPEN_ENVS):
        try:
            env.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass


def _track_open_env(env: "PandaEnv") -> None:
    global _ATEXIT_REGISTERED
    _OPEN_ENVS.add(env)
    if not _ATEXIT_REGISTERED:
        # Registered after mujoco's EGL backend (imported with the first Renderer) so that it runs
        # before EGL's own exit handler terminates the display (atexit is last-in, first-out).
        atexit.register(_close_open_envs)
        _ATEXIT_REGISTERED = True


def _load_llvm_users_before_egl() -> None:
    """Load triton (torch's compiler, bundling its own LLVM) before Mesa's EGL driver starts.

    Mesa's llvmpipe and triton each carry an LLVM; when triton is loaded *after* EGL has been
    initialised in the same process (e.g. a reward model trained after episodes were rendered),
    the process segfaults. Loaded first, both work. Only done when triton is installed.
    """
    global _LLVM_USERS_LOADED
    if _LLVM_USERS_LOADED:
        return
    _LLVM_USERS_LOADED = True
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        try:
            importlib.import_module("triton")
        except Exception:  # noqa: BLE001 - a broken triton must not stop rendering
            pass


_LLVM_USERS_LOADED = False


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        try:
            h, w = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}") from None
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise ValueError(f"image_size must be between 8 and 4096 pixels per side, got {(h, w)}")
    return h, w


class PandaEnv(gym.Env):
    """Franka Panda on a table with front/side/wrist cameras; subclasses define the task.

    Observation: ``{"state": float32 (D,), "pixels": {camera: uint8 (H, W, 3)}}`` (``pixels`` only when
    cameras are requested). Action (``ee_delta``): 4-D in [-1, 1], Cartesian grip-point delta
    (x, y, z; full scale = 2 cm per 50 ms step) + gripper (-1 open ... +1 closed). Action
    (``joint``): 8-D in [-1, 1], absolute joint targets normalised over the joint limits + gripper.
    ``info`` on reset and every step: ``progress`` (ground-truth Φ in [0, 1]), ``stage``,
    ``stage_name``, ``is_success``, ``task`` (this episode's instruction).

    ``world="varied"`` draws a new scene variant at every reset (``sim/world.py``; ``world_split``
    "train" or "heldout"); the reset ``info`` then carries it as ``info["world"]``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    # --- to be provided by tasks -----------------------------------------------------------------
    task_name: ClassVar[str] = ""
    stage_names: ClassVar[tuple[str, ...]] = ()
    instruction_templates: ClassVar[tuple[str, ...]] = ()

    def _build_props(self, scene: Scene) -> None:
        raise NotImplementedError

    def _task_state_names(self) -> list[str]:
        raise NotImplementedError

    def _task_state(self) -> np.ndarray:
        raise NotImplementedError

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place props for a new episode (called with the arm already at home)."""
        raise NotImplementedError

    def _after_settle(self) -> None:
        """Record per-episode reference quantities once the scene is at rest (optional)."""

    def _stage_fraction(self) -> tuple[int, float]:
        """Current task stage and completed fraction of it, from the current state."""
        raise NotImplementedError

    def _success(self) -> bool:
        raise NotImplementedError

    def _format_instructions(self) -> list[str]:
        return list(self.instruction_templates)

    def _object_geom_names(self) -> list[str]:
        return []

    def _clutter_keep_clear(self) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """Table areas clutter must keep out of (varied world): segments (a, b) in xy with a radius."""
        return []

    # --- construction ------------------------------------------------------------------------------
    def __init__(
        self,
        cameras: Sequence[str] = CAMERA_NAMES,
        image_size: int | Sequence[int] = 128,
        action_mode: str = "ee_delta",
        domain_randomization: DomainRandomization | bool | None = None,
        panda_xml: str | os.PathLike | None = None,
        render_mode: str | None = None,
        world: str = "default",
        world_split: str | None = None,
    ):
        if isinstance(cameras, str):
            cameras = (cameras,)
        cameras = tuple(cameras or ())
        for cam in cameras:
            if cam not in CAMERA_NAMES:
                raise ValueError(f"unknown camera {cam!r}; valid cameras: {', '.join(CAMERA_NAMES)}")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras listed twice: {cameras}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; valid: {', '.join(ACTION_MODES)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}; valid: {self.metadata['render_modes']}")
        if domain_randomization is True:
            domain_randomization = DomainRandomization()
        elif domain_randomization is False:
            domain_randomization = None
        if domain_randomization is not None and not isinstance(domain_randomization, DomainRandomization):
            raise ValueError(
                f"domain_randomization must be a sim.DomainRandomization, True/False or None, "
                f"got {type(domain_randomization).__name__}"
            )
        self.cameras = cameras
        self.image_hw = _as_hw(image_size)
        self.action_mode = action_mode
        self.render_mode = render_mode
        self.domain_randomization = domain_randomization
        split = check_world(world, world_split)
        if split is not None and domain_randomization is not None:
            raise ValueError(
                "domain_randomization cannot be combined with world='varied', which already "
                "varies lighting, colours and cameras"
            )
        self.world = world
        self.world_split = split
        self.world_variant: dict[str, Any] | None = None

        scene = Scene(panda_xml=panda_xml, offscreen_size=self.image_hw)
        self._build_props(scene)
        self._world = None if split is None else VariedWorld(self.task_name, split)
        if self._world is not None:
            self._world.add_to_scene(scene)
        self.model = scene.compile()
        self.data = mujoco.MjData(self.model)
        self.panda_xml_path = scene.panda_path
        m = self.model
        arm = scene.arm
        self._joint_ids = np.array([m.joint(j).id for j in arm.joints])
        self._qadr = m.jnt_qposadr[self._joint_ids]
        self._dadr = m.jnt_dofadr[self._joint_ids]
        finger_ids = [m.joint(j).id for j in arm.fingers]
        self._finger_qadr = m.jnt_qposadr[finger_ids]
        self._joint_low = m.jnt_range[self._joint_ids, 0].copy()
        self._joint_high = m.jnt_range[self._joint_ids, 1].copy()
        self._arm_act = np.array([m.actuator(f"act_joint{i + 1}").id for i in range(7)])
        self._finger_act = np.array([m.actuator(f"act_finger{i + 1}").id for i in range(2)])
        self._ee_site = m.site(arm.ee_site).id
        self._hand_body = m.body(arm.hand_body).id
        finger_bodies = {int(m.jnt_bodyid[j]) for j in finger_ids}
        self._pad_geoms = [
            [g for g in range(m.ngeom) if m.geom_bodyid[g] == b and m.geom_contype[g]] for b in sorted(finger_bodies)
        ]
        self._camera_ids = {
            "front": m.camera("front").id,
            "side": m.camera("side").id,
            "wrist": m.camera(arm.wrist_camera).id,
        }
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))

        self.control_dt = m.opt.timestep * CONTROL_SUBSTEPS
        self._home_ee, self._target_rot = self._home_pose()
        self._ee_target = self._home_ee.copy()
        self._randomizer: Randomizer | None = None
        if self._world is not None:
            self._world.bind(m)
        else:
            object_geoms = [m.geom(n).id for n in self._object_geom_names()]
            table_geoms = [m.geom("table").id]
            self._randomizer = Randomizer(
                m,
                domain_randomization,
                object_geoms,
                table_geoms,
                [self._camera_ids["front"], self._camera_ids["side"]],
            )
        self._renderer: mujoco.Renderer | None = None
        self._render_hw: tuple[int, int] | None = None

        self.instruction = ""
        self.instructions: list[str] = self._format_instructions()
        self.state_names = self._proprio_names() + self._task_state_names()
        if action_mode == "ee_delta":
            self.action_names = ["ee_dx", "ee_dy", "ee_dz", "gripper"]
        else:
            self.action_names = [f"joint{i + 1}" for i in range(7)] + ["gripper"]
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.action_names),), np.float32)
        obs_spaces: dict[str, spaces.Space] = {
            "state": spaces.Box(-np.inf, np.inf, (len(self.state_names),), np.float32)
        }
        if cameras:
            h, w = self.image_hw
            obs_spaces["pixels"] = spaces.Dict({cam: spaces.Box(0, 255, (h, w, 3), np.uint8) for cam in cameras})
        self.observation_space = spaces.Dict(obs_spaces)

    @property
    def camera_names(self) -> tuple[str, ...]:
        """All cameras this env can render (``render_cameras`` accepts any of them)."""
        return CAMERA_NAMES

    @property
    def n_stages(self) -> int:
        return len(self.stage_names)

    def _proprio_names(self) -> list[str]:
        return (
            [f"joint{i + 1}_pos" for i in range(7)]
            + [f"joint{i + 1}_vel" for i in range(7)]
            + ["gripper_width", "ee_x", "ee_y", "ee_z"]
        )

    def _home_pose(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        d.qpos[self._qadr] = HOME_QPOS
        mujoco.mj_kinematics(self.model, d)
        return d.site_xpos[self._ee_site].copy(), d.site_xmat[self._ee_site].reshape(3, 3).copy()

    # --- privileged state accessors (used by tasks and experts) ------------------------------------
    @property
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._ee_site].copy()

    @property
    def gripper_width(self) -> float:
        return float(self.data.qpos[self._finger_qadr].sum())

    @property
    def arm_qpos(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    def _touching(self, geom_ids: set[int], pad: int) -> bool:
        d = self.data
        if d.ncon == 0:
            return False
        pairs = d.contact.geom[: d.ncon]
        pads = set(self._pad_geoms[pad])
        for g1, g2 in pairs:
            if (g1 in pads and g2 in geom_ids) or (g2 in pads and g1 in geom_ids):
                return True
        return False

    def is_grasping(self, geom_ids: set[int]) -> bool:
        """Both finger pads are in contact with one of ``geom_ids``."""
        return self._touching(geom_ids, 0) and self._touching(geom_ids, 1)

    def progress_info(self) -> dict[str, Any]:
        success = bool(self._success())
        if success:
            stage, fraction = self.n_stages - 1, 1.0
        else:
            stage, fraction = self._stage_fraction()
            fraction = float(np.clip(fraction, 0.0, 1.0))
        progress = (stage + fraction) / self.n_stages
        if not success:
            progress = min(progress, 0.99)  # Φ = 1 is reserved for success
        return {
            "progress": float(progress),
            "stage": int(stage),
            "stage_name": self.stage_names[stage],
            "is_success": success,
            "task": self.instruction,
        }

    # --- gymnasium API -----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        # One draw from the env RNG per episode, split into independent streams so that domain
        # randomisation never changes the task, and vice versa.
        episode_seed = int(self.np_random.integers(0, 2**63 - 1))
        task_rng = np.random.default_rng([episode_seed, 0])
        dr_rng = np.random.default_rng([episode_seed, 1])
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._qadr] = HOME_QPOS + task_rng.uniform(-0.03, 0.03, 7)
        d.qpos[self._finger_qadr] = FINGER_MAX
        d.ctrl[self._arm_act] = d.qpos[self._qadr]
        d.ctrl[self._finger_act] = FINGER_MAX
        mujoco.mj_kinematics(m, d)
        if self._world is not None:
            # The world variant has a stream of its own: the same seed gives the same variant.
            world_rng = np.random.default_rng([episode_seed, 2])
            self.world_variant = self._world.draw(world_rng)
            self._world.apply(self.world_variant)
        self._reset_task(task_rng)
        self.instructions = self._format_instructions()
        instruction = options.get("instruction")
        if instruction is None:
            instruction = self.instructions[int(task_rng.integers(len(self.instructions)))]
        elif not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"options['instruction'] must be a non-empty string, got {instruction!r}")
        self.instruction = instruction
        if self._world is None:
            self._randomizer.apply(dr_rng)
        else:
            self._world.place_clutter(d, self.world_variant, world_rng, self._clutter_keep_clear())
            if self._renderer is not None:
                self._world.upload_textures(self._renderer)
        mujoco.mj_forward(m, d)
        # Let props settle onto the table under the servo before the first observation.
        mujoco.mj_step(m, d, nstep=10)
        d.qvel[:] = 0.0
        mujoco.mj_forward(m, d)
        self._ee_target = self.ee_pos
        self._after_settle()
        obs = self._get_obs()
        info = self.progress_info()
        if self.world_variant is not None:
            info["world"] = self.world_params()
        return obs, info

    def world_params(self) -> dict[str, Any]:
        """This episode's world variant as JSON-serialisable data (``{"world": "default"}`` by default)."""
        if self.world_variant is None:
            return {"world": self.world}
        return copy.deepcopy(self.world_variant)

    def _check_action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action must be numeric with shape {self.action_space.shape}, got {action!r}") from None
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action has shape {a.shape}, expected {self.action_space.shape} for action_mode="
                f"{self.action_mode!r} ({', '.join(self.action_names)})"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or inf: {a.tolist()}")
        return np.clip(a, -1.0, 1.0)

    def step(self, action):
        a = self._check_action(action)
        m, d = self.model, self.data
        if self.action_mode == "ee_delta":
            self._servo_ee(a[:3])
        else:
            d.ctrl[self._arm_act] = self._joint_low + (a[:7] + 1.0) * 0.5 * (self._joint_high - self._joint_low)
        d.ctrl[self._finger_act] = FINGER_MAX * (1.0 - a[-1]) * 0.5
        mujoco.mj_step(m, d, nstep=CONTROL_SUBSTEPS)
        if not np.all(np.isfinite(d.qpos)):
            raise RuntimeError(f"{self.task_name}: simulation diverged (non-finite state)")
        info = self.progress_info()
        reward = 1.0 if info["is_success"] else 0.0
        obs = self._get_obs()
        return obs, reward, info["is_success"], False, info

    def _servo_ee(self, delta: np.ndarray) -> None:
        """Move the Cartesian target and map it to joint targets with one damped-least-squares IK step."""
        m, d = self.model, self.data
        ee = d.site_xpos[self._ee_site]
        target = np.clip(self._ee_target + delta * EE_STEP_M, WORKSPACE_LOW, WORKSPACE_HIGH)
        lead = target - ee
        dist = np.linalg.norm(lead)
        if dist > MAX_TARGET_LEAD_M:
            target = ee + lead * (MAX_TARGET_LEAD_M / dist)
        self._ee_target = target
        q = d.qpos[self._qadr]
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._ee_site)
        jac = np.vstack([self._jacp[:, self._dadr], IK_ROT_WEIGHT * self._jacr[:, self._dadr]])
        rot = d.site_xmat[self._ee_site].reshape(3, 3)
        rot_err = 0.5 * sum(np.cross(rot[:, i], self._target_rot[:, i]) for i in range(3))
        err = np.concatenate([target - ee, IK_ROT_WEIGHT * rot_err])
        jjt = jac @ jac.T + (IK_DAMPING**2) * np.eye(6)
        dq = jac.T @ np.linalg.solve(jjt, err)
        # null-space posture term: J⁺ = Jᵀ(JJᵀ+λ²I)⁻¹, projector I - J⁺J
        pinv = jac.T @ np.linalg.inv(jjt)
        dq += (np.eye(7) - pinv @ jac) @ (IK_NULLSPACE_GAIN * (HOME_QPOS - q))
        d.ctrl[self._arm_act] = np.clip(q + dq, self._joint_low, self._joint_high)

    def _state_vector(self) -> np.ndarray:
        d = self.data
        return np.concatenate(
            [
                d.qpos[self._qadr],
                d.qvel[self._dadr],
                [self.gripper_width],
                d.site_xpos[self._ee_site],
                self._task_state(),
            ]
        ).astype(np.float32)

    def _get_obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {"state": self._state_vector()}
        if self.cameras:
            obs["pixels"] = self.render_cameras(self.cameras)
        return obs

    # --- rendering -----------------------------------------------------------------------------------
    def render_cameras(
        self, cameras: Sequence[str] | None = None, image_size: int | Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Render the current state from ``cameras`` (default: this env's cameras, else all)."""
        if cameras is None:
            cameras = self.cameras or CAMERA_NAMES
        if isinstance(cameras, str):
            cameras = (cameras,)
        for cam in cameras:
            if cam not in CAMERA_NAMES:
                raise ValueError(f"unknown camera {cam!r}; valid cameras: {', '.join(CAMERA_NAMES)}")
        hw = self.image_hw if image_size is None else _as_hw(image_size)
        renderer = self._get_renderer(hw)
        images = {}
        for cam in cameras:
            renderer.update_scene(self.data, camera=self._camera_ids[cam])
            images[cam] = renderer.render().copy()
        return images

    def _get_renderer(self, hw: tuple[int, int]) -> mujoco.Renderer:
        if self._renderer is not None and self._render_hw == hw:
            return self._renderer
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        m = self.model
        if hw[1] > m.vis.global_.offwidth or hw[0] > m.vis.global_.offheight:
            m.vis.global_.offwidth = max(hw[1], m.vis.global_.offwidth)
            m.vis.global_.offheight = max(hw[0], m.vis.global_.offheight)
        _load_llvm_users_before_egl()
        self._renderer = mujoco.Renderer(m, height=hw[0], width=hw[1])
        self._render_hw = hw
        _track_open_env(self)
        return self._renderer

    def render(self):
        if self.render_mode == "rgb_array":
            return self.render_cameras(("front",))["front"]
        return None

    def close(self):
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            self._renderer = None
            self._render_hw = None
            renderer.close()
        _OPEN_ENVS.discard(self)
