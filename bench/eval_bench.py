"""Throughput of ``prism-reward eval`` on CPU: episodes/min and frames/s (prints figures).

Builds N synthetic two-camera episodes (real mp4 files in the episode-folder layout), then runs
the evaluation with the oracle and, if given (``--grm PATH``) or found under ``runs/``, a GRM
checkpoint. Model-only frames/s (from the report) is printed beside the end-to-end figure,
which includes decoding, plots and overlay videos.

    .venv/bin/python bench/eval_bench.py --episodes 20 --frames 50 [--grm runs/grm/best]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from episodes import Episode
from episodes.video_folder import write_episode_folder
from reward_models.evaluate import EvalConfig, run_eval


def synthetic(i: int, T: int, size: int) -> Episode:
    final = [1.0, 0.6, 0.2][i % 3]
    prog = np.linspace(0, final, T).astype(np.float32)
    front = np.full((T, size, size, 3), 40, np.uint8)
    for t in range(T):
        x = int(4 + (size - 16) * prog[t])
        front[t, size // 2 - 4 : size // 2 + 4, x : x + 8] = (230, 30, 30)
    wrist = np.repeat((prog * 255).astype(np.uint8)[:, None, None, None], size, 1).repeat(size, 2).repeat(3, 3)
    return Episode(
        task="push the red block",
        frames={"front": front, "wrist": wrist},
        fps=10,
        progress=prog,
        outcome=["success", "partial", "fail"][i % 3],
        episode_index=i,
        meta={"policy": f"p{i % 2}"},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument(
        "--grm",
        type=str,
        default=None,
        help="GRM checkpoint dir (default: first runs/**/config.json with model.safetensors)",
    )
    ap.add_argument("--videos", type=int, default=0, help="overlay mp4s to write (0 isolates scoring cost)")
    args = ap.parse_args()

    grm = args.grm
    if grm is None:
        found = [p.parent for p in Path("runs").glob("**/model.safetensors")] if Path("runs").exists() else []
        grm = str(found[0]) if found else None
    work = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    try:
        for i in range(args.episodes):
            write_episode_folder(work / "data" / f"ep{i:03d}", synthetic(i, args.frames, args.size))
        specs = [["oracle"]] + ([[grm]] if grm else [])
        for spec in specs:
            t0 = time.time()
            res = run_eval(
                EvalConfig(
                    model=spec,
                    data=str(work / "data"),
                    out=str(work / "out"),
                    videos=args.videos,
                    progress_bar=False,
                    device="cpu",
                    batch_size=32,
                )
            )
            dt = time.time() - t0
            n_frames = sum(m["frames"] for m in res["models"].values())
            m = next(iter(res["models"].values()))
            print(
                f"{spec[0]:>40}: {args.episodes} episodes x {args.frames} frames ({args.size}px, 2 cams), "
                f"end-to-end {dt:.1f}s = {60 * args.episodes / dt:.1f} episodes/min, {n_frames / dt:.0f} frames/s; "
                f"model only {m['frames_per_s']:.0f} frames/s"
            )
        if not grm:
            print("(no GRM checkpoint found: pass --grm PATH to benchmark one)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
