"""The safety rules of the policy node, without ROS (robot_bridge/safety.py)."""

import numpy as np
import pytest

from robot_bridge.safety import SafetyConfig, SafetyGuard, Verdict, clamp_norm, limit_to_workspace

INPUTS = ("camera:front", "joint_states")


def ready_guard(config: SafetyConfig | None = None, now: float = 0.0) -> SafetyGuard:
    guard = SafetyGuard(config or SafetyConfig(), INPUTS)
    for name in INPUTS:
        guard.input_received(name, now)
    guard.start_episode(now)
    return guard


def test_twist_speed_clamp_keeps_direction():
    guard = ready_guard(SafetyConfig(max_linear_speed=0.2, max_angular_speed=0.3))
    d = guard.decide_twist(0.1, [1.0, 1.0, 0.0], [0.0, 0.0, 2.0])
    assert d.verdict == Verdict.COMMAND and d.clamped
    assert np.linalg.norm(d.command[:3]) == pytest.approx(0.2)
    assert d.command[0] == pytest.approx(d.command[1])  # direction kept
    assert d.command[5] == pytest.approx(0.3)
    small = guard.decide_twist(0.1, [0.05, 0.0, 0.0])
    assert not small.clamped and small.command[0] == pytest.approx(0.05)


def test_workspace_box_blocks_only_outward_motion():
    cfg = SafetyConfig(workspace_min=(0.2, -0.3, 0.05), workspace_max=(0.8, 0.3, 0.6))
    guard = ready_guard(cfg)
    # at the lower z face: moving down is zeroed, moving sideways is kept
    d = guard.decide_twist(0.1, [0.1, 0.0, -0.2], ee_position=[0.5, 0.0, 0.051], dt=0.05)
    assert d.command[2] == 0.0 and d.command[0] == pytest.approx(0.1)
    # outside the box, motion back inside is allowed
    d = guard.decide_twist(0.1, [0.0, -0.1, 0.0], ee_position=[0.5, 0.5, 0.3], dt=0.05)
    assert d.command[1] == pytest.approx(-0.1)
    v = limit_to_workspace(
        np.array([0.0, 0.2, 0.0]),
        np.array([0.5, 0.29, 0.3]),
        np.array(cfg.workspace_min),
        np.array(cfg.workspace_max),
        0.1,
    )
    assert v[1] == 0.0
    assert np.allclose(clamp_norm(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])


def test_joint_step_and_limit_clamps():
    guard = ready_guard(SafetyConfig(max_joint_step=0.1, joint_limit_margin=0.02))
    d = guard.decide_joints(
        0.1, targets=[1.0, -0.5, 0.0], measured=[0.0, 0.0, 0.0], lower=[-1.0, -1.0, -1.0], upper=[1.0, 1.0, 0.05]
    )
    assert d.verdict == Verdict.COMMAND and d.clamped
    assert np.allclose(d.command, [0.1, -0.1, 0.0])
    d = guard.decide_joints(0.1, targets=[0.5], measured=[0.99], lower=[-1.0], upper=[1.0])
    assert d.command[0] == pytest.approx(0.89)  # step limit from 0.99, below upper - margin = 0.98
    with pytest.raises(ValueError, match="2 joints are measured"):
        guard.decide_joints(0.1, targets=[0.0], measured=[0.0, 0.0])


def test_stale_input_watchdog_stops_then_resumes():
    guard = ready_guard(SafetyConfig(stale_timeout_s=0.5))
    assert guard.decide_twist(0.4, [0.1, 0, 0]).verdict == Verdict.COMMAND
    guard.input_received("joint_states", 0.9)  # the camera stays silent after t = 0
    hold = guard.decide_twist(0.6, [0.1, 0, 0])
    assert hold.verdict == Verdict.HOLD and hold.reasons == ["stale: camera:front"]
    assert guard.decide_twist(0.7, [0.1, 0, 0]).verdict == Verdict.SILENT  # one hold, then silence
    guard.input_received("camera:front", 0.8)
    assert guard.decide_twist(0.85, [0.1, 0, 0]).verdict == Verdict.COMMAND


def test_never_received_input_blocks_without_hold():
    guard = SafetyGuard(SafetyConfig(), INPUTS)
    guard.input_received("joint_states", 0.0)
    guard.start_episode(0.0)
    d = guard.decide_twist(0.1, [0.1, 0, 0])
    assert d.verdict == Verdict.SILENT and "stale: camera:front" in d.reasons


def test_estop_latches_until_released_and_reset():
    guard = ready_guard()
    assert guard.decide_twist(0.1, [0.1, 0, 0]).verdict == Verdict.COMMAND
    guard.set_estop(True)
    assert guard.decide_twist(0.2, [0.1, 0, 0]).verdict == Verdict.HOLD
    guard.set_estop(False)  # releasing the button alone does not resume motion
    assert guard.decide_twist(0.3, [0.1, 0, 0]).verdict == Verdict.SILENT
    guard.set_estop(True)
    assert guard.reset() is False  # refused while the source reads engaged
    guard.set_estop(False)
    assert guard.reset() is True
    for name in INPUTS:
        guard.input_received(name, 0.35)
    assert guard.decide_twist(0.4, [0.1, 0, 0]).verdict == Verdict.COMMAND


def test_non_finite_commands_are_never_published_and_latch_a_fault():
    guard = ready_guard(SafetyConfig(max_invalid_commands=3))
    first = guard.decide_twist(0.01, [np.nan, 0, 0])
    assert first.verdict == Verdict.SILENT  # nothing moved yet: nothing to hold
    assert guard.decide_twist(0.02, [0, np.inf, 0]).verdict == Verdict.SILENT
    assert guard.decide_joints(0.03, [np.nan], [0.0]).verdict == Verdict.SILENT
    assert guard.fault is not None and guard.n_invalid == 3
    assert guard.decide_twist(0.04, [0.1, 0, 0]).verdict == Verdict.SILENT  # latched fault
    assert guard.decide_gripper(0.04, 1.0).verdict == Verdict.SILENT
    assert guard.reset()
    assert guard.decide_twist(0.05, [0.1, 0, 0]).verdict == Verdict.COMMAND
    after_motion = guard.decide_twist(0.06, [np.nan, 0, 0])
    assert after_motion.verdict == Verdict.HOLD  # the arm was moving: stop it explicitly
    assert guard.decide_gripper(0.07, float("nan")).verdict == Verdict.SILENT


def test_episode_time_limit():
    guard = ready_guard(SafetyConfig(episode_time_limit_s=1.0, stale_timeout_s=10.0))
    assert guard.decide_twist(0.9, [0.1, 0, 0]).verdict == Verdict.COMMAND
    d = guard.decide_twist(1.1, [0.1, 0, 0])
    assert d.verdict == Verdict.HOLD and "episode time limit" in d.reasons
    assert guard.decide_twist(1.2, [0.1, 0, 0]).verdict == Verdict.SILENT
    guard.start_episode(1.3)
    assert guard.decide_twist(1.4, [0.1, 0, 0]).verdict == Verdict.COMMAND
    unlimited = ready_guard(SafetyConfig(episode_time_limit_s=0.0, stale_timeout_s=1e9))
    assert unlimited.decide_twist(1e6, [0.1, 0, 0]).verdict == Verdict.COMMAND


def test_no_episode_means_no_commands_and_bad_configs_are_rejected():
    guard = SafetyGuard(SafetyConfig(), INPUTS)
    for name in INPUTS:
        guard.input_received(name, 0.0)
    assert guard.decide_twist(0.1, [0.1, 0, 0]).reasons == ["no episode"]
    with pytest.raises(ValueError, match="workspace_max"):
        SafetyConfig(workspace_min=(0, 0, 0), workspace_max=(1, -1, 1))
    with pytest.raises(ValueError, match="stale_timeout_s"):
        SafetyConfig(stale_timeout_s=0)
    assert guard.decide_gripper(0.1, 3.0).verdict == Verdict.SILENT
