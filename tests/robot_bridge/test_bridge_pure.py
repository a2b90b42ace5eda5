"""Bridge pieces that need no ROS: parameter coercion/help, image buffers, action<->command maps."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_bridge.command_mapping import (
    PANDA_LOWER,
    PANDA_UPPER,
    denormalise_joints,
    ee_action_to_velocity,
    normalise_joints,
    reorder_joints,
    ros_joint_name,
    velocity_to_ee_action,
)
from robot_bridge.images import fit_square, rgb_from_buffer
from robot_bridge.node_config import build_config, help_text, parameter_specs
from robot_bridge.policy_node import PolicyNodeConfig
from robot_bridge.policy_sources import load_bridge_policy
from robot_bridge.recorder import RecorderConfig
from robot_bridge.reward_monitor import RewardMonitorConfig
from robot_bridge.sim_robot import SimRobotConfig

CONFIGS = [SimRobotConfig, PolicyNodeConfig, RewardMonitorConfig, RecorderConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_parameter_is_documented_in_help(cls):
    text = help_text(cls, "prog", "node", "summary")
    for name, _kind, _default, doc in parameter_specs(cls):
        assert doc, f"{cls.__name__}.{name} has no docstring"
        assert f"  {name} (" in text


def test_parameter_coercion_and_errors():
    cfg = build_config(
        PolicyNodeConfig,
        {
            "control_rate_hz": 30,
            "workspace_min": [0, -1, 0],
            "camera_topics": "front=/a,wrist=/b",
            "use_privileged_state": "true",
        },
    )
    assert cfg.control_rate_hz == 30.0 and isinstance(cfg.control_rate_hz, float)
    assert cfg.workspace_min == (0.0, -1.0, 0.0)
    assert cfg.camera_topics == ("front=/a", "wrist=/b") and cfg.use_privileged_state is True
    with pytest.raises(ValueError, match="'control_rate_hz'"):
        build_config(PolicyNodeConfig, {"control_rate_hz": "fast"})
    with pytest.raises(ValueError, match="'command_interface' must be one of"):
        build_config(PolicyNodeConfig, {"command_interface": "torque"})
    with pytest.raises(ValueError, match="'seed'"):
        build_config(SimRobotConfig, {"seed": 1.5})


@pytest.mark.parametrize("script", ["prism-sim-robot", "prism-policy", "prism-reward-monitor", "prism-ros-record"])
def test_console_scripts_explain_every_option(script):
    exe = Path(sys.executable).parent / script
    if not exe.exists():
        pytest.skip(f"{script} not installed in this venv (pip install -e .)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "--params-file" in out.stdout
    bad = subprocess.run([str(exe), "--frobnicate"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "ROS parameters" in bad.stderr


def test_image_buffers_all_encodings_and_row_padding():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
    padded = np.zeros((4, 5 * 3 + 3), np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    assert np.array_equal(rgb_from_buffer(padded.tobytes(), 4, 5, "rgb8", 18), rgb)
    bgr = rgb[:, :, ::-1].copy()
    assert np.array_equal(rgb_from_buffer(bgr.tobytes(), 4, 5, "bgr8", 15), rgb)
    bgra = np.concatenate([bgr, np.full((4, 5, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(rgb_from_buffer(bgra.tobytes(), 4, 5, "bgra8", 20), rgb)
    mono = rgb[:, :, 0].copy()
    assert np.array_equal(rgb_from_buffer(mono.tobytes(), 4, 5, "mono8", 5)[:, :, 2], mono)
    with pytest.raises(ValueError, match="unsupported image encoding '16UC1'"):
        rgb_from_buffer(b"\0" * 40, 4, 5, "16UC1", 10)
    with pytest.raises(ValueError, match="too small"):
        rgb_from_buffer(b"\0" * 10, 4, 5, "rgb8", 15)


def test_fit_square_crops_centre_without_stretching():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 80:560] = 200  # the centred square region
    out = fit_square(img, 128)
    assert out.shape == (128, 128, 3) and out.min() == 200
    same = np.ones((128, 128, 3), np.uint8)
    assert fit_square(same, 128) is same


def test_action_command_round_trips():
    a = np.array([0.5, -1.0, 0.25])
    v = ee_action_to_velocity(a, 0.02, 0.05)
    assert np.allclose(v, [0.2, -0.4, 0.1])
    assert np.allclose(velocity_to_ee_action(v, 0.02, 0.05), a)
    assert np.allclose(velocity_to_ee_action([10, 0, 0], 0.02, 0.05), [1, 0, 0])
    q = np.array(PANDA_LOWER) * 0.3 + np.array(PANDA_UPPER) * 0.7
    assert np.allclose(denormalise_joints(normalise_joints(q, PANDA_LOWER, PANDA_UPPER), PANDA_LOWER, PANDA_UPPER), q)
    assert ros_joint_name("panda/joint3") == "panda_joint3"
    assert np.allclose(reorder_joints(["b", "a", "c"], [2.0, 1.0, 3.0], ["a", "b"]), [1.0, 2.0])
    assert reorder_joints(["a"], [1.0], ["a", "b"]) is None


def test_policy_spec_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="parameter 'policy' is empty"):
        load_bridge_policy("")
    with pytest.raises(ValueError, match="does not exist"):
        load_bridge_policy(str(tmp_path / "no_run"))
    with pytest.raises(ValueError, match="cannot import"):
        load_bridge_policy("python:no_such_module_xyz:make")
    with pytest.raises(ValueError, match="expert:<task>"):
        load_bridge_policy("expert:")
    policy = load_bridge_policy("python:bridge_fault_policies:constant_policy")
    assert policy.cameras == ("front",) and policy.act({}).tolist() == [0.5, 0.0, 0.0, -1.0]


def test_monitor_camera_map_feeds_model_views_from_robot_cameras():
    from robot_bridge.reward_monitor import mapped_camera_topics

    topics = mapped_camera_topics(("front", "wrist"), ("cam_high=front",), ())
    assert topics == {"front": "cam_high/image_raw", "wrist": "wrist/image_raw"}
    # an explicit topic for a view wins over the map
    assert mapped_camera_topics(("front",), ("cam_high=front",), ("front=/cams/hi",)) == {"front": "/cams/hi"}
    with pytest.raises(ValueError, match="not the model's views"):
        mapped_camera_topics(("front",), ("cam_high=side",), ())
    with pytest.raises(ValueError, match="camera"):
        mapped_camera_topics(("front", "wrist"), ("a=front", "b=front"), ())
