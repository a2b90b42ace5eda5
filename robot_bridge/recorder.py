"""``prism-ros-record``: records robot sessions as a LeRobot v3 dataset and/or a rosbag2 MCAP.

Samples the latest camera frames, joint state, end-effector pose and the command being sent at a
fixed rate; one episode per ``episode/start`` .. ``episode/end`` (or the next start). Only whole
episodes are recorded: an episode whose start was published before the recorder was receiving every
input (a latched start reaching a recorder that joined late) is skipped, every row is built from
messages published after the episode's start, and an episode still open at shutdown is not written.
(Publish times from different machines compare only when their clocks agree, as ROS assumes.)
The dataset is what ``prism-reward eval`` scores and what training reads; the MCAP keeps the raw
messages (``prism-reward ingest`` turns it into a dataset later). Both are written atomically when
the recorder stops (Ctrl-C / SIGTERM, or after ``episodes`` episodes): an interrupted write leaves
nothing half-done.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# At import, not in a callback: importing the dataset stack (pandas, pyarrow, PyAV) on the first
# episode start stalled the executor for ~1 s and lost that episode's frames.
from episodes import Episode, LeRobotWriter
from robot_bridge import topics
from robot_bridge.command_mapping import (
    DEFAULT_EE_MAX_STEP,
    PANDA_FINGER_NAMES,
    PANDA_JOINT_NAMES,
    PANDA_LOWER,
    PANDA_UPPER,
    normalise_joints,
    reorder_joints,
    velocity_to_ee_action,
)
from robot_bridge.images import fit_square
from robot_bridge.node_config import require_positive
from robot_bridge.policy_sources import proprio_state
from robot_bridge.ros_utils import (
    camera_topic_map,
    declare_config,
    image_to_numpy,
    latched_qos,
    monotonic,
    run_node,
    sensor_qos,
)

NODE_NAME = "prism_ros_record"
STATE_NAMES = (
    [f"joint{i + 1}_pos" for i in range(7)]
    + [f"joint{i + 1}_vel" for i in range(7)]
    + ["gripper_width", "ee_x", "ee_y", "ee_z"]
)


@dataclass
class RecorderConfig:
    """Parameters of ``prism-ros-record``."""

    output: str = ""
    """LeRobot v3 dataset directory to create (empty: no dataset)."""
    mcap: str = ""
    """rosbag2 directory to create with an MCAP file of the raw messages (empty: no bag)."""
    overwrite: bool = False
    """Replace an existing dataset / bag at the output paths."""
    cameras: tuple[str, ...] = ("front", "side", "wrist")
    """Cameras to record."""
    camera_topics: tuple[str, ...] = ()
    """Per-camera topic overrides ``camera=/topic`` (default ``<camera>/image_raw``)."""
    image_size: int = 128
    """Square size (centre-crop + resize) of the recorded frames."""
    fps: float = 10.0
    """Frames per second sampled into the dataset."""
    episodes: int = 0
    """Stop after this many episodes (0: until Ctrl-C / SIGTERM)."""
    task: str = ""
    """Instruction when no ``episode/start`` message names one."""
    start_without_episode_message: bool = False
    """Start an episode as soon as every camera has a frame (no ``episode/start`` needed)."""
    command_interface: str = "twist"
    """Which command becomes the ``action`` column: ``twist`` (-> ee_delta action) or
    ``joint_trajectory`` (-> normalised joint targets)."""
    joint_states_topic: str = topics.JOINT_STATES
    """sensor_msgs/JointState input."""
    ee_pose_topic: str = topics.EE_POSE
    """geometry_msgs/PoseStamped end-effector input (empty: none; ee_x/y/z recorded as 0)."""
    twist_topic: str = topics.TWIST_COMMAND
    """TwistStamped command input."""
    trajectory_topic: str = topics.TRAJECTORY_COMMAND
    """JointTrajectory command input."""
    gripper_topic: str = topics.GRIPPER_COMMAND
    """Float64MultiArray gripper command input."""
    joint_names: tuple[str, ...] = PANDA_JOINT_NAMES
    """Arm joints recorded into ``observation.state`` (in this order)."""
    finger_joint_names: tuple[str, ...] = PANDA_FINGER_NAMES
    """Gripper joints whose positions sum to the gripper width."""
    joint_lower: tuple[float, ...] = PANDA_LOWER
    """Lower joint limits (normalising joint-trajectory actions)."""
    joint_upper: tuple[float, ...] = PANDA_UPPER
    """Upper joint limits."""
    ee_max_step: float = DEFAULT_EE_MAX_STEP
    """Metres per control step at |action| = 1 (Twist -> ee_delta action)."""
    policy_control_dt: float = 0.05
    """Control period (s) of the ee_delta action space."""
    command_timeout_s: float = 0.25
    """A command older than this counts as zero action."""
    min_frames: int = 2
    """Episodes with fewer frames are dropped."""

    def __post_init__(self) -> None:
        require_positive(self, "fps", "image_size", "ee_max_step", "policy_control_dt")


SUMMARY = __doc__


class RecorderNode:
    def __init__(self, config: RecorderConfig | None = None, node=None) -> None:
        import rclpy.node  # ROS (optional): only a live node needs it
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float32, Float64MultiArray, String
        from trajectory_msgs.msg import JointTrajectory

        self.node = node or rclpy.node.Node(NODE_NAME)
        self.config = cfg = config or declare_config(self.node, RecorderConfig)
        if not cfg.output and not cfg.mcap:
            raise ValueError("nothing to record into: set output:=DATASET_DIR and/or mcap:=BAG_DIR")
        for path in (cfg.output, cfg.mcap):
            if path and Path(path).exists() and not cfg.overwrite:
                raise ValueError(f"{path!r} already exists; choose a new path or set overwrite:=true")
        if cfg.command_interface not in ("twist", "joint_trajectory"):
            raise ValueError(f"command_interface must be twist or joint_trajectory, got {cfg.command_interface!r}")
        self.camera_topics = camera_topic_map(cfg.cameras, cfg.camera_topics)
        self._images: dict[str, np.ndarray] = {}
        # DDS publish times (ns, MessageInfo source_timestamp) of each input's latest and first message:
        # what ties a frame to the episode it belongs to, whatever order the callbacks run in.
        self._published: dict[str, int] = {}
        self._first_published: dict[str, int] = {}
        self._required_inputs = (
            [f"camera:{c}" for c in self.camera_topics] + ["joint_states"] + (["ee_pose"] if cfg.ee_pose_topic else [])
        )
        self._episode_start_ns = 0  # publish time of the open episode's start (0: opened without one)
        self._joint_msg = None
        self._ee = None
        self._twist = (-np.inf, np.zeros(3))
        self._joint_target = None
        self._gripper = -1.0
        self._gt_progress = None
        self._gt_success = None
        self._gt_seen = False  # the source publishes ground truth (the twin): every row must carry it
        self._episode_open = False
        self._ending: str | None = None  # outcome of an episode/end whose final frame is not sampled yet
        self._task = cfg.task
        self._rows: list[dict] = []
        self.episodes_written = 0
        self.finished = False
        self._writer = None
        self._bag = None
        self._bag_connections: dict[str, object] = {}
        if cfg.mcap:
            self._open_bag()

        n = self.node
        qos = sensor_qos(depth=10)
        for cam, topic in self.camera_topics.items():
            n.create_subscription(
                Image, topic, lambda m, info, cam=cam, topic=topic: self._on_image(cam, topic, m, info), qos
            )
        n.create_subscription(
            JointState, cfg.joint_states_topic, lambda m, info: self._on_joints(cfg.joint_states_topic, m, info), 50
        )
        if cfg.ee_pose_topic:
            n.create_subscription(
                PoseStamped, cfg.ee_pose_topic, lambda m, info: self._on_pose(cfg.ee_pose_topic, m, info), 10
            )
        else:
            self._ee = np.zeros(3)  # arm without a pose topic: ee_x/y/z recorded as 0
        n.create_subscription(TwistStamped, cfg.twist_topic, lambda m: self._on_twist(cfg.twist_topic, m), 10)
        n.create_subscription(
            JointTrajectory, cfg.trajectory_topic, lambda m: self._on_trajectory(cfg.trajectory_topic, m), 10
        )
        n.create_subscription(Float64MultiArray, cfg.gripper_topic, self._on_gripper, 10)
        n.create_subscription(Float32, topics.SIM_PROGRESS, self._on_gt_progress, 10)
        n.create_subscription(Bool, topics.SIM_SUCCESS, self._on_gt_success, 10)
        n.create_subscription(String, topics.EPISODE_START, self._on_episode_start, latched_qos())
        n.create_subscription(String, topics.EPISODE_END, self._on_episode_end, 10)
        self._timer = n.create_timer(1.0 / cfg.fps, self._tick)
        if self._bag is not None:
            # Register every connection now: building a message schema on a topic's first message
            # stalled the callbacks long enough to lose the start of the first episode.
            recorded = [(t, "sensor_msgs/msg/Image") for t in self.camera_topics.values()]
            recorded += [
                (cfg.joint_states_topic, "sensor_msgs/msg/JointState"),
                (cfg.twist_topic, "geometry_msgs/msg/TwistStamped"),
                (cfg.trajectory_topic, "trajectory_msgs/msg/JointTrajectory"),
            ]
            if cfg.ee_pose_topic:
                recorded.append((cfg.ee_pose_topic, "geometry_msgs/msg/PoseStamped"))
            for topic, msgtype in recorded:
                self._bag_connection(topic, msgtype)
        n.get_logger().info(
            f"recording {list(self.camera_topics.values())} at {cfg.fps:g} fps -> {cfg.output or '-'} {cfg.mcap or ''}"
        )

    # -- rosbag2 MCAP ------------------------------------------------------------------------------
    def _open_bag(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer  # optional: the bags extra
        from rosbags.typesys import Stores, get_typestore

        target = Path(self.config.mcap)
        self._bag_tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(self._bag_tmp, ignore_errors=True)
        self._bag_typestore = get_typestore(Stores.ROS2_KILTED if hasattr(Stores, "ROS2_KILTED") else Stores.LATEST)
        self._bag = Writer(self._bag_tmp, version=9, storage_plugin=StoragePlugin.MCAP)
        self._bag.open()

    def _bag_write(self, topic: str, msgtype: str, msg) -> None:
        if self._bag is None:
            return
        from rclpy.serialization import serialize_message  # ROS (optional): only a live node needs it

        conn = self._bag_connection(topic, msgtype)
        self._bag.write(conn, self.node.get_clock().now().nanoseconds, serialize_message(msg))

    def _bag_connection(self, topic: str, msgtype: str):
        conn = self._bag_connections.get(topic)
        if conn is None:
            # store the fully-qualified name (/prism/front/image_raw), as `ros2 bag record` does
            full_name = self.node.resolve_topic_name(topic)
            conn = self._bag.add_connection(full_name, msgtype, typestore=self._bag_typestore)
            self._bag_connections[topic] = conn
        return conn

    # -- inputs ------------------------------------------------------------------------------------
    def _received(self, name: str, info) -> None:
        """Note the publish time of an input's message; the episode's first row is sampled as soon
        as its inputs are complete (frame 0), not at the next tick, when frame 1 may have arrived."""
        stamp = int(info["source_timestamp"])
        self._published[name] = stamp
        self._first_published.setdefault(name, stamp)
        if self._episode_open and not self._rows and self._ending is None:
            self._sample()
            if self._rows:
                self._timer.reset()  # the following rows one period apart from this one

    def _on_image(self, cam: str, topic: str, msg, info) -> None:
        self._bag_write(topic, "sensor_msgs/msg/Image", msg)
        try:
            self._images[cam] = fit_square(image_to_numpy(msg), self.config.image_size)
        except ValueError as exc:
            self.node.get_logger().error(f"camera {cam}: {exc}", throttle_duration_sec=5.0)
            return
        self._received(f"camera:{cam}", info)

    def _on_joints(self, topic: str, msg, info) -> None:
        self._bag_write(topic, "sensor_msgs/msg/JointState", msg)
        if reorder_joints(msg.name, msg.position, self.config.joint_names) is not None:
            self._joint_msg = msg
            self._received("joint_states", info)

    def _on_pose(self, topic: str, msg, info) -> None:
        self._bag_write(topic, "geometry_msgs/msg/PoseStamped", msg)
        p = msg.pose.position
        self._ee = np.array([p.x, p.y, p.z])
        self._received("ee_pose", info)

    def _on_twist(self, topic: str, msg) -> None:
        self._bag_write(topic, "geometry_msgs/msg/TwistStamped", msg)
        t = msg.twist.linear
        self._twist = (monotonic(), np.array([t.x, t.y, t.z]))

    def _on_trajectory(self, topic: str, msg) -> None:
        self._bag_write(topic, "trajectory_msgs/msg/JointTrajectory", msg)
        if msg.points:
            target = reorder_joints(msg.joint_names, msg.points[-1].positions, self.config.joint_names)
            if target is not None:
                self._joint_target = target

    def _on_gripper(self, msg) -> None:
        if msg.data:
            self._gripper = float(np.clip(msg.data[0], -1, 1))

    def _on_gt_progress(self, msg, info) -> None:
        self._gt_progress, self._gt_seen = float(msg.data), True
        self._received("progress", info)

    def _on_gt_success(self, msg, info) -> None:
        self._gt_success, self._gt_seen = bool(msg.data), True
        self._received("success", info)

    def _on_episode_start(self, msg, info) -> None:
        self._close_ending_episode()
        self._finish_episode()
        start = int(info["source_timestamp"])
        # A latched start reaches a recorder that subscribed after it was sent: that episode began
        # (and may have ended) before this recorder was listening, so its opening frames are gone.
        missed = [name for name in self._required_inputs if self._first_published.get(name, start) >= start]
        if missed:
            self.node.get_logger().warning(
                f"episode {msg.data!r} started before this recorder received {missed}: not recorded "
                "(it would lack its opening frames); recording from the next episode/start"
            )
            return
        self._task = msg.data or self._task
        self._episode_start_ns = start
        self._episode_open = True
        self._gripper = -1.0
        self._joint_target = None

    def _on_episode_end(self, msg) -> None:
        # The final frame is sampled on the next tick, not now: the robot's last images, state and
        # progress travel on other topics and can be delivered after this message.
        if self._episode_open:
            self._ending = msg.data

    def _close_ending_episode(self) -> None:
        if self._ending is not None:
            outcome, self._ending = self._ending, None
            self._sample(final=True)
            self._finish_episode(outcome=outcome)

    # -- sampling ------------------------------------------------------------------------------------
    def _action(self) -> np.ndarray:
        cfg = self.config
        if cfg.command_interface == "twist":
            stamp, v = self._twist
            v = v if monotonic() - stamp <= cfg.command_timeout_s else np.zeros(3)
            return np.array([*velocity_to_ee_action(v, cfg.ee_max_step, cfg.policy_control_dt), self._gripper])
        target = self._joint_target
        if target is None and self._joint_msg is not None:
            target = reorder_joints(self._joint_msg.name, self._joint_msg.position, cfg.joint_names)
        joints = (
            normalise_joints(target, cfg.joint_lower, cfg.joint_upper)
            if target is not None
            else np.zeros(len(cfg.joint_names))
        )
        return np.array([*joints, self._gripper])

    def _state(self) -> np.ndarray | None:
        msg, cfg = self._joint_msg, self.config
        if msg is None or self._ee is None:
            return None
        q = reorder_joints(msg.name, msg.position, cfg.joint_names)
        qd = reorder_joints(msg.name, msg.velocity, cfg.joint_names) if len(msg.velocity) else None
        fingers = reorder_joints(msg.name, msg.position, cfg.finger_joint_names)
        return proprio_state(
            q,
            qd if qd is not None else np.zeros(len(q)),
            float(fingers.sum()) if fingers is not None else 0.0,
            self._ee,
        )

    def _tick(self) -> None:
        if self._ending is not None:
            self._close_ending_episode()
        else:
            self._sample()

    def _published_since_start(self, names) -> bool:
        """True when every input in ``names`` has a message published after the episode's start
        (older ones show the previous episode, e.g. its final state during the reset)."""
        return all(self._published.get(name, -1) >= self._episode_start_ns for name in names)

    def _sample(self, final: bool = False) -> None:
        cfg = self.config
        if not self._episode_open:
            if not (cfg.start_without_episode_message and len(self._images) == len(self.camera_topics)):
                return
            self._episode_open, self._episode_start_ns = True, 0
        if not self._published_since_start(self._required_inputs):
            return
        state = self._state()
        if state is None:
            return
        if self._gt_seen and not self._published_since_start(("progress", "success")):
            return  # this episode's first labels are still in flight: a row without them is unusable
        self._rows.append(
            {
                "frames": {c: self._images[c] for c in self.camera_topics},
                "state": state,
                "action": np.zeros_like(self._action()) if final else self._action(),
                "progress": self._gt_progress,
                "success": self._gt_success,
            }
        )

    def _finish_episode(self, outcome: str | None = None) -> None:
        rows, self._rows = self._rows, []
        self._episode_open = False
        if self._gt_seen:  # rows sampled before the first ground-truth message of the session
            rows = [r for r in rows if r["progress"] is not None and r["success"] is not None]
        if len(rows) < self.config.min_frames:
            if rows:
                self.node.get_logger().warning(f"dropping an episode with {len(rows)} frame(s)")
            return
        n = len(rows)
        done = np.zeros(n, dtype=bool)
        done[-1] = True  # the last frame is the final observation (zero action, done)
        has_gt = all(r["progress"] is not None for r in rows)
        success = np.array([bool(r["success"]) for r in rows]) if all(r["success"] is not None for r in rows) else None
        if outcome not in ("success", "partial", "fail"):
            outcome = None if success is None else ("success" if success[-1] else "fail")
        episode = Episode(
            task=self._task or "unknown task",
            frames={c: np.stack([r["frames"][c] for r in rows]) for c in self.camera_topics},
            fps=self.config.fps,
            state=np.stack([r["state"] for r in rows]).astype(np.float32),
            action=np.stack([r["action"] for r in rows]).astype(np.float32),
            done=done,
            success=success,
            progress=np.array([r["progress"] for r in rows], dtype=np.float32) if has_gt else None,
            outcome=outcome,
            meta={"source": "prism-ros-record", "topics": self.camera_topics},
        )
        if self.config.output:
            if self._writer is None:
                cfg = self.config
                action_names = (
                    ["ee_dx", "ee_dy", "ee_dz", "gripper"]
                    if cfg.command_interface == "twist"
                    else [f"joint{i + 1}" for i in range(len(cfg.joint_names))] + ["gripper"]
                )
                self._writer = LeRobotWriter(
                    cfg.output,
                    fps=cfg.fps,
                    cameras=list(self.camera_topics),
                    image_size=(cfg.image_size, cfg.image_size),
                    state_names=STATE_NAMES,
                    action_names=action_names,
                    robot_type="panda",
                    overwrite=cfg.overwrite,
                )
                self._writer.__enter__()
            try:
                self._writer.add_episode(episode)
            except ValueError as exc:  # refused (e.g. labels unlike the earlier episodes'): keep recording
                self.node.get_logger().error(f"episode not written: {exc}")
                return
        self.episodes_written += 1
        self.node.get_logger().info(f"episode {self.episodes_written} recorded: {n} frames, outcome {outcome}")
        if self.config.episodes and self.episodes_written >= self.config.episodes:
            self.finished = True

    def close(self) -> None:
        self._close_ending_episode()
        if self._episode_open and self._episode_start_ns == 0:
            self._finish_episode()  # opened without an episode/start: shutdown is its only boundary
        elif self._episode_open:
            # stopped mid-episode: writing it would add an episode that never reached its end
            self.node.get_logger().warning(
                f"stopped during an episode ({len(self._rows)} frames, no episode/end): not recorded"
            )
            self._rows, self._episode_open = [], False
        if self._writer is not None:
            self._writer.__exit__(None, None, None)
            self._writer = None
            self.node.get_logger().info(f"dataset written: {self.config.output}")
        if self._bag is not None:
            self._bag.close()
            self._bag = None
            target = Path(self.config.mcap)
            if target.exists():
                shutil.rmtree(target)
            os.replace(self._bag_tmp, target)


def main(argv=None) -> int:
    return run_node(RecorderNode, RecorderConfig, "prism-ros-record", NODE_NAME, SUMMARY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
