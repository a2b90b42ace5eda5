"""Throughput of the LeRobot v3 writer and reader on synthetic multi-camera episodes.

Prints frames/s for writing (H.264 encode + parquet) and for reading (sequential pass and
random access). Not part of the test run.

    python bench/bench_lerobot_io.py --episodes 20 --length 100 --size 128
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from episodes import Episode, open_dataset, write_dataset


def synthetic_episode(length: int, size: int, seed: int, cameras: list[str]) -> Episode:
    yy, xx = np.mgrid[:size, :size]
    frames = {}
    for c, cam in enumerate(cameras):
        f = np.empty((length, size, size, 3), np.uint8)
        f[..., 0] = (60 + 120 * xx / size).astype(np.uint8)
        f[..., 1] = (60 + 120 * yy / size).astype(np.uint8)
        f[..., 2] = 90 + 40 * c
        for t in range(length):
            x0 = (2 * t + 7 * seed) % (size - 16)
            f[t, 20:36, x0 : x0 + 16] = (230, 40, 40)
        frames[cam] = f
    rng = np.random.default_rng(seed)
    return Episode(
        task="reach the red cube",
        frames=frames,
        fps=10,
        state=rng.normal(size=(length, 18)).astype(np.float32),
        action=rng.normal(size=(length, 7)).astype(np.float32),
        progress=np.linspace(0, 1, length, dtype=np.float32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20, help="number of episodes")
    parser.add_argument("--length", type=int, default=100, help="frames per episode")
    parser.add_argument("--size", type=int, default=128, help="image height = width (even)")
    parser.add_argument("--cameras", type=int, default=3, help="cameras per episode")
    args = parser.parse_args()
    cameras = [f"cam{i}" for i in range(args.cameras)]
    episodes = [synthetic_episode(args.length, args.size, s, cameras) for s in range(args.episodes)]
    frames = args.episodes * args.length * args.cameras
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        t0 = time.perf_counter()
        write_dataset(root, episodes, progress=False)
        write_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
        ds = open_dataset(root)
        t0 = time.perf_counter()
        for _ in ds.iter_episodes(progress=False):
            pass
        seq_s = time.perf_counter() - t0
        order = np.random.default_rng(0).permutation(args.episodes)[: min(5, args.episodes)]
        t0 = time.perf_counter()
        for i in order:
            ds.load_episode(int(i))
        rand_s = (time.perf_counter() - t0) / len(order)
    print(f"{args.episodes} episodes x {args.length} frames x {args.cameras} cameras of {args.size}x{args.size}")
    print(f"write:      {frames / write_s:8.0f} camera-frames/s ({write_s:.2f} s, {size_mb:.1f} MiB on disk)")
    print(f"read seq:   {frames / seq_s:8.0f} camera-frames/s ({seq_s:.2f} s)")
    print(f"read 1 ep:  {rand_s * 1000:8.1f} ms per random episode")


if __name__ == "__main__":
    main()
