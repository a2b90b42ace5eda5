"""ROS 2 bridge figures: observation-to-command latency of ``prism-policy`` and its maximum control rate.

    .venv/bin/python bench/bridge_bench.py                   # 3 cameras x 128 px at 30 Hz, trivial policy
    .venv/bin/python bench/bridge_bench.py --policy runs/reach_pixels --seconds 20

Everything runs as separate processes over real Fast DDS (localhost): a camera-driver process
publishes ``front``/``side``/``wrist`` images (plus joint states and an end-effector pose), the
``prism-policy`` console script consumes them, and this script listens to the commands and the
node's status. Latency = image header stamp (camera driver) -> command publish (policy node),
as the node reports it per command; it includes DDS transport, image decoding/resizing, the
policy forward and the safety checks. The maximum control rate is the command rate the node
actually sustains when asked for far more than it can do.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from robot_bridge.command_mapping import PANDA_JOINT_NAMES
from robot_bridge.ros_utils import numpy_to_image, sensor_qos

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent


class BenchPolicy:
    """A policy that costs nothing: isolates the node's own overhead."""

    action_mode = "ee_delta"

    def __init__(self, cameras=("front", "side", "wrist"), image_size=128):
        self.cameras = tuple(cameras)
        self.image_size = image_size

    def act(self, obs):
        assert all(obs["pixels"][c].shape == (self.image_size, self.image_size, 3) for c in self.cameras)
        return np.array([0.1, 0.0, 0.0, -1.0])


def camera_driver(namespace: str, rate: float, size: int) -> None:
    """Child process: a robot driver stand-in (3 cameras, joint states, EE pose)."""
    import rclpy  # ROS (optional): only the node processes need it
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image, JointState

    rclpy.init()
    node = rclpy.create_node("bench_driver", namespace=namespace)
    pubs = {c: node.create_publisher(Image, f"{c}/image_raw", sensor_qos()) for c in ("front", "side", "wrist")}
    joints = node.create_publisher(JointState, "/joint_states", 10)
    pose = node.create_publisher(PoseStamped, "ee_pose", 10)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(8)]
    tick = [0]

    def publish():
        tick[0] += 1
        stamp = node.get_clock().now().to_msg()
        for cam, pub in pubs.items():
            pub.publish(numpy_to_image(frames[tick[0] % len(frames)], stamp, cam))
        js = JointState(name=list(PANDA_JOINT_NAMES), position=[0.0] * 7, velocity=[0.0] * 7)
        js.header.stamp = stamp
        joints.publish(js)
        p = PoseStamped()
        p.header.stamp = stamp
        p.pose.position.x, p.pose.position.z = 0.5, 0.3
        pose.publish(p)

    node.create_timer(1.0 / rate, publish)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


def run_case(policy: str, control_rate: float, camera_rate: float, size: int, seconds: float, device: str) -> dict:
    import rclpy  # ROS (optional): only the node processes need it
    from geometry_msgs.msg import TwistStamped
    from std_msgs.msg import String

    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(random.randint(1, 100)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]),
        MUJOCO_GL="egl",
    )
    ns = "/bench"
    driver = subprocess.Popen([sys.executable, __file__, "--driver", ns, str(camera_rate), str(size)], env=env)
    node = subprocess.Popen(
        [
            str(BIN / "prism-policy"),
            "--ros-args",
            "-r",
            f"__ns:={ns}",
            "-p",
            f"policy:={policy}",
            "-p",
            f"control_rate_hz:={control_rate}",
            "-p",
            "wait_for_episode_start:=false",
            "-p",
            "episode_time_limit_s:=0.0",
            "-p",
            f"device:={device}",
            "-p",
            "stale_timeout_s:=1.0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    listener = rclpy.create_node("bench_listener", context=context)
    commands: list[float] = []
    latencies: list[float] = []
    listener.create_subscription(
        TwistStamped, f"{ns}/servo_node/delta_twist_cmds", lambda m: commands.append(time.monotonic()), 100
    )

    def on_status(msg):
        status = json.loads(msg.data)
        if "obs_to_command_ms" in status:
            latencies.append(status["obs_to_command_ms"])

    listener.create_subscription(String, f"{ns}/policy/status", on_status, 100)
    from rclpy.executors import SingleThreadedExecutor  # ROS (optional): only the node processes need it

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 120
        while len(commands) < 20 and time.monotonic() < deadline:  # warm-up: processes started, loop running
            executor.spin_once(timeout_sec=0.05)
            if node.poll() is not None:
                raise RuntimeError(f"prism-policy exited: {node.stderr.read()[-2000:]}")
        commands.clear()
        latencies.clear()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            executor.spin_once(timeout_sec=0.05)
        elapsed = time.monotonic() - start
    finally:
        for proc in (node, driver):
            proc.send_signal(2)
        for proc in (node, driver):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        executor.shutdown()
        listener.destroy_node()
        rclpy.shutdown(context=context)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "commands_per_s": len(commands) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "n": len(latencies),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":
        camera_driver(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--policy",
        default="python:bridge_bench:BenchPolicy",
        help="policy spec for prism-policy (default: a zero-cost policy, node overhead only)",
    )
    parser.add_argument("--size", type=int, default=128, help="camera image size (pixels)")
    parser.add_argument("--camera-rate", type=float, default=30.0, help="camera frame rate (Hz)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per case")
    parser.add_argument("--max-rates", default="100,400", help="control rates requested to find the sustained maximum")
    parser.add_argument("--device", default="cpu", help="torch device for a learned policy")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    print(
        f"prism-policy bench: 3 cameras x {args.size} px at {args.camera_rate:g} Hz, policy {args.policy}, "
        f"{os.cpu_count()} CPUs (shared machines give noisy figures)"
    )
    print(f"{'requested Hz':>12} {'achieved cmd/s':>15} {'obs->cmd p50 ms':>16} {'p99 ms':>8} {'samples':>8}")
    for rate in [30.0] + [float(r) for r in args.max_rates.split(",") if r]:
        r = run_case(args.policy, rate, args.camera_rate, args.size, args.seconds, args.device)
        print(
            f"{rate:12.0f} {r['commands_per_s']:15.1f} {r['p50_ms']:16.2f} {r['p99_ms']:8.2f} {r['n']:8d}", flush=True
        )


if __name__ == "__main__":
    main()
