"""--camera-map: a recording's cameras renamed onto a model's views in prism-reward eval / train /
adapt, end to end on a Robo-Dopamine-layout folder of real mp4 files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from episodes.camera_map import (
    CameraMapError,
    apply_camera_map,
    parse_camera_map,
    source_camera_names,
)
from episodes.cli_errors import parse_config
from episodes.dopamine import (
    Subtask,
    keyframe_progress,
    write_dopamine_episode,
    write_task_instruction,
)
from reward_models.adapt_grm import AdaptConfig
from reward_models.cli import main as prism_reward
from reward_models.evaluate import EvalConfig
from reward_models.train_grm import GRMTrainConfig

T = 40
SUBTASKS = [Subtask(4, 20, "grasp the cup"), Subtask(20, 36, "place the cup")]


def _bar_frames(seed: int, camera: int) -> np.ndarray:
    """A bar that grows over the episode (the progress a model could read), 64x48."""
    frames = np.full((T, 48, 64, 3), 40 + 30 * camera, np.uint8)
    for t in range(T):
        frames[t, 10 + 4 * seed : 30 + 4 * seed, : 2 + int(60 * t / (T - 1))] = (220, 60 + 100 * camera, 40)
    return frames


@pytest.fixture(scope="module")
def dopamine_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dopamine") / "raw_data"
    write_task_instruction(root, ["put the cup on the plate"])
    for seed in range(2):
        write_dopamine_episode(
            root / f"episode_00{seed + 1}",
            {"cam_high": _bar_frames(seed, 0), "cam_left_wrist": _bar_frames(seed, 1)},
            fps=30,
            subtasks=SUBTASKS,
        )
    return root


@pytest.fixture(scope="module")
def front_grm(tmp_path_factory) -> Path:
    from reward_models.configuration_grm import GRMConfig
    from reward_models.modeling_grm import GRM, save_grm

    cfg = GRMConfig(image_size=32, cameras=("front",), embed_dim=16, conv_channels=(8, 8), hidden_dim=32, text_dim=8)
    return save_grm(GRM(cfg), tmp_path_factory.mktemp("ckpt") / "grm")


def one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------------
# The two functions every consumer shares
# --------------------------------------------------------------------------------------------


def test_parse_and_apply():
    mapping = parse_camera_map("cam_high=front, cam_left_wrist=wrist")
    assert mapping == {"cam_high": "front", "cam_left_wrist": "wrist"}
    assert parse_camera_map(["cam_high=front", "/cam/side/image_raw=side"]) == {
        "cam_high": "front",
        "/cam/side/image_raw": "side",
    }
    assert parse_camera_map(None) == {} == parse_camera_map("") and parse_camera_map(mapping) == mapping
    frames = {"cam_high": 1, "cam_left_wrist": 2, "cam_right_wrist": 3}
    renamed = apply_camera_map(frames, mapping)
    assert list(renamed.items()) == [("front", 1), ("wrist", 2), ("cam_right_wrist", 3)]  # unmapped kept
    assert source_camera_names(["front", "cam_right_wrist"], mapping) == ["cam_high", "cam_right_wrist"]


@pytest.mark.parametrize(
    "spec, culprit",
    [
        ("cam_high", "DATA_CAMERA=MODEL_VIEW"),
        ("cam_high=", "DATA_CAMERA=MODEL_VIEW"),
        ("=front", "DATA_CAMERA=MODEL_VIEW"),
        ("cam_high=front,cam_high=wrist", "mapped twice"),
        ("cam_high=front,cam_left_wrist=front", "all mapped onto 'front'"),
    ],
)
def test_malformed_maps_are_refused(spec, culprit):
    with pytest.raises(CameraMapError, match=culprit):
        parse_camera_map(spec)


def test_maps_that_do_not_fit_the_data_are_refused():
    with pytest.raises(CameraMapError, match=r"names camera\(s\) \['cam_low'\].*cam_high"):
        apply_camera_map({"cam_high": 1}, {"cam_low": "front"})
    with pytest.raises(CameraMapError, match="two cameras the name 'front'"):
        apply_camera_map({"front": 0, "cam_high": 1}, {"cam_high": "front"})


@pytest.mark.parametrize(
    "config_cls, required",
    [
        (EvalConfig, ["--model", "oracle", "--data", "d", "--out", "o"]),
        (GRMTrainConfig, ["--data", "d"]),
        (AdaptConfig, ["--checkpoint", "c", "--demo", "d", "--out", "o"]),
    ],
)
def test_repeated_flags_merge_in_every_command(config_cls, required):
    cfg = parse_config(
        config_cls,
        [*required, "--camera-map", "cam_high=front", "--camera-map", "cam_left_wrist=wrist,cam_right_wrist=side"],
    )
    assert parse_camera_map(cfg.camera_map) == {
        "cam_high": "front",
        "cam_left_wrist": "wrist",
        "cam_right_wrist": "side",
    }


# --------------------------------------------------------------------------------------------
# prism-reward eval / train / adapt on Robo-Dopamine's layout
# --------------------------------------------------------------------------------------------


def test_eval_oracle_on_the_dopamine_layout(dopamine_root, tmp_path):
    out = tmp_path / "report"
    assert (
        prism_reward(
            [
                "eval",
                "--model",
                "oracle",
                "--data",
                str(dopamine_root),
                "--out",
                str(out),
                "--camera-map",
                "cam_high=front",
                "--fps",
                "10",
                "--videos",
                "1",
                "--no-progress-bar",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source_kind"] == "dopamine" and metrics["n_episodes"] == 2
    assert metrics["eval_config"]["camera_map"] == ["cam_high=front"]
    sidecar = pq.read_table(out / "progress.parquet").to_pandas()
    labels = keyframe_progress(SUBTASKS, T)
    for _, rows in sidecar.groupby("episode_index"):
        assert rows["frame_index"].tolist() == list(range(0, T, 3))  # 30 fps strided to 10
        np.testing.assert_allclose(rows["phi.oracle"], labels[rows["frame_index"]], atol=1e-5)


def test_grm_with_other_view_names_needs_the_map(dopamine_root, front_grm, tmp_path, capsys):
    base = ["eval", "--model", str(front_grm), "--data", str(dopamine_root), "--videos", "0", "--no-progress-bar"]
    assert prism_reward([*base, "--out", str(tmp_path / "mapped"), "--camera-map", "cam_high=front"]) == 0
    (scored,) = json.loads((tmp_path / "mapped" / "metrics.json").read_text())["models"].values()
    assert scored["frames"] == 2 * T and len(scored["metrics"]["episodes"]) == 2
    assert prism_reward([*base, "--out", str(tmp_path / "unmapped")]) == 2
    line = one_error_line(capsys.readouterr().err, "prism-reward eval")
    assert "['front']" in line and "['cam_high', 'cam_left_wrist']" in line and "--camera-map" in line
    assert not (tmp_path / "unmapped").exists()


@pytest.mark.parametrize("extra", [[], ["--skip-bad"]])
def test_a_map_naming_a_missing_camera_is_one_line(dopamine_root, tmp_path, capsys, extra):
    assert (
        prism_reward(
            [
                "eval",
                "--model",
                "oracle",
                "--data",
                str(dopamine_root),
                "--out",
                str(tmp_path / "r"),
                "--camera-map",
                "cam_low=front",
                "--no-progress-bar",
                *extra,
            ]
        )
        == 2
    )
    line = one_error_line(capsys.readouterr().err, "prism-reward eval")
    assert "--camera-map names camera(s) ['cam_low']" in line and "cam_high" in line
    assert "every episode was skipped" not in line  # a configuration error, not a bad episode
    assert not (tmp_path / "r").exists()


def test_train_and_adapt_read_the_dopamine_layout_through_the_map(dopamine_root, front_grm, tmp_path, capsys):
    from reward_models.registry import load_progress_model

    common = ["--steps", "2", "--num-threads", "1", "--no-progress-bar", "--device", "cpu"]
    out = tmp_path / "trained"
    assert (
        prism_reward(
            [
                "train",
                "--data",
                str(dopamine_root),
                "--out",
                str(out),
                "--image-size",
                "16",
                "--camera-map",
                "cam_high=front,cam_left_wrist=wrist",
                "--fps",
                "10",
                *common,
            ]
        )
        == 0
    )
    trained = load_progress_model(str(out), device="cpu")
    assert trained.cameras == ("front", "wrist")
    assert trained.grm_config.training["camera_map"] == {"cam_high": "front", "cam_left_wrist": "wrist"}
    assert trained.grm_config.training["successful_episodes"] == 2  # keyframe labels end at 1

    adapted = tmp_path / "adapted"
    base = [
        "adapt",
        "--checkpoint",
        str(front_grm),
        "--demo",
        str(dopamine_root),
        "--episode",
        "1",
        "--task",
        "stack the cups",
        *common,
    ]
    assert prism_reward([*base, "--out", str(adapted), "--camera-map", "cam_high=front"]) == 0
    record = load_progress_model(str(adapted), device="cpu").grm_config.training["adaptations"][-1]
    assert record["camera_map"] == {"cam_high": "front"} and record["task"] == "stack the cups"
    assert prism_reward([*base, "--out", str(tmp_path / "unmapped")]) == 2
    line = one_error_line(capsys.readouterr().err, "prism-reward adapt")
    assert "['front']" in line and "--camera-map" in line
