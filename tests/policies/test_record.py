"""prism-record: sim rollouts -> LeRobot v3 dataset -> reader, and its bad-input errors."""

import numpy as np
import pytest

import sim
from episodes import open_dataset
from policies.record import main as record_main
from policies.record import record_episodes, rollout_episode

CAMS = ("front", "wrist")


@pytest.fixture(scope="module")
def push_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "push"
    summary = record_episodes(out, "push", "expert", episodes=2, seed=3, cameras=CAMS, size=64, progress_bar=False)
    return out, summary


def test_round_trip_matches_a_fresh_rollout(push_dataset):
    out, summary = push_dataset
    ds = open_dataset(out)
    assert ds.num_episodes == 2 and set(ds.cameras) == set(CAMS) and ds.fps == pytest.approx(20.0)
    env = sim.make("push", cameras=CAMS, image_size=64)
    try:
        policy = sim.experts.make_policy("expert", env, seed=3)
        for k in range(2):
            fresh = rollout_episode(env, policy, seed=3 + k, cameras=CAMS, episode_index=k)
            ep = ds.load_episode(k)
            # Labels are exact; frames equal within H.264 tolerance.
            np.testing.assert_array_equal(ep.state, fresh.state)
            np.testing.assert_array_equal(ep.action, fresh.action)
            np.testing.assert_array_equal(ep.progress, fresh.progress)
            np.testing.assert_array_equal(ep.stage, fresh.stage)
            np.testing.assert_array_equal(ep.success, fresh.success)
            np.testing.assert_array_equal(ep.done, fresh.done)
            assert ep.task == fresh.task and ep.outcome == fresh.outcome == "success"
            for cam in CAMS:
                err = np.abs(ep.frames[cam].astype(np.int16) - fresh.frames[cam].astype(np.int16)).mean()
                assert err < 4.0, (cam, err)
    finally:
        env.close()


def test_episode_layout_final_frame_and_labels(push_dataset):
    out, _ = push_dataset
    ep = open_dataset(out).load_episode(0)
    assert ep.done[-1] and not ep.done[:-1].any()
    assert not ep.action[-1].any(), "the appended final frame carries a zero action"
    assert ep.progress[0] < 0.2 and ep.progress[-1] == pytest.approx(1.0)
    assert ep.success[-1] and ep.reward.sum() == pytest.approx(1.0)
    assert ep.task_name == "push" and ep.meta["seed"] == 3


def test_outcomes_follow_what_happened(tmp_path):
    summary = record_episodes(
        tmp_path / "d", "reach", "partial", episodes=2, seed=0, cameras=("front",), size=32, progress_bar=False
    )
    assert summary.outcomes.get("success", 0) == 0
    ds = open_dataset(tmp_path / "d")
    for i in range(2):
        ep = ds.load_episode(i)
        assert ep.outcome in ("partial", "fail") and not ep.success[-1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="fold-laundry"), "fold-laundry"),
        (dict(cameras="front,ceiling"), "ceiling"),
        (dict(episodes=0), "episodes"),
        (dict(size=33), "even"),
        (dict(policy="teleport"), "teleport"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, kwargs, message):
    args = dict(task="reach", policy="expert", episodes=1, cameras="front", size=32, progress_bar=False)
    args.update(kwargs)
    with pytest.raises((ValueError, KeyError)) as err:
        record_episodes(tmp_path / "out", **args)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite_and_unwritable_output(tmp_path, capsys):
    out = tmp_path / "ds"
    base = ["--task", "reach", "--episodes", "1", "--cameras", "front", "--size", "32", "--out"]
    assert record_main(base + [str(out)]) == 0
    assert record_main(base + [str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):  # root ignores permissions: make the parent a file instead
            target = tmp_path / "a_file" / "ds"
            (tmp_path / "a_file").write_text("not a directory")
        else:
            target = locked / "ds"
        assert record_main(base + [str(target)]) == 2
        assert "prism-record: error" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_interrupted_recording_leaves_nothing(tmp_path):
    class Crashes:
        kind = "crashes"

        def __init__(self):
            self.calls = 0

        def reset(self, obs, info):
            pass

        def act(self, obs, info):
            self.calls += 1
            if self.calls > 60:  # second episode, midway
                raise KeyboardInterrupt
            return np.zeros(4, dtype=np.float32)

    with pytest.raises(KeyboardInterrupt):
        record_episodes(tmp_path / "ds", "reach", Crashes(), episodes=3, cameras="front", size=32, progress_bar=False)
    assert list(tmp_path.iterdir()) == []


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        record_main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--task", "--episodes", "--seed", "--policy", "--cameras", "--size", "--out", "--overwrite"):
        assert option in text
    assert "failure-mix" in text
