"""``prism-policy``: runs a trained policy (or the sim-only scripted expert) against a robot.

Builds the observation from the latest frame of each camera and the latest joint state, runs the
policy at a fixed control rate and publishes ``geometry_msgs/TwistStamped`` (MoveIt Servo) or
``trajectory_msgs/JointTrajectory`` (joint trajectory controller) plus a gripper command. Every
command passes the :class:`robot_bridge.safety.SafetyGuard`: clamps, workspace box, stale-input
watchdog, latched e-stop (``estop`` Bool, cleared by an ``estop_reset`` Empty once released),
non-finite guard and an episode time limit.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robot_bridge import topics
from robot_bridge.command_mapping import (
    DEFAULT_EE_MAX_STEP,
    PANDA_FINGER_NAMES,
    PANDA_JOINT_NAMES,
    PANDA_LOWER,
    PANDA_UPPER,
    denormalise_joints,
    ee_action_to_velocity,
    reorder_joints,
)
from robot_bridge.images import fit_square
from robot_bridge.node_config import require_positive
from robot_bridge.policy_sources import PROPRIO_DIM, load_bridge_policy, proprio_state
from robot_bridge.ros_utils import (
    camera_topic_map,
    declare_config,
    image_to_numpy,
    latched_qos,
    monotonic,
    run_node,
    seconds_to_duration,
    sensor_qos,
    stamp_to_seconds,
)
from robot_bridge.safety import SafetyConfig, SafetyGuard, Verdict

NODE_NAME = "prism_policy"


@dataclass
class PolicyNodeConfig:
    """Parameters of ``prism-policy``."""

    policy: str = ""
    """A prism-train run directory, a prism-vla checkpoint folder (instruction from episode/start),
    ``expert:<task>[:<behaviour>]`` (SIM-ONLY scripted expert) or ``python:<module>:<factory>``."""
    device: str = "auto"
    """Torch device for learned policies: auto, cpu, cuda."""
    control_rate_hz: float = 20.0
    """Fixed rate at which observations are assembled and commands published."""
    command_interface: Literal["auto", "twist", "joint_trajectory"] = "auto"
    """Command type: ``twist`` (TwistStamped to MoveIt Servo), ``joint_trajectory`` or ``auto``
    (from the policy's action mode: ee_delta -> twist, joint -> joint_trajectory)."""
    cameras: tuple[str, ...] = ()
    """Cameras to feed the policy (default: the ones it was trained with)."""
    camera_topics: tuple[str, ...] = ()
    """Per-camera topic overrides ``camera=/topic`` (default ``<camera>/image_raw``)."""
    joint_states_topic: str = topics.JOINT_STATES
    """sensor_msgs/JointState input."""
    ee_pose_topic: str = topics.EE_POSE
    """geometry_msgs/PoseStamped of the end effector (workspace box, proprioceptive state); empty:
    not used."""
    twist_topic: str = topics.TWIST_COMMAND
    """TwistStamped output (MoveIt Servo: /servo_node/delta_twist_cmds)."""
    trajectory_topic: str = topics.TRAJECTORY_COMMAND
    """JointTrajectory output (e.g. /scaled_joint_trajectory_controller/joint_trajectory on a UR)."""
    gripper_topic: str = topics.GRIPPER_COMMAND
    """Float64MultiArray gripper output ``[g]``, g in [-1 open, +1 closed]; empty: not published."""
    base_frame: str = "world"
    """frame_id of Twist commands (the robot base / MoveIt planning frame)."""
    joint_names: tuple[str, ...] = PANDA_JOINT_NAMES
    """Arm joints the policy's joint actions / state refer to, in the policy's order."""
    finger_joint_names: tuple[str, ...] = PANDA_FINGER_NAMES
    """Gripper joints whose positions sum to the gripper width (proprioceptive state)."""
    joint_lower: tuple[float, ...] = PANDA_LOWER
    """Lower joint limits (rad), same order as joint_names."""
    joint_upper: tuple[float, ...] = PANDA_UPPER
    """Upper joint limits (rad), same order as joint_names."""
    ee_max_step: float = DEFAULT_EE_MAX_STEP
    """Metres per control step at |action| = 1 in the policy's ee_delta action space."""
    policy_control_dt: float = 0.05
    """Control period (s) the policy was trained at; converts ee_delta actions to velocities."""
    trajectory_lead_s: float = 0.0
    """time_from_start of the JointTrajectory point (0: one control period)."""
    use_privileged_state: bool = False
    """SIM-ONLY: read the full state vector (object poses) from the twin's sim/privileged_state.
    Needed by state-based policies trained with object state; forced on for the expert."""
    wait_for_episode_start: bool = True
    """Command only after an ``episode/start`` message (the twin sends one per episode); false:
    start as soon as every input has arrived."""
    task: str = ""
    """Task instruction when no ``episode/start`` message names one."""
    max_linear_speed: float = 0.25
    """Safety: largest Cartesian linear speed (m/s)."""
    max_angular_speed: float = 0.5
    """Safety: largest Cartesian angular speed (rad/s)."""
    workspace_min: tuple[float, ...] = (0.15, -0.5, 0.0)
    """Safety: lower corner (x, y, z) of the workspace box in the base frame (m)."""
    workspace_max: tuple[float, ...] = (0.85, 0.5, 0.7)
    """Safety: upper corner (x, y, z) of the workspace box in the base frame (m)."""
    max_joint_step: float = 0.1
    """Safety: largest joint-target change relative to the measured position per command (rad)."""
    stale_timeout_s: float = 0.5
    """Safety watchdog: any required input older than this stops commanding (s)."""
    episode_time_limit_s: float = 60.0
    """Safety: stop commanding this long after the episode start (s); 0 disables."""

    def __post_init__(self) -> None:
        require_positive(self, "control_rate_hz", "ee_max_step", "policy_control_dt")


SUMMARY = __doc__


class PolicyNode:
    def __init__(self, config: PolicyNodeConfig | None = None, node=None) -> None:
        import rclpy.node  # ROS (optional): only a live node needs it
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Empty, Float64MultiArray, String
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        self.node = node or rclpy.node.Node(NODE_NAME)
        self.config = cfg = config or declare_config(self.node, PolicyNodeConfig)
        self._msgs = dict(
            TwistStamped=TwistStamped,
            JointTrajectory=JointTrajectory,
            JointTrajectoryPoint=JointTrajectoryPoint,
            Float64MultiArray=Float64MultiArray,
            String=String,
        )
        if len(cfg.joint_lower) != len(cfg.joint_names) or len(cfg.joint_upper) != len(cfg.joint_names):
            raise ValueError(f"joint_lower/joint_upper need {len(cfg.joint_names)} values (one per joint_names)")
        self.policy = load_bridge_policy(cfg.policy, cfg.device)
        p = self.policy
        self.cameras = tuple(cfg.cameras) or p.cameras
        self.interface = (
            cfg.command_interface
            if cfg.command_interface != "auto"
            else ("twist" if p.action_mode == "ee_delta" else "joint_trajectory")
        )
        self.use_privileged = cfg.use_privileged_state or p.needs_privileged  # the expert is sim-only anyway
        if p.state_dim > PROPRIO_DIM and not self.use_privileged:
            raise ValueError(
                f"policy {p.name!r} needs a {p.state_dim}-D state including object state; a real robot "
                f"provides only the first {PROPRIO_DIM} (proprioception). Use a pixels policy, or set "
                "use_privileged_state:=true against the twin (sim only)"
            )
        self.safety = SafetyConfig(
            max_linear_speed=cfg.max_linear_speed,
            max_angular_speed=cfg.max_angular_speed,
            workspace_min=tuple(cfg.workspace_min),
            workspace_max=tuple(cfg.workspace_max),
            max_joint_step=cfg.max_joint_step,
            stale_timeout_s=cfg.stale_timeout_s,
            episode_time_limit_s=cfg.episode_time_limit_s,
        )
        required = [f"camera:{c}" for c in self.cameras]
        needs_joints = self.interface == "joint_trajectory" or (p.state_dim > 0 and not self.use_privileged)
        if needs_joints:
            required.append("joint_states")
        if cfg.ee_pose_topic and (self.interface == "twist" or (p.state_dim > 0 and not self.use_privileged)):
            required.append("ee_pose")
        if self.use_privileged:
            required.append("privileged_state")
        if p.needs_mj_state:
            required.append("mj_state")
        if not required:
            raise ValueError("the policy needs no input at all; nothing to watch -- refusing to command blind")
        self.guard = SafetyGuard(self.safety, required)

        n = self.node
        self._images: dict[str, np.ndarray] = {}
        self._image_stamps: dict[str, float] = {}
        self._joint_msg = None
        self._ee_position: np.ndarray | None = None
        self._privileged: np.ndarray | None = None
        self._mj_state: np.ndarray | None = None
        self._episode: dict = {"instruction": cfg.task}
        self._episode_active = False
        self._end_sent = False
        self._policy_ready = False
        self._blocked_before: list[str] = []
        self.latencies: list[float] = []
        qos = sensor_qos()
        for cam, topic in camera_topic_map(self.cameras, cfg.camera_topics).items():
            n.create_subscription(Image, topic, lambda msg, cam=cam: self._on_image(cam, msg), qos)
        n.create_subscription(JointState, cfg.joint_states_topic, self._on_joints, 10)
        if cfg.ee_pose_topic:
            n.create_subscription(PoseStamped, cfg.ee_pose_topic, self._on_pose, 10)
        if self.use_privileged:
            n.create_subscription(Float64MultiArray, topics.SIM_PRIVILEGED_STATE, self._on_privileged, 10)
        if p.needs_mj_state:
            n.create_subscription(Float64MultiArray, topics.SIM_MJ_STATE, self._on_mj_state, 10)
        n.create_subscription(String, topics.SIM_EPISODE, self._on_sim_episode, latched_qos())
        n.create_subscription(String, topics.EPISODE_START, self._on_episode_start, latched_qos())
        n.create_subscription(Bool, topics.ESTOP, self._on_estop, 10)
        n.create_subscription(Empty, topics.ESTOP_RESET, self._on_estop_reset, 10)
        self.twist_pub = n.create_publisher(TwistStamped, cfg.twist_topic, 10) if self.interface == "twist" else None
        self.traj_pub = (
            n.create_publisher(JointTrajectory, cfg.trajectory_topic, 10)
            if self.interface == "joint_trajectory"
            else None
        )
        self.gripper_pub = n.create_publisher(Float64MultiArray, cfg.gripper_topic, 10) if cfg.gripper_topic else None
        self.status_pub = n.create_publisher(String, topics.POLICY_STATUS, 10)
        self.episode_end_pub = n.create_publisher(String, topics.EPISODE_END, 10)
        self.period = 1.0 / cfg.control_rate_hz
        n.create_timer(self.period, self._tick)
        n.get_logger().info(
            f"policy {p.name} -> {self.interface}; cameras {list(self.cameras)}; watching {required}; "
            f"{cfg.control_rate_hz:g} Hz"
        )

    # -- inputs --------------------------------------------------------------------------------------
    def _on_image(self, cam: str, msg) -> None:
        try:
            image = image_to_numpy(msg)
        except ValueError as exc:
            self.node.get_logger().error(f"camera {cam}: {exc}", throttle_duration_sec=5.0)
            return
        self._images[cam] = fit_square(image, self.policy.image_size)
        self._image_stamps[cam] = stamp_to_seconds(msg.header.stamp)
        self.guard.input_received(f"camera:{cam}", monotonic())

    def _on_joints(self, msg) -> None:
        if reorder_joints(msg.name, msg.position, self.config.joint_names) is None:
            return  # e.g. a gripper-only JointState on the same topic
        self._joint_msg = msg
        self.guard.input_received("joint_states", monotonic())

    def _on_pose(self, msg) -> None:
        p = msg.pose.position
        self._ee_position = np.array([p.x, p.y, p.z])
        self.guard.input_received("ee_pose", monotonic())

    def _on_privileged(self, msg) -> None:
        self._privileged = np.asarray(msg.data, dtype=np.float64)
        self.guard.input_received("privileged_state", monotonic())

    def _on_mj_state(self, msg) -> None:
        self._mj_state = np.asarray(msg.data, dtype=np.float64)
        self.guard.input_received("mj_state", monotonic())

    def _on_sim_episode(self, msg) -> None:
        try:
            self._episode.update(json.loads(msg.data))
        except json.JSONDecodeError:
            self.node.get_logger().error(f"bad {topics.SIM_EPISODE} message: {msg.data!r}")

    def _on_episode_start(self, msg) -> None:
        self._episode["instruction"] = msg.data
        self._start_episode()

    def _start_episode(self) -> None:
        self._episode_active = True
        self._end_sent = False
        self._policy_ready = False
        self.guard.start_episode(monotonic())

    def _on_estop(self, msg) -> None:
        was = self.guard.estopped
        self.guard.set_estop(bool(msg.data))
        if self.guard.estopped and not was:
            self.node.get_logger().warning("E-STOP engaged: commanding stopped (latched)")
            self._tick()  # act now, not at the next tick

    def _on_estop_reset(self, _msg) -> None:
        if self.guard.reset():
            self.node.get_logger().info("e-stop / fault reset")
        else:
            self.node.get_logger().warning("e-stop reset refused: the e-stop source still reads engaged")

    # -- control ---------------------------------------------------------------------------------------
    def _observation(self) -> dict | None:
        obs: dict = {"pixels": {c: self._images[c] for c in self.cameras}} if self.cameras else {}
        dim = self.policy.state_dim
        if self.use_privileged:
            if self._privileged is None:
                return None
            obs["state"] = self._privileged.astype(np.float32)
        elif dim:
            msg = self._joint_msg
            if msg is None or self._ee_position is None:
                return None
            names = self.config.joint_names
            q = reorder_joints(msg.name, msg.position, names)
            qd = reorder_joints(msg.name, msg.velocity, names) if len(msg.velocity) else np.zeros(len(names))
            fingers = reorder_joints(msg.name, msg.position, self.config.finger_joint_names)
            width = float(fingers.sum()) if fingers is not None else 0.0
            obs["state"] = proprio_state(q, qd if qd is not None else np.zeros(len(names)), width, self._ee_position)[
                :dim
            ]
        if self.policy.needs_mj_state:
            if self._mj_state is None:
                return None
            obs["mj_state"] = self._mj_state
        obs["task"] = self._episode.get("instruction", "")
        return obs

    def _tick(self) -> None:
        now = monotonic()
        cfg = self.config
        if not cfg.wait_for_episode_start and not self._episode_active and not self.guard.stale_inputs(now):
            self._start_episode()
        reasons = self.guard.blocked_reasons(now)
        if reasons:
            self._publish_decision(
                self.guard.decide_twist(now, (0, 0, 0))
                if self.interface == "twist"
                else self.guard.decide_joints(now, [0.0] * len(cfg.joint_names), [0.0] * len(cfg.joint_names)),
                None,
                now,
            )
            if "episode time limit" in reasons and not self._end_sent:
                self._end_sent = True
                self.episode_end_pub.publish(self._msgs["String"](data="timeout"))
            return
        if not self._policy_ready:
            try:
                self.policy.reset(self._episode)
            except (ValueError, RuntimeError) as exc:
                self.node.get_logger().error(f"policy reset failed: {exc}", throttle_duration_sec=5.0)
                return
            self._policy_ready = True
        obs = self._observation()
        if obs is None:
            return
        try:
            action = self.policy.act(obs)
        except Exception as exc:  # a crashing policy must not take the safety logic down with it
            self.node.get_logger().error(f"policy failed: {exc!r}", throttle_duration_sec=5.0)
            action = np.full(4, np.nan)
        if self.interface == "twist":
            velocity = (
                ee_action_to_velocity(action[:3], cfg.ee_max_step, cfg.policy_control_dt)
                if action.size >= 3
                else np.full(3, np.nan)
            )
            decision = self.guard.decide_twist(now, velocity, (0, 0, 0), self._ee_position, self.period)
        else:
            measured = reorder_joints(self._joint_msg.name, self._joint_msg.position, cfg.joint_names)
            n_joints = len(cfg.joint_names)
            targets = (
                denormalise_joints(action[:n_joints], cfg.joint_lower, cfg.joint_upper)
                if action.size >= n_joints and np.all(np.isfinite(action[:n_joints]))
                else np.full(n_joints, np.nan)
            )
            decision = self.guard.decide_joints(now, targets, measured, cfg.joint_lower, cfg.joint_upper)
        gripper = None
        if (
            decision.verdict == Verdict.COMMAND
            and self.gripper_pub is not None
            and action.size in (4, len(cfg.joint_names) + 1)
        ):
            g = self.guard.decide_gripper(now, float(action[-1]))
            gripper = float(g.command[0]) if g.verdict == Verdict.COMMAND else None
        self._publish_decision(decision, gripper, now)

    def _publish_decision(self, decision, gripper: float | None, now: float) -> None:
        m = self._msgs
        stamp = self.node.get_clock().now().to_msg()
        if decision.verdict == Verdict.SILENT:
            if decision.reasons != self._blocked_before:
                self.node.get_logger().warning(f"not commanding: {', '.join(decision.reasons)}")
            self._blocked_before = decision.reasons
            self._status(decision, None, now)
            return
        if self.interface == "twist":
            msg = m["TwistStamped"]()
            msg.header.stamp, msg.header.frame_id = stamp, self.config.base_frame
            if decision.verdict == Verdict.COMMAND:
                v = decision.command
                msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(x) for x in v[:3])
                msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(x) for x in v[3:])
            self.twist_pub.publish(msg)  # HOLD: all-zero twist
        else:
            msg = m["JointTrajectory"]()
            msg.header.stamp = stamp
            msg.joint_names = list(self.config.joint_names)
            point = m["JointTrajectoryPoint"]()
            if decision.verdict == Verdict.COMMAND:
                point.positions = [float(x) for x in decision.command]
            else:  # HOLD: stay at the last measured position
                held = (
                    None
                    if self._joint_msg is None
                    else reorder_joints(self._joint_msg.name, self._joint_msg.position, self.config.joint_names)
                )
                if held is None:
                    return
                point.positions = [float(x) for x in held]
            point.time_from_start = seconds_to_duration(self.config.trajectory_lead_s or self.period)
            msg.points = [point]
            self.traj_pub.publish(msg)
        if gripper is not None:
            self.gripper_pub.publish(m["Float64MultiArray"](data=[gripper]))
        if decision.verdict == Verdict.HOLD:
            self.node.get_logger().warning(f"hold: {', '.join(decision.reasons)}")
        self._blocked_before = decision.reasons
        self._status(decision, stamp, now)

    def _status(self, decision, stamp, now: float) -> None:
        status = {
            "verdict": decision.verdict.value,
            "reasons": decision.reasons,
            "clamped": decision.clamped,
            "estop": self.guard.estopped,
            "fault": self.guard.fault,
            "n_invalid": self.guard.n_invalid,
        }
        if decision.verdict != Verdict.SILENT and self._image_stamps:
            # observation-to-command latency: oldest camera frame used -> command publish (wall clock)
            oldest = min(self._image_stamps[c] for c in self.cameras if c in self._image_stamps)
            latency = time.time() - oldest
            status["obs_to_command_ms"] = round(latency * 1e3, 3)
            self.latencies.append(latency)
        self.status_pub.publish(self._msgs["String"](data=json.dumps(status)))

    def close(self) -> None:
        shadow = self.policy.extra.get("shadow") if self.policy else None
        if shadow is not None:
            shadow.env.close()


def main(argv=None) -> int:
    return run_node(PolicyNode, PolicyNodeConfig, "prism-policy", NODE_NAME, SUMMARY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
