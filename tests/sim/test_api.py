"""Task registry, construction options and bad-input errors of the sim package."""

import shutil

import gymnasium as gym
import numpy as np
import pytest

import sim
from sim.scene import DEFAULT_PANDA_XML

TASKS = list(sim.TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_registered_and_resolvable(task):
    env_id = sim.TASKS[task]
    assert env_id in gym.registry
    assert sim.resolve_task(task) == task
    assert sim.resolve_task(env_id) == task
    assert sim.resolve_task(sim.TASK_CLASSES[task].__name__) == task
    env = gym.make(env_id, cameras=())
    assert env.spec.max_episode_steps == sim.MAX_EPISODE_STEPS[task]
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    assert obs["state"].shape == (len(u.state_names),) and obs["state"].dtype == np.float32
    assert "pixels" not in obs
    assert set(info) >= {"progress", "stage", "stage_name", "is_success", "task"}
    assert info["task"] == u.instruction and u.instruction in u.instructions and len(u.instructions) >= 3
    assert info["stage_name"] == u.stage_names[info["stage"]]
    assert 0.0 <= info["progress"] < 0.5 and not info["is_success"]
    assert u.control_dt == pytest.approx(0.05)
    env.close()


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="valid tasks.*reach.*push.*pickplace.*drawer"):
        sim.resolve_task("stack")
    with pytest.raises(ValueError, match="unknown task"):
        sim.make("prism/PandaStack-v0")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown camera 'top'.*front, side, wrist"):
        sim.make("reach", cameras=("front", "top"))
    with pytest.raises(ValueError, match="action_mode"):
        sim.make("reach", cameras=(), action_mode="torque")
    with pytest.raises(ValueError, match="image_size"):
        sim.make("reach", image_size=(64, "x"))


@pytest.mark.parametrize("bad", [np.array([0.0, np.nan, 0.0, 0.0]), np.array([np.inf, 0, 0, 0])])
def test_non_finite_action_raises(bad):
    env = sim.make("reach", cameras=())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(bad)


def test_wrong_action_shape_raises():
    env = sim.make("push", cameras=())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\).*expected \(4,\)"):
        env.step(np.zeros(3))


def test_out_of_range_action_is_clipped():
    env = sim.make("reach", cameras=())
    env.reset(seed=0)
    a, b = sim.make("reach", cameras=()), sim.make("reach", cameras=())
    a.reset(seed=1), b.reset(seed=1)
    oa = a.step(np.array([5.0, -5.0, 5.0, 5.0]))[0]
    ob = b.step(np.array([1.0, -1.0, 1.0, 1.0]))[0]
    np.testing.assert_array_equal(oa["state"], ob["state"])


def test_instruction_override_and_seeded_choice():
    env = sim.make("push", cameras=())
    _, info = env.reset(seed=0, options={"instruction": "push the blue block onto the green target"})
    assert info["task"] == "push the blue block onto the green target"
    chosen = {env.reset(seed=s)[1]["task"] for s in range(12)}
    assert len(chosen) > 2  # paraphrases and block colours both vary with the seed
    assert any("red" in c for c in chosen) and any("blue" in c for c in chosen)
    with pytest.raises(ValueError, match="instruction"):
        env.reset(seed=0, options={"instruction": ""})


def test_joint_action_mode_drives_joints():
    env = sim.make("reach", cameras=(), action_mode="joint")
    u = env.unwrapped
    assert env.action_space.shape == (8,) and u.action_names[-1] == "gripper"
    env.reset(seed=0)
    target = np.zeros(8)  # mid-range of every joint, gripper half closed
    for _ in range(30):
        env.step(target)
    mid = (u._joint_low + u._joint_high) / 2
    np.testing.assert_allclose(u.arm_qpos, mid, atol=0.05)
    assert u.gripper_width == pytest.approx(0.04, abs=0.005)


def test_ee_delta_moves_grip_point():
    env = sim.make("reach", cameras=())
    u = env.unwrapped
    env.reset(seed=0)
    start = u.ee_pos
    for _ in range(5):
        env.step(np.array([0.0, 1.0, 0.0, -1.0]))
    moved = u.ee_pos - start
    assert 0.06 < moved[1] < 0.11  # 5 steps of at most 2 cm
    assert abs(moved[0]) < 0.01 and abs(moved[2]) < 0.01
    rot = u.data.site_xmat[u._ee_site].reshape(3, 3)
    assert rot[2, 2] < -0.99  # hand still points down


# ----- panda_xml ---------------------------------------------------------------------------------
def _rollout_states(env, n=15):
    obs, _ = env.reset(seed=3)
    states = [obs["state"]]
    for i in range(n):
        states.append(env.step(np.array([np.sin(i), 0.5, -0.5, 1.0]))[0]["state"])
    return np.stack(states)


def test_panda_xml_file_dir_and_env_var(tmp_path, monkeypatch):
    arm_dir = tmp_path / "franka_emika_panda"
    arm_dir.mkdir()
    shutil.copy(DEFAULT_PANDA_XML, arm_dir / "panda.xml")
    reference = _rollout_states(sim.make("push", cameras=()))
    by_dir = sim.make("push", cameras=(), panda_xml=arm_dir)
    assert by_dir.unwrapped.panda_xml_path == arm_dir / "panda.xml"
    np.testing.assert_allclose(_rollout_states(by_dir), reference, atol=1e-6)
    by_file = sim.make("push", cameras=(), panda_xml=str(arm_dir / "panda.xml"))
    np.testing.assert_allclose(_rollout_states(by_file), reference, atol=1e-6)
    monkeypatch.setenv(sim.PANDA_XML_ENV_VAR, str(arm_dir))
    assert sim.make("reach", cameras=()).unwrapped.panda_xml_path == arm_dir / "panda.xml"


def test_panda_xml_with_other_names_is_mapped(tmp_path):
    text = DEFAULT_PANDA_XML.read_text()
    for i in range(1, 8):
        text = text.replace(f'name="joint{i}"', f'name="fr3_joint{i}"')
    text = text.replace('name="hand"', 'name="fr3_hand"')
    path = tmp_path / "renamed.xml"
    path.write_text(text)
    env = sim.make("reach", cameras=(), panda_xml=path)
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.array([0.0, 0.0, -1.0, 0.0]))
    assert env.unwrapped.model.joint("panda/fr3_joint1").id >= 0


def test_bad_panda_xml_paths(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.xml.*does not exist"):
        sim.make("reach", cameras=(), panda_xml=tmp_path / "nope.xml")
    with pytest.raises(FileNotFoundError, match="without a panda.xml"):
        sim.make("reach", cameras=(), panda_xml=tmp_path)
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco><worldbody><body></mujoco>")
    with pytest.raises(ValueError, match="broken.xml"):
        sim.make("reach", cameras=(), panda_xml=broken)
    not_arm = tmp_path / "box.xml"
    not_arm.write_text('<mujoco><worldbody><body><joint/><geom size="0.1"/></body></worldbody></mujoco>')
    with pytest.raises(ValueError, match="does not look like a Panda"):
        sim.make("reach", cameras=(), panda_xml=not_arm)
    monkeypatch.setenv(sim.PANDA_XML_ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="PRISM_PANDA_XML"):
        sim.make("reach", cameras=())


def test_published_kinematics():
    """Zero pose: flange at (0.088, 0, 0.926) per the Franka DH table; limits as published."""
    import mujoco

    env = sim.make("reach", cameras=())
    u = env.unwrapped
    d = u.data
    d.qpos[:] = 0
    mujoco.mj_kinematics(u.model, d)
    hand = u.model.body("panda/hand").id
    np.testing.assert_allclose(d.xpos[hand], [0.088, 0.0, 0.926], atol=1e-6)
    np.testing.assert_allclose(u._joint_low, [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    np.testing.assert_allclose(u._joint_high, [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
