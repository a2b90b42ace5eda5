"""Interoperability with the real LeRobot library (``lerobot`` 0.4.4), in both directions.

The tests that need ``lerobot`` skip unless it is importable: lerobot 0.4.x pins torch < 2.11,
which clashes with the torch of our ``learn`` extra, so it lives in its own environment, which
``scripts/lerobot_compat.sh`` builds (cached) and runs these tests in; CI runs that script.
Videos decode with PyAV: LeRobot's default torchcodec backend needs system FFmpeg libraries.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from episodes import open_dataset, write_dataset
from episodes.rabc import RABC_PROGRESS_FILE, write_rabc_progress

FPS = 10
VIDEO_BACKEND = "pyav"


@pytest.fixture
def LeRobotDataset():  # named as the class it returns
    module = pytest.importorskip(
        "lerobot.datasets.lerobot_dataset",
        reason="lerobot (0.4.x) is not installed here; scripts/lerobot_compat.sh runs these tests in its own venv",
    )
    return module.LeRobotDataset


def test_rabc_progress_file_has_sarms_schema(tmp_path):
    """Columns, dtypes, row order and metadata as SARM's compute_rabc_weights.py writes them."""
    path = write_rabc_progress(tmp_path / RABC_PROGRESS_FILE, index=[3, 4, 0, 1, 2], episode_index=[1, 1, 0, 0, 0],
                               frame_index=[0, 1, 0, 1, 2], progress=[0.0, 1.0, 0.0, 0.5, float("nan")],
                               reward_model="grm")  # fmt: skip
    table = pq.read_table(path)
    assert table.schema.names == ["index", "episode_index", "frame_index", "progress_sparse", "progress_dense"]
    assert [str(t) for t in table.schema.types] == ["int64", "int64", "int64", "float", "float"]
    assert table.schema.metadata == {b"reward_model_path": b"grm"}
    df = table.to_pandas()
    assert df["index"].tolist() == [0, 1, 2, 3, 4] and df["episode_index"].tolist() == [0, 0, 0, 1, 1]
    assert df["frame_index"].tolist() == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(df["progress_sparse"], [0.0, 0.5, np.nan, 0.0, 1.0])
    np.testing.assert_array_equal(df["progress_dense"], df["progress_sparse"])
    with pytest.raises(ValueError, match="differ in length"):
        write_rabc_progress(tmp_path / "bad.parquet", [0, 1], [0, 0], [0, 1], [0.5], "grm")
    assert not (tmp_path / "bad.parquet").exists()


def test_lerobot_loads_our_dataset(tmp_path, episodes, LeRobotDataset):
    root = write_dataset(tmp_path / "ours", episodes, progress=False)
    ds = LeRobotDataset("local/prism_ours", root=root, video_backend=VIDEO_BACKEND)
    assert ds.num_episodes == 5
    assert len(ds) == sum(e.length for e in episodes) == ds.meta.total_frames
    assert ds.fps == FPS
    assert set(ds.meta.video_keys) == {"observation.images.front", "observation.images.wrist"}

    offsets = np.cumsum([0] + [e.length for e in episodes])
    for ep_idx, k in [(0, 0), (1, 0), (1, 29), (3, 12), (4, 17)]:
        item = ds[int(offsets[ep_idx] + k)]
        episode = episodes[ep_idx]
        assert int(item["episode_index"]) == ep_idx and int(item["frame_index"]) == k
        assert item["task"] == episode.task
        np.testing.assert_array_equal(item["observation.state"].numpy(), episode.state[k])
        np.testing.assert_array_equal(item["action"].numpy(), episode.action[k])
        assert float(item["progress"]) == pytest.approx(float(episode.progress[k]))
        assert int(item["stage"]) == int(episode.stage[k])
        assert bool(item["next.done"]) == bool(episode.done[k])
        assert bool(item["next.success"]) == bool(episode.success[k])
        for cam in ("front", "wrist"):
            image = item[f"observation.images.{cam}"]
            assert tuple(image.shape) == (3, 48, 64) and str(image.dtype) == "torch.float32"
            decoded = (image.permute(1, 2, 0).numpy() * 255).round()
            assert np.abs(decoded - episode.frames[cam][k]).mean() < 3

    # Episode-level metadata and our extra columns survive LeRobot's loader.
    assert ds.meta.episodes[1]["length"] == 30
    assert ds.meta.episodes[2]["outcome"] == "fail"
    assert ds.meta.stats["observation.images.front"]["mean"].shape == (3, 1, 1)


def test_lerobot_loads_our_rolled_files(tmp_path, episodes, LeRobotDataset):
    root = write_dataset(
        tmp_path / "rolled", episodes, progress=False,
        video_files_size_in_mb=0.004, data_files_size_in_mb=0.001, chunks_size=2,
    )  # fmt: skip
    ds = LeRobotDataset("local/prism_rolled", root=root, video_backend=VIDEO_BACKEND)
    offsets = np.cumsum([0] + [e.length for e in episodes])
    for ep_idx in range(5):
        for k in (0, episodes[ep_idx].length - 1):
            item = ds[int(offsets[ep_idx] + k)]
            decoded = (item["observation.images.front"].permute(1, 2, 0).numpy() * 255).round()
            assert np.abs(decoded - episodes[ep_idx].frames["front"][k]).mean() < 3


def test_we_read_a_dataset_lerobot_wrote(tmp_path, episodes, LeRobotDataset):
    features = {
        "observation.state": {"dtype": "float32", "shape": (5,), "names": None},
        "action": {"dtype": "float32", "shape": (3,), "names": None},
        "observation.images.front": {"dtype": "video", "shape": (48, 64, 3), "names": ["height", "width", "channels"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    }
    root = tmp_path / "theirs"
    ds = LeRobotDataset.create("local/prism_theirs", fps=FPS, root=root, features=features, use_videos=True,
                               robot_type="panda", vcodec="h264")  # fmt: skip
    for episode in episodes[:3]:
        for k in range(episode.length):
            ds.add_frame({
                "observation.state": episode.state[k],
                "action": episode.action[k],
                "observation.images.front": episode.frames["front"][k],
                "next.reward": episode.reward[k : k + 1],
                "task": episode.task,
            })  # fmt: skip
        ds.save_episode()
    ds.finalize()

    ours = open_dataset(root)
    assert ours.num_episodes == 3 and ours.cameras == ["front"] and ours.fps == FPS
    for read, original in zip(ours, episodes[:3], strict=True):
        assert read.task == original.task and read.length == original.length
        np.testing.assert_array_equal(read.state, original.state)
        np.testing.assert_array_equal(read.reward, original.reward)
        decoded, source = read.frames["front"].astype(int), original.frames["front"].astype(int)
        assert np.abs(decoded - source).mean() < 6  # LeRobot encodes at crf 30, lossier than our 18
        # Each decoded frame is nearest to its own source frame: episode boundaries are right.
        errors = np.abs(decoded[:, None] - source[None]).mean(axis=(2, 3, 4))
        assert list(errors.argmin(axis=1)) == list(range(original.length))
        assert read.progress is None and read.stage is None and read.outcome is None


def test_lerobot_rabc_weighting_reads_our_progress(tmp_path, episodes, LeRobotDataset):
    """LeRobot's RA-BC sample weighting reads our progress file for a dataset we wrote: frames of an
    episode that makes progress get full weight, frames of one that regresses get none, whichever
    head it is told to read."""
    rabc = pytest.importorskip("lerobot.utils.rabc")
    import torch

    root = write_dataset(tmp_path / "ours", episodes[:2], progress=False, data_files_size_in_mb=0.001, chunks_size=1)
    ds = LeRobotDataset("local/prism_rabc", root=root, video_backend=VIDEO_BACKEND)
    rows = [ds.hf_dataset[i] for i in range(len(ds))]
    index = [int(r["index"]) for r in rows]
    episode_index = [int(r["episode_index"]) for r in rows]
    frame_index = [int(r["frame_index"]) for r in rows]
    assert index == list(range(len(ds)))
    # Episode 0 makes steady progress; episode 1 undoes it.
    progress = [f / (episodes[e].length - 1) if e == 0 else 1 - f / (episodes[e].length - 1)
                for e, f in zip(episode_index, frame_index)]  # fmt: skip
    path = write_rabc_progress(root / RABC_PROGRESS_FILE, index, episode_index, frame_index, progress, "prism:grm")

    first_of = {e: index[episode_index.index(e)] for e in (0, 1)}
    batch = {"index": torch.tensor([first_of[0], first_of[0] + 1, first_of[1], first_of[1] + 1])}
    for head in ("sparse", "dense"):
        weights = rabc.RABCWeights(path, chunk_size=3, head_mode=head, device=torch.device("cpu"))
        assert weights.get_stats()["num_frames"] == len(ds)
        w, stats = weights.compute_batch_weights(batch)
        assert stats["num_full_weight"] == 2 and stats["num_zero_weight"] == 2
        np.testing.assert_allclose(w.numpy(), [2.0, 2.0, 0.0, 0.0], atol=1e-4)
