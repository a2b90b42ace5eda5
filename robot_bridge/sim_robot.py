"""``prism-sim-robot``: the MuJoCo task, appearing on ROS 2 the way a real arm's driver does.

Publishes every camera as ``sensor_msgs/Image`` (``<camera>/image_raw``, sensor-data QoS),
``sensor_msgs/JointState`` on ``/joint_states`` and the end-effector ``geometry_msgs/PoseStamped``;
accepts ``geometry_msgs/TwistStamped`` (MoveIt Servo style) *or* ``trajectory_msgs/JointTrajectory``
(joint trajectory controller style, chosen by ``command_interface``) and a gripper command; steps
the physics in real time at the env's control rate. Without a fresh command the arm holds (zero
twist / last joint target), as Servo and trajectory controllers do.

Sim-only extras (a real robot has none; clearly under ``sim/``): ground-truth progress and
success, the full privileged state vector and the MuJoCo state, so the oracle reward model and the
scripted expert can run against the twin.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from robot_bridge import topics
from robot_bridge.command_mapping import (
    DEFAULT_EE_MAX_STEP,
    normalise_joints,
    reorder_joints,
    ros_joint_name,
    velocity_to_ee_action,
)
from robot_bridge.node_config import require_positive
from robot_bridge.ros_utils import (
    camera_topic_map,
    declare_config,
    latched_qos,
    monotonic,
    numpy_to_image,
    run_node,
    sensor_qos,
)

NODE_NAME = "prism_sim_robot"


@dataclass
class SimRobotConfig:
    """Parameters of ``prism-sim-robot``."""

    task: str = "reach"
    """Sim task (``reach``, ``push``, ``pickplace``, ``drawer`` or a gymnasium id)."""
    cameras: tuple[str, ...] = ("front", "side", "wrist")
    """Cameras to render and publish."""
    image_size: int = 128
    """Square image size (pixels) of every camera."""
    command_interface: Literal["twist", "joint_trajectory"] = "twist"
    """Which command drives the arm: ``twist`` (TwistStamped, env action_mode ee_delta) or
    ``joint_trajectory`` (JointTrajectory, env action_mode joint)."""
    seed: int = 0
    """Seed of the first episode; episode k uses ``seed + k``."""
    max_episode_steps: int = 0
    """Episode step limit (0: the task's default)."""
    episodes: int = 0
    """Stop the node after this many episodes (0: run until stopped)."""
    auto_reset: bool = True
    """Start the next episode by itself ``reset_delay_s`` after success or the step limit (else
    wait for an ``episode/reset`` message)."""
    reset_delay_s: float = 1.0
    """Seconds the final state stays on the topics before the automatic reset."""
    real_time_factor: float = 1.0
    """Simulated seconds per wall-clock second (1.0: real time)."""
    wait_for_subscribers: int = 0
    """Hold the first episode until this many nodes subscribe to every camera topic, /joint_states,
    the EE pose and the episode-start topic (0: start at once). Lets a recorder that starts alongside the twin
    see the episode from frame 0 (a recorder never records an episode it joined after its start)."""
    wait_for_commander: bool = False
    """Also hold the first episode until a node publishes commands on the twin's command topic (the
    policy), so the first episode is not spent idle while the policy starts."""
    command_timeout_s: float = 0.25
    """A Twist older than this is treated as zero (MoveIt Servo's incoming command timeout)."""
    ee_max_step: float = 0.0
    """Metres per control step at |action| = 1 for Twist conversion (0: read from the env, else
    0.02)."""
    base_frame: str = "world"
    """frame_id of the end-effector pose and the frame Twist commands are expressed in."""
    camera_topics: tuple[str, ...] = ()
    """Per-camera topic overrides ``camera=/topic`` (default ``<camera>/image_raw``)."""
    joint_states_topic: str = topics.JOINT_STATES
    """Where joint states are published."""
    ee_pose_topic: str = topics.EE_POSE
    """Where the end-effector pose is published."""
    twist_topic: str = topics.TWIST_COMMAND
    """TwistStamped command input."""
    trajectory_topic: str = topics.TRAJECTORY_COMMAND
    """JointTrajectory command input."""
    gripper_topic: str = topics.GRIPPER_COMMAND
    """Float64MultiArray gripper input ``[g]``, g in [-1 open, +1 closed]."""
    publish_sim_topics: bool = True
    """Publish the SIM-ONLY ground truth (``sim/*``: progress, success, privileged state)."""

    def __post_init__(self) -> None:
        require_positive(self, "image_size", "real_time_factor")


SUMMARY = __doc__


class SimRobotNode:
    """Wraps an rclpy Node; created by :func:`main` (rclpy must be initialised)."""

    def __init__(self, config: SimRobotConfig | None = None, node=None) -> None:
        import rclpy.node  # ROS (optional): only a live node needs it
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Empty, Float32, Float64MultiArray, String
        from trajectory_msgs.msg import JointTrajectory

        self.node = node or rclpy.node.Node(NODE_NAME)
        self.config = config or declare_config(self.node, SimRobotConfig)
        cfg = self.config
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco  # after MUJOCO_GL is set: MuJoCo picks its GL backend on import

        import sim

        self._mujoco = mujoco
        self._msgs = dict(
            Image=Image,
            JointState=JointState,
            PoseStamped=PoseStamped,
            Bool=Bool,
            Float32=Float32,
            Float64MultiArray=Float64MultiArray,
            String=String,
        )
        action_mode = "ee_delta" if cfg.command_interface == "twist" else "joint"
        kwargs = {"cameras": tuple(cfg.cameras), "image_size": cfg.image_size, "action_mode": action_mode}
        if cfg.max_episode_steps > 0:
            kwargs["max_episode_steps"] = cfg.max_episode_steps
        self.env = sim.make(cfg.task, **kwargs)
        self.sim_env = self.env.unwrapped
        model = self.sim_env.model
        self.control_dt = float(getattr(self.sim_env, "control_dt", 0.05))
        self.ee_max_step = cfg.ee_max_step or float(
            getattr(self.sim_env, "ee_max_step", getattr(self.sim_env, "max_ee_step", DEFAULT_EE_MAX_STEP))
        )
        arm = self._arm_names()
        self.arm_joint_ids = [model.joint(n).id for n in arm["joints"]]
        self.finger_joint_ids = [model.joint(n).id for n in arm["fingers"]]
        self.joint_names = [ros_joint_name(n) for n in arm["joints"] + arm["fingers"]]
        self.arm_joint_names = self.joint_names[: len(self.arm_joint_ids)]
        self.joint_lower = model.jnt_range[self.arm_joint_ids, 0].copy()
        self.joint_upper = model.jnt_range[self.arm_joint_ids, 1].copy()
        self.ee_site_id = model.site(arm["ee_site"]).id
        self._qpos_adr = [model.jnt_qposadr[j] for j in self.arm_joint_ids + self.finger_joint_ids]
        self._dof_adr = [model.jnt_dofadr[j] for j in self.arm_joint_ids + self.finger_joint_ids]

        n = self.node
        qos_img = sensor_qos()
        self.camera_topics = camera_topic_map(cfg.cameras, cfg.camera_topics)
        self.image_pubs = {c: n.create_publisher(Image, t, qos_img) for c, t in self.camera_topics.items()}
        self.joint_pub = n.create_publisher(JointState, cfg.joint_states_topic, 10)
        self.pose_pub = n.create_publisher(PoseStamped, cfg.ee_pose_topic, 10)
        self.episode_start_pub = n.create_publisher(String, topics.EPISODE_START, latched_qos())
        self.episode_end_pub = n.create_publisher(String, topics.EPISODE_END, 10)
        if cfg.publish_sim_topics:
            self.progress_pub = n.create_publisher(Float32, topics.SIM_PROGRESS, 10)
            self.success_pub = n.create_publisher(Bool, topics.SIM_SUCCESS, 10)
            self.state_pub = n.create_publisher(Float64MultiArray, topics.SIM_PRIVILEGED_STATE, 10)
            self.mj_state_pub = n.create_publisher(Float64MultiArray, topics.SIM_MJ_STATE, 10)
            self.sim_episode_pub = n.create_publisher(String, topics.SIM_EPISODE, latched_qos())
        n.create_subscription(TwistStamped, cfg.twist_topic, self._on_twist, 10)
        n.create_subscription(JointTrajectory, cfg.trajectory_topic, self._on_trajectory, 10)
        n.create_subscription(Float64MultiArray, cfg.gripper_topic, self._on_gripper, 10)
        n.create_subscription(Empty, topics.EPISODE_RESET, self._on_reset_request, 10)

        self._twist = np.zeros(3)
        self._twist_time = -np.inf
        self._joint_target: np.ndarray | None = None
        self._gripper = -1.0
        self._warned: set[str] = set()
        self.episode = -1
        self.episodes_ended = 0
        self.finished = False
        self._pending_reset_at: float | None = None
        self.n_steps = 0
        self._subscribers_ready_at: float | None = None
        self._waiting_for_subscribers = cfg.wait_for_subscribers > 0 or cfg.wait_for_commander
        # While it waits, the twin already publishes episode 0's reset state, unannounced, as a driver
        # publishes the idle arm: a consumer then holds inputs from before the start, which is how a
        # recorder tells an episode it saw begin from one it joined late.
        self._reset(announce=not self._waiting_for_subscribers)
        n.create_timer(self.control_dt / cfg.real_time_factor, self._tick)
        n.get_logger().info(
            f"twin ready: task={cfg.task} cameras={list(cfg.cameras)} {cfg.image_size}px "
            f"{cfg.command_interface} control_dt={self.control_dt:.3f}s"
        )

    # -- model introspection ---------------------------------------------------------------------
    def _arm_names(self) -> dict:
        """Arm joint / finger / ee-site names of the compiled scene."""
        arm = getattr(self.sim_env, "arm", None) or getattr(getattr(self.sim_env, "scene", None), "arm", None)
        if arm is not None:
            return {"joints": list(arm.joints), "fingers": list(arm.fingers), "ee_site": arm.ee_site}
        model = self._mujoco
        m = self.sim_env.model
        names = [m.joint(i).name for i in range(m.njnt)]
        hinges = [nm for i, nm in enumerate(names) if m.jnt_type[i] == model.mjtJoint.mjJNT_HINGE][:7]
        slides = [nm for i, nm in enumerate(names) if m.jnt_type[i] == model.mjtJoint.mjJNT_SLIDE and "finger" in nm][
            :2
        ]
        site = next(m.site(i).name for i in range(m.nsite) if m.site(i).name.endswith("ee_site"))
        return {"joints": hinges, "fingers": slides, "ee_site": site}

    # -- commands ----------------------------------------------------------------------------------
    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.node.get_logger().warning(text)

    def _on_twist(self, msg) -> None:
        if self.config.command_interface != "twist":
            self._warn_once("twist", "ignoring TwistStamped: command_interface is joint_trajectory")
            return
        v = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z])
        if not np.all(np.isfinite(v)):
            self._warn_once("nan", "ignoring a non-finite command")
            return
        self._twist, self._twist_time = v, monotonic()

    def _on_trajectory(self, msg) -> None:
        if self.config.command_interface != "joint_trajectory":
            self._warn_once("traj", "ignoring JointTrajectory: command_interface is twist")
            return
        if not msg.points:
            return
        target = reorder_joints(msg.joint_names, msg.points[-1].positions, self.arm_joint_names)
        if target is None:
            self._warn_once(
                "names", f"JointTrajectory joints {list(msg.joint_names)} do not cover {self.arm_joint_names}; ignored"
            )
            return
        if np.all(np.isfinite(target)):
            self._joint_target = target

    def _on_gripper(self, msg) -> None:
        if msg.data and np.isfinite(msg.data[0]):
            self._gripper = float(np.clip(msg.data[0], -1.0, 1.0))

    def _on_reset_request(self, _msg) -> None:
        self._pending_reset_at = monotonic()

    # -- simulation ----------------------------------------------------------------------------------
    def _action(self) -> np.ndarray:
        data = self.sim_env.data
        if self.config.command_interface == "twist":
            fresh = monotonic() - self._twist_time <= self.config.command_timeout_s
            xyz = velocity_to_ee_action(self._twist if fresh else np.zeros(3), self.ee_max_step, self.control_dt)
            return np.array([*xyz, self._gripper], dtype=np.float32)
        if self._joint_target is None:  # hold where the arm is
            self._joint_target = data.qpos[[self._qpos_adr[i] for i in range(len(self.arm_joint_ids))]].copy()
        joints = normalise_joints(self._joint_target, self.joint_lower, self.joint_upper)
        return np.array([*joints, self._gripper], dtype=np.float32)

    def _reset(self, announce: bool = True) -> None:
        cfg = self.config
        self.episode += 1
        if cfg.episodes and self.episode >= cfg.episodes:
            self.finished = True
            self.node.get_logger().info(f"all {cfg.episodes} episodes run")
            return
        seed = cfg.seed + self.episode
        obs, info = self.env.reset(seed=seed)
        self._twist, self._twist_time = np.zeros(3), -np.inf
        self._joint_target, self._gripper = None, -1.0
        self._pending_reset_at = None
        self._done = False
        self.instruction = str(info.get("task", getattr(self.sim_env, "instruction", cfg.task)))
        if announce:
            self._announce_episode()
        self._publish(obs, info)

    def _announce_episode(self) -> None:
        """Publish the episode start *before* its first frame: every frame of the episode is then
        published after the start, so a consumer can tell them from the previous episode's frames
        by publish time whatever order its callbacks run in."""
        cfg, String = self.config, self._msgs["String"]
        seed = cfg.seed + self.episode
        if cfg.publish_sim_topics:
            self.sim_episode_pub.publish(
                String(
                    data=json.dumps(
                        {"task": cfg.task, "seed": seed, "instruction": self.instruction, "episode": self.episode}
                    )
                )
            )
        self.episode_start_pub.publish(String(data=self.instruction))
        self.node.get_logger().info(f"episode {self.episode} (seed {seed}): {self.instruction!r}")

    def _subscribers_ready(self) -> bool:
        """True once every recorded topic has enough subscribers, plus a grace period (1 s) so the
        subscribers' side of DDS discovery and their first callbacks have completed too."""
        now = monotonic()
        # DDS matches endpoints topic by topic: a consumer can see the cameras before /joint_states
        # or the latched episode start, so every topic a recording needs is checked.
        pubs = {
            **self.image_pubs,
            "joint_states": self.joint_pub,
            "ee_pose": self.pose_pub,
            "episode_start": self.episode_start_pub,
        }
        counts = {name: p.get_subscription_count() for name, p in pubs.items()}
        command_topic = (
            self.config.twist_topic if self.config.command_interface == "twist" else self.config.trajectory_topic
        )
        commanders = self.node.count_publishers(command_topic)
        if min(counts.values()) >= self.config.wait_for_subscribers and (
            commanders > 0 or not self.config.wait_for_commander
        ):
            self._subscribers_ready_at = self._subscribers_ready_at or now
            return now - self._subscribers_ready_at >= 1.0
        self._subscribers_ready_at = None
        self.node.get_logger().info(
            f"waiting for {self.config.wait_for_subscribers} subscribers on each topic: {counts}"
            + (f"; publishers on {command_topic}: {commanders}" if self.config.wait_for_commander else ""),
            throttle_duration_sec=2.0,
        )
        return False

    def _tick(self) -> None:
        if self.finished:
            return
        if self._waiting_for_subscribers:
            if self._subscribers_ready():
                self._waiting_for_subscribers = False
                self._announce_episode()
            self._publish(*self._last)  # the held reset state; after the start, the episode's frame 0
            return
        if self._pending_reset_at is not None:
            if monotonic() >= self._pending_reset_at:
                self._reset()
            else:  # between episodes a driver keeps publishing: the (frozen) final state
                self._publish(*self._last)
            return
        obs, _reward, terminated, truncated, info = self.env.step(self._action())
        self.n_steps += 1
        self._publish(obs, info)
        if terminated or truncated:
            outcome = "success" if info.get("is_success") else ("timeout" if truncated else "failure")
            self.episode_end_pub.publish(self._msgs["String"](data=outcome))
            self.episodes_ended += 1
            self.node.get_logger().info(f"episode {self.episode} ended: {outcome}")
            if self.config.auto_reset:
                self._pending_reset_at = monotonic() + self.config.reset_delay_s
            else:
                self._pending_reset_at = np.inf  # until an episode/reset message arrives

    def _publish(self, obs, info) -> None:
        self._last = (obs, info)
        m, stamp = self._msgs, self.node.get_clock().now().to_msg()
        for cam, image in obs.get("pixels", {}).items():
            if cam in self.image_pubs:
                self.image_pubs[cam].publish(numpy_to_image(image, stamp, f"{cam}_camera"))
        data = self.sim_env.data
        js = m["JointState"]()
        js.header.stamp = stamp
        js.name = self.joint_names
        js.position = [float(data.qpos[a]) for a in self._qpos_adr]
        js.velocity = [float(data.qvel[a]) for a in self._dof_adr]
        self.joint_pub.publish(js)
        pose = m["PoseStamped"]()
        pose.header.stamp, pose.header.frame_id = stamp, self.config.base_frame
        p = data.site_xpos[self.ee_site_id]
        quat = np.zeros(4)
        self._mujoco.mju_mat2Quat(quat, data.site_xmat[self.ee_site_id])
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in p)
        pose.pose.orientation.w, pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z = (
            float(v) for v in quat
        )
        self.pose_pub.publish(pose)
        if self.config.publish_sim_topics:
            self.progress_pub.publish(m["Float32"](data=float(info.get("progress", 0.0))))
            self.success_pub.publish(m["Bool"](data=bool(info.get("is_success", False))))
            self.state_pub.publish(m["Float64MultiArray"](data=np.asarray(obs["state"], float).tolist()))
            spec = self._mujoco.mjtState.mjSTATE_INTEGRATION
            state = np.empty(self._mujoco.mj_stateSize(self.sim_env.model, spec))
            self._mujoco.mj_getState(self.sim_env.model, data, state, spec)
            prefix = [float(self.episode), float(self.config.seed + self.episode)]
            self.mj_state_pub.publish(m["Float64MultiArray"](data=prefix + state.tolist()))

    # -- lifecycle ------------------------------------------------------------------------------------
    def close(self) -> None:
        # the session's episode count, for whoever checks a recording against it
        self.node.get_logger().info(f"episodes ended: {self.episodes_ended}")
        self.env.close()


def main(argv=None) -> int:
    return run_node(SimRobotNode, SimRobotConfig, "prism-sim-robot", NODE_NAME, SUMMARY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
