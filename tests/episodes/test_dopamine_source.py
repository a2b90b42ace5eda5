"""Robo-Dopamine's raw-data layout: detection, step-wise keyframe progress, striding/resizing on
decode, instruction formats and bad annotations -- on real mp4 files written with PyAV."""

from __future__ import annotations

import json

import numpy as np
import pytest

from episodes.dopamine import (
    KEYFRAMES_JSON,
    Subtask,
    is_dopamine_source,
    keyframe_progress,
    list_dopamine_episodes,
    load_dopamine_episode,
    write_dopamine_episode,
    write_task_instruction,
)
from episodes.video_folder import EpisodeSourceError, write_episode_folder
from reward_models.evaluate import detect_source

FPS = 30
T = 40
SIZE = (48, 64)  # (H, W)
CAMERAS = ("cam_high", "cam_left_wrist")
INSTRUCTIONS = ["clear the table", "tidy up the table"]
# Episode 1: two subtasks sharing a boundary frame (as released); episode 2: a gap between them.
SUBTASKS = {
    "episode_001": [Subtask(4, 20, "grasp the cup"), Subtask(20, 36, "place the cup")],
    "episode_002": [Subtask(0, 10, "grasp the cup"), Subtask(16, 30, "place the cup")],
}


@pytest.fixture
def dopamine_root(tmp_path, square_video):
    root = tmp_path / "raw_data"
    write_task_instruction(root, INSTRUCTIONS)
    for seed, (name, subtasks) in enumerate(SUBTASKS.items()):
        frames = {cam: square_video(T, seed, i, SIZE) for i, cam in enumerate(CAMERAS)}
        write_dopamine_episode(root / name, frames, fps=FPS, subtasks=subtasks)
    return root


def test_source_is_detected_and_listed_in_order(dopamine_root, tmp_path):
    assert detect_source(dopamine_root) == "dopamine"
    assert detect_source(dopamine_root / "episode_001") == "dopamine"  # one episode folder alone
    assert [p.name for p in list_dopamine_episodes(dopamine_root)] == ["episode_001", "episode_002"]
    released = json.loads((dopamine_root / "episode_001" / KEYFRAMES_JSON).read_text())
    assert released[0] == {"anotation": "grasp the cup", "start_frame_id": 4, "end_frame_id": 20}
    # Plain episode folders (no keyframes, no task_instruction.json) stay the video layout.
    ep = load_dopamine_episode(dopamine_root / "episode_001")
    write_episode_folder(tmp_path / "plain" / "ep0", ep)
    assert not is_dopamine_source(tmp_path / "plain") and detect_source(tmp_path / "plain") == "video"


def test_keyframe_progress_is_step_wise():
    shared = keyframe_progress(SUBTASKS["episode_001"], T)
    expected = {0: 0.0, 3: 0.0, 4: 0.0, 12: 0.25, 19: (15 / 16) / 2, 20: 0.5, 28: 0.75, 36: 1.0, 39: 1.0}
    for frame, value in expected.items():
        assert shared[frame] == pytest.approx(value, abs=1e-6), frame
    gap = keyframe_progress(SUBTASKS["episode_002"], T)
    expected = {0: 0.0, 5: 0.25, 10: 0.5, 13: 0.5, 16: 0.5, 23: 0.75, 30: 1.0, 39: 1.0}
    for frame, value in expected.items():
        assert gap[frame] == pytest.approx(value, abs=1e-6), frame
    assert np.all(np.diff(shared) >= 0) and np.all(np.diff(gap) >= 0)


def test_full_rate_episode_carries_labels_instruction_and_subtasks(dopamine_root):
    ep = load_dopamine_episode(dopamine_root / "episode_002", episode_index=1)
    assert ep.cameras == list(CAMERAS) and ep.length == T and ep.image_size == SIZE and ep.fps == pytest.approx(FPS)
    assert ep.task == INSTRUCTIONS[0] and ep.meta["instructions"] == INSTRUCTIONS
    np.testing.assert_allclose(ep.progress, keyframe_progress(SUBTASKS["episode_002"], T))
    assert ep.outcome == "success" and ep.meta["success"] is True
    assert [s["text"] for s in ep.meta["subtasks"]] == ["grasp the cup", "place the cup"]
    assert load_dopamine_episode(dopamine_root / "episode_002", task="wipe it").task == "wipe it"


def test_striding_and_resizing_on_decode(dopamine_root):
    ep = load_dopamine_episode(dopamine_root / "episode_001", fps=10, max_side=32)
    kept = list(range(0, T, 3))  # every third frame of 30 fps; frame 39 (the end state) is one of them
    assert ep.meta["frame_index"] == kept and ep.fps == pytest.approx(10)
    assert {cam: v.shape for cam, v in ep.frames.items()} == {cam: (len(kept), 24, 32, 3) for cam in CAMERAS}
    np.testing.assert_allclose(ep.progress, keyframe_progress(SUBTASKS["episode_001"], T)[kept])
    # The kept frames are the native frames they claim to be (the square moves every frame).
    full = load_dopamine_episode(dopamine_root / "episode_001", max_side=32)
    err = np.abs(full.frames["cam_high"][kept].astype(int) - ep.frames["cam_high"].astype(int)).mean()
    off_by_one = np.abs(
        full.frames["cam_high"][[k + 1 for k in kept[:-1]]].astype(int) - ep.frames["cam_high"][:-1].astype(int)
    ).mean()
    assert err < 1.0 < off_by_one


@pytest.mark.parametrize(
    "content, expected",
    [
        (["clean the table", "organize the table"], "clean the table"),
        ({"task_instruction": "clean the table"}, "clean the table"),
        ({"instruction": "clean the table"}, "clean the table"),
        ("clean the table", "clean the table"),
    ],
)
def test_instruction_formats(dopamine_root, tmp_path, content, expected):
    root = tmp_path / "other"
    (root / "episode_001").mkdir(parents=True)
    for f in (dopamine_root / "episode_001").iterdir():
        (root / "episode_001" / f.name).symlink_to(f)
    (root / "task_instruction.json").write_text(json.dumps(content))
    assert load_dopamine_episode(root / "episode_001").task == expected


def _copy_episode(dopamine_root, tmp_path, keyframes=None, instruction=INSTRUCTIONS):
    root = tmp_path / "other"
    folder = root / "episode_001"
    folder.mkdir(parents=True)
    for cam in CAMERAS:
        (folder / f"{cam}.mp4").symlink_to(dopamine_root / "episode_001" / f"{cam}.mp4")
    if keyframes is not None:
        (folder / KEYFRAMES_JSON).write_text(json.dumps(keyframes))
    if instruction is not None:
        (root / "task_instruction.json").write_text(json.dumps(instruction))
    return folder


@pytest.mark.parametrize(
    "keyframes, culprit",
    [
        ([], "non-empty list"),
        ({"start_frame_id": 0}, "non-empty list"),
        ([{"start_frame_id": 0}], "'end_frame_id'"),
        ([{"start_frame_id": -1, "end_frame_id": 5}], "'start_frame_id'"),
        ([{"start_frame_id": 9, "end_frame_id": 9}], "must be after"),
        ([{"start_frame_id": 0, "end_frame_id": 20}, {"start_frame_id": 15, "end_frame_id": 30}], "overlapping"),
        ([{"start_frame_id": 0, "end_frame_id": 41}], "past the end"),
    ],
)
def test_bad_keyframes_name_the_file_and_field(dopamine_root, tmp_path, keyframes, culprit):
    folder = _copy_episode(dopamine_root, tmp_path, keyframes)
    with pytest.raises(EpisodeSourceError, match=KEYFRAMES_JSON) as info:
        load_dopamine_episode(folder)
    assert culprit in str(info.value)


def test_missing_instruction_or_keyframes(dopamine_root, tmp_path):
    folder = _copy_episode(dopamine_root, tmp_path, keyframes=None, instruction=None)
    with pytest.raises(EpisodeSourceError, match="task_instruction.json is missing; pass --task"):
        load_dopamine_episode(folder)
    unlabelled = load_dopamine_episode(folder, task="clear the table")  # no keyframes: no labels, no outcome
    assert unlabelled.progress is None and unlabelled.outcome is None and unlabelled.length == T
    (folder.parent / "task_instruction.json").write_text(json.dumps({"task": 3}))
    with pytest.raises(EpisodeSourceError, match="task_instruction.json.*'task_instruction'"):
        load_dopamine_episode(folder)
