"""Plain video sources: layouts, frame-rate control, labels from episode.json, bad input."""

import json

import numpy as np
import pytest

from episodes import Episode, write_video
from episodes.video_folder import (
    EpisodeSourceError,
    decode_video,
    detect_layout,
    list_video_source,
    load_episode_folder,
    load_video_source,
    write_episode_folder,
)


def _frames(T=20, h=32, w=48):
    f = np.zeros((T, h, w, 3), np.uint8)
    for t in range(T):
        f[t, :, : 1 + int((w - 1) * t / (T - 1))] = 220  # a bar that grows with time
    return f


def _episode(T=20, final=1.0, policy="p0"):
    prog = np.linspace(0, final, T).astype(np.float32)
    return Episode(
        task="slide",
        frames={"front": _frames(T), "wrist": _frames(T)[:, ::-1].copy()},
        fps=10,
        progress=prog,
        outcome="success" if final == 1.0 else "fail",
        meta={"policy": policy},
    )


def test_episode_folder_roundtrip_with_labels_and_fps(tmp_path):
    write_episode_folder(tmp_path / "eps" / "a", _episode())
    write_episode_folder(tmp_path / "eps" / "b", _episode(final=0.4, policy="p1"))
    assert detect_layout(tmp_path / "eps") == "episode_folders"
    eps = list(load_video_source(tmp_path / "eps", fps=4))
    assert [e.outcome for e in eps] == ["success", "fail"]
    assert [e.meta["success"] for e in eps] == [True, False]
    assert eps[1].meta["policy"] == "p1"
    a = eps[0]
    assert a.cameras == ["front", "wrist"] and a.fps == 4
    # 20 frames at 10 fps -> every 2.5th frame, plus the final frame which is always kept
    assert a.length == 9
    assert a.progress[-1] == pytest.approx(1.0)
    # the kept last frame really is the end state (bar fully grown)
    assert a.frames["front"][-1][:, -4:].mean() > 180


def test_video_file_and_video_folder(tmp_path):
    write_video(tmp_path / "v" / "one.mp4", _frames(12), fps=12)
    write_video(tmp_path / "v" / "two.mp4", _frames(8), fps=8)
    assert detect_layout(tmp_path / "v") == "video_folder"
    assert detect_layout(tmp_path / "v" / "one.mp4") == "video"
    with pytest.raises(EpisodeSourceError, match="task"):
        list(load_video_source(tmp_path / "v"))
    eps = list(load_video_source(tmp_path / "v", task="slide", camera="side", max_side=24))
    assert [e.length for e in eps] == [12, 8]
    assert eps[0].cameras == ["side"] and max(eps[0].image_size) == 24


def test_bad_inputs_name_the_file(tmp_path):
    good = tmp_path / "ok.mp4"
    write_video(good, _frames(30), fps=10)
    data = good.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    for name in ("trunc.mp4", "junk.mp4", "missing.mp4"):
        with pytest.raises(EpisodeSourceError, match=name):
            decode_video(tmp_path / name)

    ep = tmp_path / "mismatch"
    ep.mkdir()
    write_video(ep / "front.mp4", _frames(10), fps=10)
    write_video(ep / "wrist.mp4", _frames(7), fps=10)
    with pytest.raises(EpisodeSourceError, match="different lengths"):
        load_episode_folder(ep, task="x")

    bad_json = tmp_path / "badjson"
    write_episode_folder(bad_json, _episode())
    (bad_json / "episode.json").write_text(json.dumps({"task": "x", "outcome": "great"}))
    with pytest.raises(EpisodeSourceError, match="outcome"):
        load_episode_folder(bad_json)
    (bad_json / "episode.json").write_text(json.dumps({"task": "x", "progress": [0.0, 1.0]}))
    with pytest.raises(EpisodeSourceError, match="progress"):
        load_episode_folder(bad_json)
    with pytest.raises(EpisodeSourceError, match="missing camera"):
        load_episode_folder(bad_json, cameras=["front", "top"])


def test_listing_is_sorted_and_skips_hidden(tmp_path):
    for n in ("b", "a", ".cache"):
        write_episode_folder(tmp_path / n, _episode(T=4))
    assert [p.name for p in list_video_source(tmp_path)] == ["a", "b"]
