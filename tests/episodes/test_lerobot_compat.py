"""Interoperability with the real LeRobot library (``lerobot`` 0.4.x), in both directions.

Skipped unless ``lerobot`` is importable: lerobot 0.4.x pins torch < 2.11, which clashes with the
torch of our ``learn`` extra, so it lives in a separate environment. To run these tests::

    python3 -m venv /tmp/lr && /tmp/lr/bin/pip install "lerobot>=0.4,<0.5" pytest
    /tmp/lr/bin/pip install --no-deps -e .
    /tmp/lr/bin/python -m pytest tests/episodes/test_lerobot_compat.py
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "lerobot.datasets.lerobot_dataset",
    reason="lerobot (0.4.x) is not installed here; it needs its own venv because it pins torch<2.11",
)
import torch  # noqa: E402  (lerobot depends on torch)
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from episodes import open_dataset, write_dataset  # noqa: E402

FPS = 10


def _video_backend() -> str:
    """torchcodec when it really loads (it needs system FFmpeg libraries), else PyAV."""
    try:
        import torchcodec.decoders  # noqa: F401

        return "torchcodec"
    except Exception:
        return "pyav"


def test_lerobot_loads_our_dataset(tmp_path, episodes):
    root = write_dataset(tmp_path / "ours", episodes, progress=False)
    ds = LeRobotDataset("local/prism_ours", root=root, video_backend=_video_backend())
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
            assert image.shape == (3, 48, 64) and image.dtype == torch.float32
            decoded = (image.permute(1, 2, 0).numpy() * 255).round()
            assert np.abs(decoded - episode.frames[cam][k]).mean() < 3

    # Episode-level metadata and our extra columns survive LeRobot's loader.
    assert ds.meta.episodes[1]["length"] == 30
    assert ds.meta.episodes[2]["outcome"] == "fail"
    assert ds.meta.stats["observation.images.front"]["mean"].shape == (3, 1, 1)


def test_lerobot_loads_our_rolled_files(tmp_path, episodes):
    root = write_dataset(
        tmp_path / "rolled", episodes, progress=False,
        video_files_size_in_mb=0.004, data_files_size_in_mb=0.001, chunks_size=2,
    )  # fmt: skip
    ds = LeRobotDataset("local/prism_rolled", root=root, video_backend=_video_backend())
    offsets = np.cumsum([0] + [e.length for e in episodes])
    for ep_idx in range(5):
        for k in (0, episodes[ep_idx].length - 1):
            item = ds[int(offsets[ep_idx] + k)]
            decoded = (item["observation.images.front"].permute(1, 2, 0).numpy() * 255).round()
            assert np.abs(decoded - episodes[ep_idx].frames["front"][k]).mean() < 3


def test_we_read_a_dataset_lerobot_wrote(tmp_path, episodes):
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
