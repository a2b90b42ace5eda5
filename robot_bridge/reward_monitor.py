"""``prism-reward-monitor``: live task progress of a running robot from its camera topics.

Subscribes to the camera topics, runs any reward model through the common interface
(``reward_models.registry.load_progress_model`` + ``ProgressTracker``: one encoder call per
update), publishes progress (``std_msgs/Float32``) and success (``std_msgs/Bool``) and logs them.
Episodes start with each ``episode/start`` message (its text is the task instruction); the first
complete set of frames after it is the start reference.

It also publishes its confidence in Φ (``std_msgs/Float32`` on ``reward/confidence``):
1 − 2·spread, where the spread is the tracker's ``phi_std`` (at most 0.5 for anything in [0, 1]),
so 1 is "no doubt" and 0 is "could be anything". With a calibrated GRM (``prism-reward
calibrate``) frames unlike the calibration data are flagged, and a throttled warning says so:
Φ of such frames is an extrapolation.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from episodes.camera_map import parse_camera_map
from reward_models.oracle import OracleProgressModel
from reward_models.registry import load_progress_model
from reward_models.tracker import FusionConfig, ProgressTracker
from robot_bridge import topics
from robot_bridge.images import fit_square
from robot_bridge.node_config import require_positive
from robot_bridge.ros_utils import (
    camera_topic_map,
    declare_config,
    image_to_numpy,
    latched_qos,
    monotonic,
    run_node,
    sensor_qos,
)

NODE_NAME = "prism_reward_monitor"


@dataclass
class RewardMonitorConfig:
    """Parameters of ``prism-reward-monitor``."""

    model: str = "oracle"
    """Reward model spec for ``reward_models.registry.load_progress_model``: a GRM checkpoint dir
    (or ``grm:DIR``), ``clip:...``, ``vlm:...``, or ``oracle`` (SIM-ONLY: ground truth from
    ``sim/progress``)."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda."""
    fusion: str = "fused"
    """Progress reconstruction: fused, mean, incremental, forward, backward."""
    cameras: tuple[str, ...] = ()
    """Camera views to feed the model (default: the model's own, else front, side, wrist)."""
    camera_topics: tuple[str, ...] = ()
    """Per-camera topic overrides ``camera=/topic`` (default ``<camera>/image_raw``)."""
    camera_map: tuple[str, ...] = ()
    """The robot's camera names onto the model's views, ``robot_camera=view`` (e.g.
    ``cam_high=front``): view ``front`` then reads ``cam_high/image_raw`` (unless ``camera_topics``
    names another topic for ``front``). The same rule as ``prism-reward eval --camera-map``."""
    image_size: int = 0
    """Resize (centre-crop + resize) frames to this square size; 0: the model's size if it has
    one, else as received."""
    rate_hz: float = 10.0
    """Progress updates per second (each is one batched model call)."""
    task: str = ""
    """Instruction used until an ``episode/start`` message names one."""
    start_without_episode_message: bool = False
    """Start tracking when the first frames arrive, without waiting for ``episode/start``."""
    progress_topic: str = topics.REWARD_PROGRESS
    """std_msgs/Float32 progress output."""
    success_topic: str = topics.REWARD_SUCCESS
    """std_msgs/Bool success output."""
    confidence_topic: str = topics.REWARD_CONFIDENCE
    """std_msgs/Float32 confidence output: 1 − 2·spread of Φ (1: certain, 0: no idea)."""
    ood_warn_period_s: float = 5.0
    """At most one out-of-distribution warning per this many seconds (calibrated GRMs only)."""
    log_csv: str = ""
    """Append one row per update (time, episode, task, progress, success, components) to this CSV."""
    stale_timeout_s: float = 1.0
    """Frames older than this are not scored (the monitor pauses instead of scoring stale views)."""

    def __post_init__(self) -> None:
        require_positive(self, "rate_hz")
        require_positive(self, "ood_warn_period_s")


SUMMARY = __doc__


def mapped_camera_topics(
    views: tuple[str, ...], camera_map: tuple[str, ...], overrides: tuple[str, ...]
) -> dict[str, str]:
    """view -> topic: a view that ``camera_map`` feeds from a robot camera reads that camera's default
    topic; explicit ``camera_topics`` entries win."""
    feeds = {view: source for source, view in parse_camera_map(list(camera_map)).items()}
    unknown = sorted(set(feeds) - set(views))
    if unknown:
        raise ValueError(f"camera_map maps onto {unknown}, which are not the model's views {list(views)}")
    defaults = [f"{view}={feeds[view]}/image_raw" for view in views if view in feeds]
    named = {entry.split("=", 1)[0].strip() for entry in overrides}
    return camera_topic_map(views, [d for d in defaults if d.split("=", 1)[0] not in named] + list(overrides))


def confidence_from_spread(phi_std: float) -> float:
    """1 − 2·spread, clipped to [0, 1]: the spread of anything in [0, 1] is at most 0.5."""
    return float(np.clip(1.0 - 2.0 * phi_std, 0.0, 1.0))


class RewardMonitorNode:
    def __init__(self, config: RewardMonitorConfig | None = None, node=None) -> None:
        import rclpy.node  # ROS (optional): only a live node needs it
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, Float32, String

        self.node = node or rclpy.node.Node(NODE_NAME)
        self.config = cfg = config or declare_config(self.node, RewardMonitorConfig)
        self._msgs = dict(Float32=Float32, Bool=Bool)
        self.model = load_progress_model(cfg.model, device=cfg.device)
        self.is_oracle = isinstance(self.model, OracleProgressModel)
        self.cameras = (
            tuple(cfg.cameras)
            or tuple(getattr(self.model, "cameras", None) or ())
            or (() if self.is_oracle else ("front", "side", "wrist"))
        )
        self.image_size = cfg.image_size or int(getattr(self.model, "image_size", 0) or 0)
        self.tracker = ProgressTracker(self.model, n=1, fusion=FusionConfig(mode=cfg.fusion))
        n = self.node
        self._frames: dict[str, tuple[float, np.ndarray]] = {}
        self._gt_progress: tuple[float, float] | None = None
        qos = sensor_qos()
        for cam, topic in mapped_camera_topics(self.cameras, cfg.camera_map, cfg.camera_topics).items():
            n.create_subscription(Image, topic, lambda msg, cam=cam: self._on_image(cam, msg), qos)
        if self.is_oracle:
            n.create_subscription(Float32, topics.SIM_PROGRESS, self._on_gt_progress, 10)
        n.create_subscription(String, topics.EPISODE_START, self._on_episode_start, latched_qos())
        self.progress_pub = n.create_publisher(Float32, cfg.progress_topic, 10)
        self.success_pub = n.create_publisher(Bool, cfg.success_topic, 10)
        self.confidence_pub = n.create_publisher(Float32, cfg.confidence_topic, 10)
        self.n_ood_updates = 0
        calibration = getattr(self.model, "confidence", None)
        self.has_ood = calibration is not None and calibration.ood is not None
        self.task = cfg.task
        self.episode = -1
        self._started = False
        self._episode_requested_at: float | None = None if not cfg.start_without_episode_message else 0.0
        self.n_updates = 0
        self.update_seconds: list[float] = []
        self._csv = None
        if cfg.log_csv:
            path = Path(cfg.log_csv)
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            self._csv_file = open(path, "a", newline="")
            self._csv = csv.writer(self._csv_file)
            if new:
                self._csv.writerow(
                    [
                        "time",
                        "episode",
                        "task",
                        "progress",
                        "success",
                        "incremental",
                        "forward",
                        "backward",
                        "weight",
                        "phi_std",
                        "ood_distance",
                    ]
                )
        n.create_timer(1.0 / cfg.rate_hz, self._tick)
        n.get_logger().info(
            f"reward model {getattr(self.model, 'model_id', cfg.model)} on cameras {list(self.cameras)} "
            f"at {cfg.rate_hz:g} Hz -> {cfg.progress_topic}, {cfg.success_topic}, {cfg.confidence_topic}"
            + ("" if self.has_ood else " (no OOD check: the model has no calibration; see prism-reward calibrate)")
        )

    # -- inputs -----------------------------------------------------------------------------------
    def _on_image(self, cam: str, msg) -> None:
        try:
            image = image_to_numpy(msg)
        except ValueError as exc:
            self.node.get_logger().error(f"camera {cam}: {exc}", throttle_duration_sec=5.0)
            return
        if self.image_size:
            image = fit_square(image, self.image_size)
        self._frames[cam] = (monotonic(), image)

    def _on_gt_progress(self, msg) -> None:
        self._gt_progress = (monotonic(), float(msg.data))

    def _on_episode_start(self, msg) -> None:
        self.task = msg.data or self.task
        # Frames received before this message may belong to the previous episode: start from the
        # first complete set that arrives after it.
        self._frames.clear()
        self._gt_progress = None
        self._episode_requested_at = monotonic()
        self._started = False

    # -- scoring ------------------------------------------------------------------------------------
    def _observation(self) -> dict | None:
        now = monotonic()
        limit = self.config.stale_timeout_s
        obs: dict = {}
        for cam in self.cameras:
            entry = self._frames.get(cam)
            if entry is None or now - entry[0] > limit:
                return None
            obs[cam] = entry[1][None]
        if self.is_oracle:
            if self._gt_progress is None or now - self._gt_progress[0] > limit:
                return None
            obs["progress"] = np.array([self._gt_progress[1]])
        return obs

    def _tick(self) -> None:
        if self._episode_requested_at is None:
            return
        obs = self._observation()
        if obs is None:
            return
        t0 = time.perf_counter()
        if not self._started:
            self.tracker.reset([0], [self.task], start_obs=obs)
            self._started = True
            self.episode += 1
            phi = np.zeros(1)
            self.node.get_logger().info(f"episode {self.episode}: tracking {self.task!r}")
        else:
            phi = self.tracker.step(obs)
        self.update_seconds.append(time.perf_counter() - t0)
        self.n_updates += 1
        progress, success = float(phi[0]), bool(self.tracker.success[0])
        spread = float(self.tracker.phi_std[0])
        self.progress_pub.publish(self._msgs["Float32"](data=progress))
        self.success_pub.publish(self._msgs["Bool"](data=success))
        self.confidence_pub.publish(self._msgs["Float32"](data=confidence_from_spread(spread)))
        if bool(self.tracker.ood[0]):
            self.n_ood_updates += 1
            self.node.get_logger().warning(
                f"episode {self.episode}: frames unlike the reward model's calibration data (OOD distance "
                f"{float(self.tracker.ood_distance[0]):.1f} > {self.model.confidence.ood.threshold:.1f}); "
                f"progress {progress:.3f} is an extrapolation ({self.n_ood_updates} OOD update(s) so far)",
                throttle_duration_sec=self.config.ood_warn_period_s,
            )
        if self._csv is not None:
            comp = self.tracker.components
            self._csv.writerow(
                [f"{time.time():.3f}", self.episode, self.task, f"{progress:.4f}", int(success)]
                + [f"{float(comp[k][0]):.4f}" for k in ("incremental", "forward", "backward", "weight")]
                + [f"{spread:.4f}", f"{float(self.tracker.ood_distance[0]):.3f}"]
            )
            self._csv_file.flush()
        if self.n_updates % max(1, int(self.config.rate_hz * 2)) == 0:
            self.node.get_logger().info(f"episode {self.episode} progress {progress:.3f} success {success}")

    def close(self) -> None:
        if self._csv is not None:
            self._csv_file.close()
            self._csv = None


def main(argv=None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    return run_node(RewardMonitorNode, RewardMonitorConfig, "prism-reward-monitor", NODE_NAME, SUMMARY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
