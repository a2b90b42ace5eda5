"""episodes.lerobot: LeRobot v3.0 datasets written with real H.264 video and read back."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from episodes import (
    EpisodeDataset,
    LeRobotWriter,
    NotALeRobotDatasetError,
    VideoError,
    open_dataset,
    write_dataset,
)

FPS, IMAGE_SIZE, CAMERAS = 10, (48, 64), ["front", "wrist"]


def writer_kwargs(**overrides):
    kwargs = dict(fps=FPS, cameras=CAMERAS, image_size=IMAGE_SIZE)
    kwargs.update(overrides)
    return kwargs


def mean_abs_error(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_same_episode(read, original, cameras=CAMERAS):
    assert read.task == original.task
    assert read.length == original.length
    assert read.fps == original.fps
    assert read.cameras == list(cameras)
    for cam in cameras:
        decoded, source = read.frames[cam], original.frames[cam]
        assert decoded.shape == source.shape
        assert mean_abs_error(decoded, source) < 3
        # Boundaries: the first and last decoded frames are nearest to the episode's own first
        # and last frames, not to a neighbour's (the square moves 3 px per step).
        for k in (0, -1):
            err_own = mean_abs_error(decoded[k], source[k])
            err_shift = mean_abs_error(decoded[k], source[1 if k == 0 else -2])
            assert err_own < err_shift
    for name in ("state", "action", "reward", "done", "success", "progress", "stage"):
        expected, got = getattr(original, name), getattr(read, name)
        if expected is None:
            assert got is None, name
        else:
            assert got.dtype == np.asarray(expected).dtype, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
    assert read.outcome == original.outcome
    assert read.task_name == original.task_name
    assert read.meta == original.meta


def test_round_trip_several_episodes_and_tasks(tmp_path, episodes):
    root = write_dataset(tmp_path / "ds", episodes, progress=False)
    ds = open_dataset(root)
    assert isinstance(ds, EpisodeDataset)
    assert len(ds) == ds.num_episodes == 5
    assert ds.episode_lengths == [12, 30, 7, 25, 18]
    assert ds.fps == FPS and ds.cameras == CAMERAS and ds.image_size == IMAGE_SIZE
    assert ds.tasks == ["reach the red cube", "push the cube to the goal"]
    for i in [3, 0, 4]:  # random access
        assert_same_episode(ds.load_episode(i), episodes[i])
        assert ds.load_episode(i).episode_index == i
    for read, original in zip(ds.iter_episodes(progress=False), episodes, strict=True):
        assert_same_episode(read, original)


def test_layout_and_metadata_follow_lerobot_v3(tmp_path, episodes):
    root = write_dataset(tmp_path / "ds", episodes, progress=False, robot_type="ur5e")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["robot_type"] == "ur5e"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (5, 92, 2)
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 500)
    assert info["fps"] == 10 and info["splits"] == {"train": "0:5"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert features["observation.state"] == {"dtype": "float32", "shape": [5], "names": None}
    assert features["action"]["shape"] == [3]
    video = features["observation.images.front"]
    assert video["dtype"] == "video" and video["shape"] == [48, 64, 3]
    assert video["names"] == ["height", "width", "channels"]
    assert video["info"] == {
        "video.height": 48, "video.width": 64, "video.codec": "h264", "video.pix_fmt": "yuv420p",
        "video.is_depth_map": False, "video.fps": 10, "video.channels": 3, "has_audio": False,
    }  # fmt: skip
    for name, dtype in [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                        ("index", "int64"), ("task_index", "int64"), ("next.reward", "float32"),
                        ("next.done", "bool"), ("next.success", "bool"), ("progress", "float32"),
                        ("stage", "int64")]:  # fmt: skip
        assert features[name] == {"dtype": dtype, "shape": [1], "names": None}

    # Every data column is declared (LeRobot builds its parquet schema from the features).
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    declared = {k for k, ft in features.items() if ft["dtype"] != "video"}
    assert set(data.column_names) == declared
    assert data["index"].to_pylist() == list(range(92))
    assert data["frame_index"].to_pylist()[:13] == list(range(12)) + [0]
    np.testing.assert_allclose(data["timestamp"].to_numpy()[12:14], [0.0, 0.1], atol=1e-6)

    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    assert tasks.index.name == "task"
    assert tasks.loc["push the cube to the goal", "task_index"] == 1

    eps = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    assert list(eps["dataset_from_index"]) == [0, 12, 42, 49, 74]
    assert list(eps["dataset_to_index"]) == [12, 42, 49, 74, 92]
    assert list(eps["tasks"].map(list)) == [["reach the red cube"], ["push the cube to the goal"]] * 2 + [
        ["reach the red cube"]
    ]
    key = "videos/observation.images.wrist"
    np.testing.assert_allclose(eps[f"{key}/from_timestamp"], [0.0, 1.2, 4.2, 4.9, 7.4])
    np.testing.assert_allclose(eps[f"{key}/to_timestamp"], [1.2, 4.2, 4.9, 7.4, 9.2])
    for column in ["episode_index", "length", "data/chunk_index", "data/file_index", f"{key}/chunk_index",
                   f"{key}/file_index", "meta/episodes/chunk_index", "meta/episodes/file_index"]:  # fmt: skip
        assert column in eps.columns
    assert list(eps["outcome"]) == ["success", "partial", "fail", "success", "partial"]
    assert json.loads(eps["meta_json"][1]) == {"policy": "scripted", "seed": 1}

    stats = json.loads((root / "meta/stats.json").read_text())
    image = stats["observation.images.front"]
    assert np.asarray(image["mean"]).shape == (3, 1, 1)
    assert 0.0 <= np.min(image["min"]) and np.max(image["max"]) <= 1.0
    all_progress = np.concatenate([e.progress for e in episodes])
    assert stats["progress"]["count"] == [92]
    np.testing.assert_allclose(stats["progress"]["mean"], [all_progress.mean()], rtol=1e-5)
    np.testing.assert_allclose(stats["observation.state"]["max"], np.max([e.state.max(0) for e in episodes], 0))
    assert not any(p.name.startswith("ds.") for p in tmp_path.iterdir())  # no temporaries left


def test_rolled_files_and_chunks_keep_episode_boundaries(tmp_path, episodes):
    # Tiny size budgets force new data/video files after almost every episode, and
    # chunks_size=2 moves to a new chunk every two files.
    root = write_dataset(
        tmp_path / "ds", episodes, progress=False,
        video_files_size_in_mb=0.004, data_files_size_in_mb=0.001, chunks_size=2,
    )  # fmt: skip
    videos = sorted(p.relative_to(root).as_posix() for p in (root / "videos").rglob("*.mp4"))
    front = [v for v in videos if "front" in v]
    assert len(front) >= 3, videos
    assert any("chunk-001" in v for v in front)
    assert len(list((root / "data").rglob("*.parquet"))) >= 3
    eps = pd.read_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    # Several episodes share a file somewhere, and from_timestamp restarts at 0 in a new file.
    key = "videos/observation.images.front"
    files = list(zip(eps[f"{key}/chunk_index"], eps[f"{key}/file_index"]))
    assert 3 <= len(set(files)) < len(files)
    for i, (chunk_file, start) in enumerate(zip(files, eps[f"{key}/from_timestamp"])):
        first_in_file = i == 0 or files[i - 1] != chunk_file
        assert (start == 0.0) == first_in_file

    ds = open_dataset(root)
    for read, original in zip(ds.iter_episodes(progress=False), episodes, strict=True):
        assert_same_episode(read, original)
    for i in [4, 1, 2]:
        assert_same_episode(ds.load_episode(i), episodes[i])


def test_episodes_sharing_a_video_file_split_exactly(tmp_path, episode_factory):
    # Five episodes in one file per camera: each must get exactly its own frames.
    eps = [episode_factory(n, seed=s) for s, n in enumerate([5, 9, 6, 8, 7])]
    root = write_dataset(tmp_path / "ds", eps, progress=False)
    assert len(list((root / "videos").rglob("*.mp4"))) == 2
    # Episodes this short have every frame in the image statistics: they are exact.
    stats = json.loads((root / "meta/stats.json").read_text())["observation.images.front"]
    pixels = np.concatenate([e.frames["front"] for e in eps]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.ravel(stats["mean"]), pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(np.ravel(stats["std"]), pixels.std(0), rtol=1e-6)
    np.testing.assert_allclose(np.ravel(stats["max"]), pixels.max(0))
    assert stats["count"] == [35]
    ds = open_dataset(root)
    for i, read in enumerate(ds):
        assert_same_episode(read, eps[i])


def test_camera_selection_and_errors(tmp_path, episodes):
    ds = open_dataset(write_dataset(tmp_path / "ds", episodes[:2], progress=False))
    ep = ds.load_episode(1, cameras=["wrist"])
    assert ep.cameras == ["wrist"]
    assert mean_abs_error(ep.frames["wrist"], episodes[1].frames["wrist"]) < 3
    assert ds.load_episode(0, cameras=["observation.images.front"]).cameras == ["front"]
    assert [e.cameras for e in ds.iter_episodes(cameras=["front"], progress=False)] == [["front"]] * 2
    with pytest.raises(ValueError, match=r"unknown camera 'top'.*\['front', 'wrist'\]"):
        ds.load_episode(0, cameras=["top"])
    with pytest.raises(IndexError, match="out of range.*2 episodes"):
        ds.load_episode(2)


def test_dataset_without_optional_labels_reads_them_as_none(tmp_path, episode_factory):
    eps = [episode_factory(n, seed=s, state_dim=0, action_dim=0, labels=False) for s, n in enumerate([6, 4])]
    root = write_dataset(tmp_path / "ds", eps, progress=False)
    features = json.loads((root / "meta/info.json").read_text())["features"]
    assert "progress" not in features and "observation.state" not in features
    ds = open_dataset(root)
    for read, original in zip(ds, eps, strict=True):
        assert_same_episode(read, original)
        assert read.progress is None and read.state is None and read.outcome is None


def test_state_and_action_names_are_recorded(tmp_path, episode_factory):
    names = [f"joint_{i}" for i in range(5)]
    with LeRobotWriter(tmp_path / "ds", **writer_kwargs(state_names=names, action_names=["x", "y", "z"])) as w:
        w.add_episode(episode_factory(6))
    features = json.loads((tmp_path / "ds/meta/info.json").read_text())["features"]
    assert features["observation.state"]["names"] == names
    assert features["action"]["names"] == ["x", "y", "z"]


# -- atomicity and overwrite ------------------------------------------------------------------


def test_interrupted_write_leaves_nothing(tmp_path, episodes):
    target = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        with LeRobotWriter(target, **writer_kwargs()) as writer:
            writer.add_episode(episodes[0])
            writer.add_episode(episodes[1])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_overwrite_semantics(tmp_path, episodes):
    target = tmp_path / "ds"
    write_dataset(target, episodes[:2], progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_dataset(target, episodes[2:], progress=False)
    assert open_dataset(target).num_episodes == 2

    # A failing overwrite keeps the old dataset whole.
    with pytest.raises(RuntimeError):
        with LeRobotWriter(target, **writer_kwargs(overwrite=True)) as writer:
            writer.add_episode(episodes[4])
            raise RuntimeError("recorder crashed")
    assert open_dataset(target).episode_lengths == [12, 30]

    write_dataset(target, episodes[2:], progress=False, overwrite=True)
    ds = open_dataset(target)
    assert ds.episode_lengths == [7, 25, 18]
    assert_same_episode(ds.load_episode(0), episodes[2])
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


# -- bad input to the writer -------------------------------------------------------------------


def test_zero_episodes_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="no episodes"):
        write_dataset(tmp_path / "ds", [], progress=False)
    with pytest.raises(ValueError, match="no episodes"):
        with LeRobotWriter(tmp_path / "ds", **writer_kwargs()):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(cameras=["front"]), r"cameras \['front'\] differ from the declared cameras \['front', 'wrist'\]"),
        (dict(size=(32, 64)), r"32x64 \(H x W\) but the dataset declares image_size=\(48, 64\)"),
        (dict(state_dim=4), "state has 4 dimensions but earlier episodes have 5"),
        (dict(action_dim=0), "has no action but earlier episodes have 3"),
        (dict(labels=False), "lacks 'reward' labels but earlier episodes have them"),
    ],
)
def test_mismatched_episodes_are_rejected(tmp_path, episode_factory, bad, message):
    with pytest.raises(ValueError, match=message):
        with LeRobotWriter(tmp_path / "ds", **writer_kwargs()) as writer:
            writer.add_episode(episode_factory(6, seed=0))
            writer.add_episode(episode_factory(6, seed=1, **bad))
    assert list(tmp_path.iterdir()) == []


def test_declared_shapes_are_enforced_from_the_first_episode(tmp_path, episode_factory):
    with pytest.raises(ValueError, match="state has 5 dimensions but state_names have 7"):
        with LeRobotWriter(tmp_path / "ds", **writer_kwargs(state_names=[str(i) for i in range(7)])) as w:
            w.add_episode(episode_factory(6))
    with pytest.raises(ValueError, match="recorded at 10 fps but the dataset is 15 fps"):
        with LeRobotWriter(tmp_path / "ds", **writer_kwargs(fps=15)) as w:
            w.add_episode(episode_factory(6))
    with pytest.raises(ValueError, match="even"):
        LeRobotWriter(tmp_path / "ds", **writer_kwargs(image_size=(47, 64)))
    with pytest.raises(RuntimeError, match="context manager"):
        LeRobotWriter(tmp_path / "ds", **writer_kwargs()).add_episode(episode_factory(6))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_a_clear_error(tmp_path, episodes):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not_a_dir"):
        write_dataset(blocker / "ds", episodes[:1], progress=False)
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="locked"):
            write_dataset(locked / "ds", episodes[:1], progress=False)


# -- bad datasets for the reader ---------------------------------------------------------------


@pytest.fixture
def small_dataset(tmp_path, episodes):
    return write_dataset(tmp_path / "ds", episodes[:3], progress=False)


def test_a_directory_that_is_not_a_dataset(tmp_path):
    with pytest.raises(NotALeRobotDatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "video.mp4").write_bytes(b"")
    with pytest.raises(NotALeRobotDatasetError, match=r"plain.*meta/info.json is missing"):
        open_dataset(tmp_path / "plain")
    assert issubclass(NotALeRobotDatasetError, ValueError)


def test_a_v21_dataset_is_refused_with_a_conversion_hint(small_dataset):
    info_path = small_dataset / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["codebase_version"] = "v2.1"
    info_path.write_text(json.dumps(info))
    with pytest.raises(NotALeRobotDatasetError, match=r"'v2.1' but v3.0 is required.*convert"):
        open_dataset(small_dataset)


def test_broken_metadata_is_named(small_dataset):
    (small_dataset / "meta/info.json").write_text("{not json")
    with pytest.raises(NotALeRobotDatasetError, match="info.json is not valid JSON"):
        open_dataset(small_dataset)


@pytest.mark.parametrize(
    "victim, message",
    [
        ("meta/tasks.parquet", "meta/tasks.parquet is missing"),
        ("meta/episodes", "no episode tables under meta/episodes"),
        ("data/chunk-000/file-000.parquet", r"missing: \['data/chunk-000/file-000.parquet'\]"),
        ("videos/observation.images.wrist/chunk-000/file-000.mp4", "observation.images.wrist/chunk-000/file-000.mp4"),
    ],
)
def test_missing_files_are_named(small_dataset, victim, message):
    path = small_dataset / victim
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(NotALeRobotDatasetError, match=message):
        open_dataset(small_dataset)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_video_names_the_file(small_dataset, damage):
    video = small_dataset / "videos/observation.images.front/chunk-000/file-000.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2] if damage == "truncate" else os.urandom(len(data)))
    ds = open_dataset(small_dataset)  # metadata is fine; the error comes when frames are decoded
    with pytest.raises(VideoError, match="observation.images.front/chunk-000/file-000.mp4"):
        ds.load_episode(1)
    with pytest.raises(VideoError, match="file-000.mp4"):
        list(ds.iter_episodes(progress=False))
    # The other camera still decodes.
    assert ds.load_episode(1, cameras=["wrist"]).length == 30


def test_video_shorter_than_the_metadata_says(tmp_path, episodes):
    root = write_dataset(tmp_path / "ds", episodes[:2], progress=False)
    eps_path = root / "meta/episodes/chunk-000/file-000.parquet"
    eps = pd.read_parquet(eps_path)
    eps.loc[1, "videos/observation.images.front/from_timestamp"] = 2.0  # past the end of the file
    eps.to_parquet(eps_path)
    with pytest.raises(VideoError, match=r"frames missing.*file-000.mp4|file-000.mp4.*frames missing"):
        open_dataset(root).load_episode(1)


def test_a_rejected_episode_can_be_skipped(tmp_path, episode_factory):
    # Validation happens before anything is written, so a recorder may catch it and go on.
    with LeRobotWriter(tmp_path / "ds", **writer_kwargs()) as writer:
        writer.add_episode(episode_factory(6, seed=0))
        with pytest.raises(ValueError, match="cameras"):
            writer.add_episode(episode_factory(6, seed=1, cameras=["front"]))
        writer.add_episode(episode_factory(8, seed=2))
    ds = open_dataset(tmp_path / "ds")
    assert ds.episode_lengths == [6, 8]
    assert_same_episode(ds.load_episode(1), episode_factory(8, seed=2))


def test_a_failure_half_way_through_an_episode_discards_the_dataset(tmp_path, episode_factory, monkeypatch):
    from episodes import video

    def failing_write(self, frames):
        raise OSError("disk full")

    # Swallowing the error inside the block does not let a half-written episode be committed.
    with pytest.raises(RuntimeError, match=r"failed half-way \(OSError\('disk full'\)\); nothing written"):
        with LeRobotWriter(tmp_path / "ds", **writer_kwargs()) as writer:
            writer.add_episode(episode_factory(6, seed=0))
            monkeypatch.setattr(video.VideoWriter, "write", failing_write)
            with pytest.raises(OSError, match="disk full"):
                writer.add_episode(episode_factory(6, seed=1))
            monkeypatch.undo()
            with pytest.raises(RuntimeError, match="failed half-way"):
                writer.add_episode(episode_factory(6, seed=2))
    assert list(tmp_path.iterdir()) == []


# -- datasets written by LeRobot itself ---------------------------------------------------------

LEROBOT_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "lerobot_0.4.4_written")


def test_reads_a_dataset_written_by_lerobot(episode_factory):
    # Written by lerobot 0.4.4 (tests/episodes/data/make_lerobot_fixture.py): its own episode
    # stats columns, an unnamed task index, crf-30 H.264 video and an `image` feature (PNG bytes
    # in the parquet) for the wrist camera.
    specs = [(9, 0, "reach the red cube"), (6, 1, "push the cube to the goal"), (7, 2, "reach the red cube")]
    ds = open_dataset(LEROBOT_FIXTURE)
    assert ds.num_episodes == 3 and ds.episode_lengths == [9, 6, 7]
    assert ds.cameras == ["front", "wrist"] and ds.image_size == (48, 64) and ds.fps == 10
    assert ds.tasks == ["reach the red cube", "push the cube to the goal"]
    assert ds.robot_type == "panda"
    for read, (length, seed, task) in zip(ds.iter_episodes(progress=False), specs, strict=True):
        original = episode_factory(length, seed=seed, task=task)
        assert read.task == task and read.length == length
        np.testing.assert_array_equal(read.state, original.state)
        np.testing.assert_array_equal(read.action, original.action)
        np.testing.assert_array_equal(read.reward, original.reward)
        np.testing.assert_array_equal(read.done, original.done)
        assert read.progress is None and read.stage is None and read.success is None
        assert read.outcome is None and read.task_name is None and read.meta == {}
        # PNG frames are lossless; the video is LeRobot's crf 30 encode.
        np.testing.assert_array_equal(read.frames["wrist"], original.frames["wrist"])
        front, source = read.frames["front"].astype(int), original.frames["front"].astype(int)
        assert np.abs(front - source).mean() < 6
        errors = np.abs(front[:, None] - source[None]).mean(axis=(2, 3, 4))
        assert list(errors.argmin(axis=1)) == list(range(length))  # boundaries right
    assert ds.load_episode(2, cameras=["front"]).cameras == ["front"]
