"""The varied world: seeded scene variants, a held-out split, honest instructions, experts that still work."""

import json

import mujoco
import numpy as np
import pytest

import sim
from sim.experts import POLICIES, make_policy
from sim.tasks import DRAWER_OPEN
from sim.world import (
    BLOCK_SHAPES,
    HELDOUT_ARM_SCHEMES,
    HELDOUT_COLORS,
    HELDOUT_PATTERNS,
    PALETTE,
    SHAPE_NOUNS,
    TRAIN_ARM_SCHEMES,
    TRAIN_COLORS,
    TRAIN_PATTERNS,
    draw_world,
    set_geom_shape,
)

TASKS = list(sim.TASKS)


def run_expert(env, seed):
    policy = make_policy("expert", env, seed=0)
    obs, info = env.reset(seed=seed)
    start = info
    policy.reset(obs, info)
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            return start, info


def clutter_positions(env):
    u = env.unwrapped
    return np.array(
        [u.data.xpos[u.model.body(f"clutter{i}").id].copy() for i in range(len(u.world_variant["distractors"]))]
    ).reshape(-1, 3)


@pytest.mark.parametrize("task", TASKS)
def test_default_world_is_unchanged(task):
    plain = sim.make(task, cameras=("front", "wrist"), image_size=32)
    explicit = sim.make(task, cameras=("front", "wrist"), image_size=32, world="default")
    for env in (plain, explicit):
        m = env.unwrapped.model
        # nothing of the varied world is built into the default scene
        assert m.ntex == 0 and m.nmat == 0 and m.nlight == 2
        assert all(not m.body(b).name.startswith("clutter") for b in range(m.nbody))
        assert env.unwrapped.world_params() == {"world": "default"}
    runs = []
    for env in (plain, explicit):
        policy = make_policy("expert", env, seed=0)
        obs, info = env.reset(seed=4)
        assert "world" not in info
        policy.reset(obs, info)
        frames = [obs]
        for _ in range(6):
            obs, *_, info = env.step(policy.act(obs, info))
            frames.append(obs)
        runs.append((frames, info["task"]))
    (fa, ta), (fb, tb) = runs
    assert ta == tb
    for a, b in zip(fa, fb):
        np.testing.assert_array_equal(a["state"], b["state"])
        for cam in ("front", "wrist"):
            np.testing.assert_array_equal(a["pixels"][cam], b["pixels"][cam])


def test_varied_resets_are_reproducible_and_seeds_differ():
    env = sim.make("push", cameras=("front", "side"), image_size=48, world="varied")
    first, info = env.reset(seed=3)
    # seed 4 after seed 3 with the renderer already made: the textures must be re-uploaded, so the
    # pictures equal a fresh env's, not seed 4's scene on seed 3's table
    other, other_info = env.reset(seed=4)
    fresh_other, fresh_other_info = sim.make("push", cameras=("front", "side"), image_size=48, world="varied").reset(
        seed=4
    )
    again, again_info = env.reset(seed=3)
    for obs, inf, ref, ref_info in (
        (fresh_other, fresh_other_info, other, other_info),
        (again, again_info, first, info),
    ):
        np.testing.assert_array_equal(obs["state"], ref["state"])
        assert inf["world"] == ref_info["world"] and inf["task"] == ref_info["task"]
        for cam in ("front", "side"):
            np.testing.assert_array_equal(obs["pixels"][cam], ref["pixels"][cam])
    assert other_info["world"] != info["world"]
    for cam in ("front", "side"):
        assert np.abs(other["pixels"][cam].astype(int) - first["pixels"][cam].astype(int)).mean() > 5, cam


def test_varied_pictures_differ_across_many_seeds_and_are_not_dark():
    env = sim.make("pickplace", cameras=("front",), image_size=32, world="varied")
    images = np.stack([env.reset(seed=s)[0]["pixels"]["front"] for s in range(8)]).astype(float)
    assert images.mean(axis=(1, 2, 3)).min() > 40  # lit: never a black picture
    assert images.std(axis=0).mean() > 15  # the table, light and colours change from seed to seed


@pytest.mark.parametrize("task", TASKS)
def test_instruction_names_the_objects_actual_colour(task):
    env = sim.make(task, cameras=(), world="varied")
    u = env.unwrapped
    for seed in range(12):
        _, info = env.reset(seed=seed)
        world = info["world"]
        words = info["task"].split()
        named = [c for c in PALETTE if c in words]
        if task in ("push", "pickplace"):
            color = world["block"]["color"]
            geom = next(iter(u.block_geoms()))
            others = [world["other_block"]["color"]] + [d["color"] for d in world["distractors"]]
            assert color in words and set(named) <= {color, world["target"]["color"]}, info["task"]
            assert u.block_color == color and color not in others and world["target"]["color"] != color
            assert set(SHAPE_NOUNS[world["block"]["shape"]]) & set(words), info["task"]
        elif task == "reach":
            color = world["marker"]["color"]
            geom = u.model.geom("marker_geom").id
            others = [d["color"] for d in world["distractors"]]
            assert named == [color] and color not in others, info["task"]
        else:
            color = world["drawer"]["color"]
            geom = u.model.geom("drawer_front").id
            others = [d["color"] for d in world["distractors"]]
            assert set(named) <= {color} and color not in others, info["task"]
        # the object really wears the named palette colour (up to the small jitter)
        np.testing.assert_allclose(u.model.geom_rgba[geom, :3], PALETTE[color], atol=0.041)
        assert info["task"] in u.instructions and len(u.instructions) >= 6


def test_heldout_split_never_draws_train_values():
    seen = {split: {"colors": set(), "patterns": set(), "arms": set()} for split in ("train", "heldout")}
    for split, values in seen.items():
        for seed in range(150):
            task = TASKS[seed % len(TASKS)]
            w = draw_world(task, split, np.random.default_rng(seed))
            objects = [w[k] for k in ("block", "other_block", "target", "marker", "drawer") if k in w]
            values["colors"] |= {o["color"] for o in objects + w["distractors"]}
            values["patterns"] |= {w["table"]["pattern"], w["floor"]["pattern"]}
            values["arms"].add(w["arm"]["scheme"])
    assert seen["train"]["colors"] == set(TRAIN_COLORS) and seen["heldout"]["colors"] == set(HELDOUT_COLORS)
    assert seen["train"]["patterns"] == set(TRAIN_PATTERNS) and seen["heldout"]["patterns"] == set(HELDOUT_PATTERNS)
    assert seen["train"]["arms"] == set(TRAIN_ARM_SCHEMES) and seen["heldout"]["arms"] == set(HELDOUT_ARM_SCHEMES)
    for factor in ("colors", "patterns", "arms"):
        assert not seen["train"][factor] & seen["heldout"][factor], factor
    # the env draws from the split it was made with
    env = sim.make("push", cameras=(), world="varied", world_split="heldout")
    for seed in range(5):
        world = env.reset(seed=seed)[1]["world"]
        assert world["split"] == "heldout" and world["block"]["color"] in HELDOUT_COLORS
        assert world["arm"]["scheme"] in HELDOUT_ARM_SCHEMES and world["table"]["pattern"] in HELDOUT_PATTERNS


@pytest.mark.parametrize("task", TASKS)
def test_expert_succeeds_in_varied_worlds_and_leaves_clutter_alone(task):
    for split in ("train", "heldout"):
        env = sim.make(task, cameras=(), world="varied", world_split=split)
        # train: until every block shape has been tried (at least two episodes); heldout: two episodes
        shapes_left = set(BLOCK_SHAPES) if split == "train" and task in ("push", "pickplace") else set()
        tried = 0
        for seed in range(40):
            shape = env.reset(seed=seed)[1]["world"].get("block", {}).get("shape")
            if tried >= 2 and shape not in shapes_left:
                continue
            before = clutter_positions(env)
            _, end = run_expert(env, seed)
            assert end["is_success"], f"{task} {split} seed {seed} ({shape}): progress {end['progress']:.2f}"
            np.testing.assert_allclose(clutter_positions(env), before, atol=0.005)
            shapes_left.discard(shape)
            tried += 1
            if tried >= 2 and not shapes_left:
                break
        assert tried >= 2 and not shapes_left, (split, shapes_left)


def test_world_params_are_json_and_describe_the_scene():
    for task in TASKS:
        env = sim.make(task, cameras=(), world="varied", world_split="heldout")
        _, info = env.reset(seed=11)
        text = json.dumps(info["world"])
        assert json.loads(text) == info["world"] == env.unwrapped.world_params()
        assert info["world"]["task"] == task and 0 <= len(info["world"]["distractors"]) <= 3
        # the clutter stands where the params say, on the table
        for i, obj in enumerate(info["world"]["distractors"]):
            pos = env.unwrapped.data.xpos[env.unwrapped.model.body(f"clutter{i}").id]
            np.testing.assert_allclose(pos[:2], obj["xy"], atol=0.003)
            assert abs(pos[2] - obj["half_extents"][2]) < 0.003


def _pixel(model, data, cam, point, size):
    """Where ``point`` lands in a ``size``-pixel image from camera ``cam`` (None when behind it)."""
    rel = data.cam_xmat[cam].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[cam])
    if rel[2] >= 0:
        return None
    focal = size / 2 / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    return np.array([rel[0], rel[1]]) / -rel[2] * focal


@pytest.mark.parametrize("task", TASKS)
def test_cameras_keep_the_task_in_view(task):
    env = sim.make(task, cameras=(), world="varied")
    u = env.unwrapped
    for seed in range(15):
        env.reset(seed=seed)
        if task == "reach":
            points = [u.goal_pos, [*u.goal_pos[:2], 0.0]]
        elif task == "drawer":
            points = [u.handle_pos, u.handle_pos - [DRAWER_OPEN + 0.02, 0.0, 0.0]]  # closed and pulled open
        else:
            points = [u.block_pos, u.target_pos, u.distractor_pos]
        points = points + list(clutter_positions(env)) + [u.ee_pos]
        for cam in ("front", "side"):
            cid = u.model.camera(cam).id
            for p in points:
                px = _pixel(u.model, u.data, cid, p, 64)
                assert px is not None and np.all(np.abs(px) < 0.92 * 32), (task, seed, cam, p, px)


def test_set_geom_shape_matches_the_compiler():
    for shape, ext in (
        ("cube", (0.02, 0.02, 0.02)),
        ("brick", (0.017, 0.03, 0.021)),
        ("cylinder", (0.019, 0.019, 0.024)),
        ("sphere", (0.02, 0.02, 0.02)),
    ):
        density = 700.0
        spec = mujoco.MjSpec()
        spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1, 1, 0.1])
        body = spec.worldbody.add_body(pos=[0, 0, 0.1])
        body.add_freejoint()
        gtype = {"cube": "BOX", "brick": "BOX", "cylinder": "CYLINDER", "sphere": "SPHERE"}[shape]
        size = {"BOX": ext, "CYLINDER": (ext[0], ext[2], 0), "SPHERE": (ext[0], 0, 0)}[gtype]
        body.add_geom(type=getattr(mujoco.mjtGeom, f"mjGEOM_{gtype}"), size=list(size), density=density)
        ref = spec.compile()
        # a unit cube reshaped at run time must end up with the compiler's numbers
        spec2 = mujoco.MjSpec()
        spec2.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1, 1, 0.1])
        b2 = spec2.worldbody.add_body(pos=[0, 0, 0.1])
        b2.add_freejoint()
        b2.add_geom(type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.05, 0.05, 0.05], density=1.0)
        m = spec2.compile()
        set_geom_shape(m, 1, shape, ext, density=density)
        assert m.geom_type[1] == ref.geom_type[1]
        np.testing.assert_allclose(m.geom_size[1], ref.geom_size[1])
        np.testing.assert_allclose(m.geom_aabb[1], ref.geom_aabb[1], atol=1e-12)
        np.testing.assert_allclose(m.geom_rbound[1], ref.geom_rbound[1])
        np.testing.assert_allclose(m.body_mass[1], ref.body_mass[1], rtol=1e-9)

        def tensor(model):
            rot = np.zeros(9)
            mujoco.mju_quat2Mat(rot, model.body_iquat[1])
            rot = rot.reshape(3, 3)
            return rot @ np.diag(model.body_inertia[1]) @ rot.T

        np.testing.assert_allclose(tensor(m), tensor(ref), rtol=1e-6, atol=1e-14)
        # and it rests on the plane at its half height
        d = mujoco.MjData(m)
        mujoco.mj_setConst(m, d)
        mujoco.mj_step(m, d, nstep=600)
        assert abs(d.qpos[2] - ext[2]) < 0.002, (shape, d.qpos[2])


@pytest.mark.parametrize("task", TASKS)
def test_every_scripted_policy_runs_in_the_varied_world(task):
    env = sim.make(task, cameras=(), world="varied", max_episode_steps=15)
    for i, name in enumerate(POLICIES):
        policy = make_policy(name, env, seed=i)
        obs, info = env.reset(seed=i)
        policy.reset(obs, info)
        for _ in range(15):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            assert np.all(np.isfinite(obs["state"]))
            if terminated or truncated:
                break


def test_wrong_object_moves_the_other_block_in_the_varied_world():
    env = sim.make("pickplace", cameras=(), world="varied")
    u = env.unwrapped
    policy = make_policy("wrong-object", env, seed=0)
    obs, info = env.reset(seed=2)
    policy.reset(obs, info)
    for _ in range(120):
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            break
    assert np.linalg.norm(u.distractor_pos[:2] - u.target_pos[:2]) < 0.03
    assert not info["is_success"]


def test_bad_world_arguments_are_named():
    with pytest.raises(ValueError, match="unknown world 'fancy'"):
        sim.make("reach", cameras=(), world="fancy")
    with pytest.raises(ValueError, match="unknown world_split 'test'"):
        sim.make("reach", cameras=(), world="varied", world_split="test")
    with pytest.raises(ValueError, match="world_split='heldout' applies only to world='varied'"):
        sim.make("reach", cameras=(), world_split="heldout")
    with pytest.raises(ValueError, match="domain_randomization cannot be combined"):
        sim.make("reach", cameras=(), world="varied", domain_randomization=True)
