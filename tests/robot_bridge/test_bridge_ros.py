"""The ROS 2 bridge over real DDS: every node a separate process, started as a console script with
the same parameter files the launch files use (``--ros-args --params-file``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import CONFIG, NAMESPACE

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

TWIST = f"{NAMESPACE}/servo_node/delta_twist_cmds"
STATUS = f"{NAMESPACE}/policy/status"


def _msgs():
    from geometry_msgs.msg import TwistStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, Empty, Float32, String
    from trajectory_msgs.msg import JointTrajectory

    return dict(TwistStamped=TwistStamped, JointState=JointState, Bool=Bool, Empty=Empty, Float32=Float32,
                String=String, JointTrajectory=JointTrajectory)


def _moving(twist_msg) -> bool:
    v = twist_msg.twist.linear
    return abs(v.x) + abs(v.y) + abs(v.z) > 1e-9


def test_closed_loop_reach_monitor_and_recorder(processes, probe, tmp_path):
    """Twin + scripted expert + oracle monitor + recorder: the reach task is completed over topics,
    the monitor's progress rises and its success flips, and the recorded session reads back."""
    m = _msgs()
    sim_yaml = CONFIG / "sim.yaml"
    dataset, bag = tmp_path / "ros_reach", tmp_path / "ros_reach_bag"
    probe.watch(TWIST, m["TwistStamped"])
    probe.watch(f"{NAMESPACE}/reward/progress", m["Float32"])
    probe.watch(f"{NAMESPACE}/reward/success", m["Bool"])
    probe.watch(f"{NAMESPACE}/episode/end", m["String"])
    processes.start("monitor", "prism-reward-monitor", params_file=sim_yaml)
    processes.start("recorder", "prism-ros-record", params_file=sim_yaml,
                    params={"output": dataset, "mcap": bag, "episodes": 2})
    processes.start("policy", "prism-policy", params_file=sim_yaml)
    # The first episode waits until the recorder subscribes to the cameras, so it records from frame 0
    # (the scripted expert and the oracle monitor read the twin's state topics, not cameras).
    processes.start("twin", "prism-sim-robot", params_file=sim_yaml, params={"seed": 3, "wait_for_subscribers": 1})

    recorder = processes.procs["recorder"]
    assert probe.spin_until(lambda: recorder.poll() is not None, timeout=150), (
        "recorder did not finish 2 episodes:\n" + processes.log("twin")[-2000:] + processes.log("policy")[-2000:])
    assert recorder.returncode == 0, processes.log("recorder")[-3000:]
    probe.spin(0.3)
    ends = [msg.data for _, msg in probe.messages[f"{NAMESPACE}/episode/end"]]
    assert all(e == "success" for e in ends), ends  # (the dataset below proves both episodes succeeded)
    twists = [msg for _, msg in probe.messages[TWIST]]
    assert sum(_moving(t) for t in twists) >= 10, "the policy node sent (almost) no motion commands"
    speeds = [np.linalg.norm([t.twist.linear.x, t.twist.linear.y, t.twist.linear.z]) for t in twists]
    assert max(speeds) <= 0.5 + 1e-6  # sim.yaml max_linear_speed
    progress = [msg.data for _, msg in probe.messages[f"{NAMESPACE}/reward/progress"]]
    assert progress and min(progress) < 0.3 and max(progress) > 0.95, progress
    success = [msg.data for _, msg in probe.messages[f"{NAMESPACE}/reward/success"]]
    assert any(success) and not all(success), f"monitor success never flipped: {success}"

    import episodes

    import sim

    reach = sim.make("reach", cameras=())
    instructions = set(reach.unwrapped.instructions)
    reach.close()
    ds = episodes.open_dataset(dataset)
    assert ds.num_episodes == 2 and sorted(ds.cameras) == ["front", "side", "wrist"]
    # Both episodes are complete from their first frame to the final one (the first episode once lost
    # its opening frames: the recorder imported the dataset stack inside its first episode-start callback).
    for index in range(2):
        ep = ds.load_episode(index)
        # ~13-18 frames at the twin's 20 Hz; the lost-start bug left 1-2 frames starting at progress 0.35-1.0
        assert ep.length >= 8 and ep.task in instructions, f"episode {index}: {ep.length} frames"
        assert ep.progress is not None and ep.progress[-1] > 0.95 and ep.progress[0] < 0.3, (
            f"episode {index} ({ep.length} frames) progress {ep.progress}\n" + processes.log("recorder")[-3000:]
            + processes.log("twin")[-2000:])
        assert ep.success[-1] and ep.done[-1] and not ep.done[0]
        assert np.allclose(ep.action[-1], 0.0)  # the final observation carries a zero action
        assert np.abs(ep.action[:-1, :3]).max() > 0.1  # the expert's commands, back in action units
        front = ep.frames["front"]
        assert front.std() > 5 and np.abs(front[-1].astype(int) - front[0].astype(int)).mean() > 0.5
    # the MCAP bag holds the raw camera and joint messages
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
    assert topics[f"{NAMESPACE}/front/image_raw"] > 10 and topics["/joint_states"] > 10

    _score_with_prism_reward_eval(dataset, tmp_path)


def _score_with_prism_reward_eval(dataset: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "prism-reward"
    help_text = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120).stdout \
        if exe.exists() else ""
    if "eval" not in help_text:
        warnings.warn("prism-reward eval is not available yet: the recorded dataset was only read back "
                      "with episodes.open_dataset", stacklevel=2)
        return
    out = tmp_path / "report"
    run = subprocess.run([str(exe), "eval", "--model", "oracle", "--data", str(dataset), "--out", str(out)],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["n_episodes"] == 2 and not report["skipped"]
    assert "voc_plus" in next(iter(report["models"].values()))["metrics"]


def _start_commanding_policy(processes, policy: str, extra: dict | None = None):
    processes.start_camera(cameras=("front",))
    params = {"policy": policy, "ee_pose_topic": "", "wait_for_episode_start": False, "stale_timeout_s": 0.5,
              "control_rate_hz": 20.0, "episode_time_limit_s": 0.0}
    params.update(extra or {})
    processes.start("policy", "prism-policy", params=params)


def test_watchdog_stops_commands_when_the_camera_dies(processes, probe):
    m = _msgs()
    probe.watch(TWIST, m["TwistStamped"])
    _start_commanding_policy(processes, "python:bridge_fault_policies:constant_policy")
    assert probe.spin_until(lambda: sum(_moving(msg) for _, msg in probe.messages[TWIST]) >= 10, 60, processes), \
        processes.log("policy")[-2000:]
    killed_at = time.monotonic()
    processes.kill("camera")
    probe.spin(2.0)
    after = [(t, msg) for t, msg in probe.messages[TWIST] if t > killed_at]
    moving_after = [t - killed_at for t, msg in after if _moving(msg)]
    stop_delay = max(moving_after, default=0.0)
    assert stop_delay <= 0.5 + 0.05 + 0.25, f"motion commands continued {stop_delay:.3f} s after the camera died"
    holds = [t for t, msg in after if not _moving(msg)]
    assert len(holds) == 1, "expected exactly one hold (zero twist) after the watchdog fired"
    assert not [t for t, msg in after if t > holds[0]], "commands after the hold"
    assert "stale: camera:front" in processes.log("policy")


def test_estop_latches_and_resets(processes, probe):
    m = _msgs()
    probe.watch(TWIST, m["TwistStamped"])
    estop = probe.publisher(f"{NAMESPACE}/estop", m["Bool"])
    reset = probe.publisher(f"{NAMESPACE}/estop_reset", m["Empty"])
    _start_commanding_policy(processes, "python:bridge_fault_policies:constant_policy")
    assert probe.spin_until(lambda: sum(_moving(msg) for _, msg in probe.messages[TWIST]) >= 5, 60, processes)
    assert probe.spin_until(lambda: estop.get_subscription_count() > 0 and reset.get_subscription_count() > 0, 10)
    pressed_at = time.monotonic()
    estop.publish(m["Bool"](data=True))
    probe.spin(1.0)
    moving_after = [t - pressed_at for t, msg in probe.messages[TWIST] if t > pressed_at and _moving(msg)]
    assert max(moving_after, default=0.0) < 0.15, f"motion {moving_after} after the e-stop"
    holds = [t for t, msg in probe.messages[TWIST] if t > pressed_at and not _moving(msg)]
    assert holds, "no hold command"
    reset.publish(m["Empty"]())  # a reset while the button is still pressed is refused
    probe.spin(0.7)
    estop.publish(m["Bool"](data=False))  # releasing the button alone does not resume motion
    probe.spin(0.7)
    assert not [t for t, msg in probe.messages[TWIST] if t > holds[0] and _moving(msg)]
    assert "e-stop reset refused" in processes.log("policy")
    released_at = time.monotonic()
    reset.publish(m["Empty"]())
    assert probe.spin_until(
        lambda: any(_moving(msg) for t, msg in probe.messages[TWIST] if t > released_at), 5, processes), \
        "commands did not resume after release + reset"


def test_nan_policy_publishes_nothing(processes, probe):
    m = _msgs()
    probe.watch(TWIST, m["TwistStamped"])
    probe.watch(STATUS, m["String"])
    probe.watch(f"{NAMESPACE}/gripper_controller/commands", __import__("std_msgs.msg").msg.Float64MultiArray)
    _start_commanding_policy(processes, "python:bridge_fault_policies:nan_policy")

    def status_with_fault():
        return any(json.loads(msg.data).get("fault") for _, msg in probe.messages[STATUS])

    assert probe.spin_until(status_with_fault, 60, processes), processes.log("policy")[-2000:]
    probe.spin(1.5)
    assert probe.messages[TWIST] == [], "a NaN policy must never produce a command"
    assert probe.messages[f"{NAMESPACE}/gripper_controller/commands"] == []
    last = json.loads(probe.messages[STATUS][-1][1].data)
    assert last["n_invalid"] >= 3 and last["verdict"] == "silent"


def test_joint_trajectory_interface_drives_the_twin(processes, probe):
    """JointTrajectory path: policy in joint mode -> twin (joint trajectory controller style)."""
    m = _msgs()
    probe.watch("/joint_states", m["JointState"])
    probe.watch(f"{NAMESPACE}/joint_trajectory_controller/joint_trajectory", m["JointTrajectory"])
    trajectory_topic = f"{NAMESPACE}/joint_trajectory_controller/joint_trajectory"
    # policy first, and matched with the probe before the twin exists: no command can be missed
    processes.start("policy", "prism-policy", params={
        "policy": "python:bridge_fault_policies:joint_target_policy", "max_joint_step": 0.05})
    assert probe.spin_until(lambda: probe.node.count_publishers(trajectory_topic) > 0, 60, processes)
    probe.spin(0.5)
    processes.start("twin", "prism-sim-robot", params={"command_interface": "joint_trajectory", "cameras": ["front"],
                                                        "image_size": 64, "max_episode_steps": 2000})
    assert probe.spin_until(lambda: len(probe.messages[trajectory_topic]) > 0, 90, processes), \
        processes.log("policy")[-2000:] + processes.log("twin")[-2000:]
    target = 0.6  # joint_target_policy asks joint 1 for 0.6 rad
    assert probe.spin_until(lambda: abs(probe.messages["/joint_states"][-1][1].position[0] - target) < 0.05,
                            30, processes), probe.messages["/joint_states"][-1][1].position[0]
    trajectories = [msg for _, msg in probe.messages[trajectory_topic]]
    # without the per-command step clamp every message would command 0.6 rad at once
    assert sum(t.points[0].positions[0] < target - 0.05 for t in trajectories) >= 3
    assert max(t.points[0].positions[0] for t in trajectories) <= target + 1e-6
    assert list(trajectories[0].joint_names) == [f"panda_joint{i}" for i in range(1, 8)]


def test_bad_parameters_fail_clearly(processes, tmp_path):
    proc = processes.start("policy", "prism-policy", params={"policy": str(tmp_path / "missing_run")})
    assert proc.wait(60) == 2
    assert "does not exist" in processes.log("policy")
    proc = processes.start("recorder", "prism-ros-record", params={})
    assert proc.wait(60) == 2
    assert "nothing to record into" in processes.log("recorder")


def test_recorder_rows_wait_for_this_episodes_labels(probe, tmp_path):
    """The recorder's callbacks driven in a fixed order (no DDS timing): a frame sampled after an
    episode start but before that episode's first ground-truth message is not recorded, an
    episode/end is closed on the next tick with the labels that arrived after it, and every
    episode of the session carries labels (an unlabelled first episode once made the writer
    refuse the second one and the recorder crash)."""
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, Float32, String

    import episodes
    from robot_bridge.command_mapping import PANDA_FINGER_NAMES, PANDA_JOINT_NAMES
    from robot_bridge.recorder import RecorderConfig, RecorderNode
    from robot_bridge.ros_utils import numpy_to_image

    node = probe.node  # a live rclpy node (the fixture owns its context); nothing is spun
    out = tmp_path / "rec"
    rec = RecorderNode(RecorderConfig(output=str(out), cameras=("front",), image_size=16, fps=20.0), node=node)
    rng = np.random.default_rng(0)

    def frame(progress: float | None, success: bool | None = None) -> None:
        stamp = node.get_clock().now().to_msg()
        rec._on_image("front", "front/image_raw",
                      numpy_to_image(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), stamp, "front"))
        js = JointState(name=list(PANDA_JOINT_NAMES + PANDA_FINGER_NAMES), position=[0.1] * 9, velocity=[0.0] * 9)
        rec._on_joints("/joint_states", js)
        rec._on_pose("ee_pose", PoseStamped())
        if progress is not None:
            rec._on_gt_progress(Float32(data=progress))
            rec._on_gt_success(Bool(data=bool(success)))

    try:
        for episode in range(2):
            frame(0.9, False)  # the previous state's labels, published before the start
            rec._on_episode_start(String(data="reach the yellow ball"))
            frame(None)  # images and joints of step 1 arrive before its labels ...
            rec._tick()  # ... so this sample waits
            assert len(rec._rows) == 0
            for p in (0.1, 0.5, 0.9):
                frame(p, False)
                rec._tick()
            rec._on_episode_end(String(data="success"))  # the end overtakes the last labels
            frame(1.0, True)
            rec._tick()  # the final frame is sampled now, with them
            assert rec.episodes_written == episode + 1
    finally:
        rec.close()
    ds = episodes.open_dataset(out)
    assert ds.num_episodes == 2
    for index in range(2):
        ep = ds.load_episode(index)
        np.testing.assert_allclose(ep.progress, [0.1, 0.5, 0.9, 1.0], atol=1e-6)
        assert list(ep.success) == [False, False, False, True] and ep.outcome == "success"
        assert ep.done[-1] and np.allclose(ep.action[-1], 0.0)
