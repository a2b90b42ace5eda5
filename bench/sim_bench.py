"""Speed of the sim package: raw physics, env steps, camera rendering, expert success rates.

Run: ``.venv/bin/python bench/sim_bench.py`` (add ``--experts-seeds 50`` to also measure the scripted
experts). Figures depend on the machine and on what else shares its CPU; they are printed, never
asserted.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

import sim  # noqa: E402
from episodes.cli_errors import parse_config  # noqa: E402
from policies.record import record_episodes  # noqa: E402
from sim.env import CONTROL_SUBSTEPS  # noqa: E402
from sim.experts import make_policy  # noqa: E402


@dataclass
class Args:
    """Options of the sim benchmark."""

    task: str = "pickplace"
    """Task whose scene is timed (short name, env id or class name)."""
    seconds: float = 2.0
    """Approximate time spent on each measurement."""
    experts_seeds: int = 0
    """If > 0, also run every task's expert (and the noisy expert) on this many seeds."""
    recording: bool = True
    """Also time episode recording when ``policies.record`` is available."""


def _timed(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def bench_physics(task: str, seconds: float) -> float:
    env = sim.make(task, cameras=())
    env.reset(seed=0)
    u = env.unwrapped
    return _timed(lambda: mujoco.mj_step(u.model, u.data, nstep=100), seconds) * 100


def bench_env_steps(task: str, seconds: float, cameras=(), image_size=128) -> float:
    env = sim.make(task, cameras=cameras, image_size=image_size)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (1000, 4)).astype(np.float32)
    i = [0]

    def step():
        _, _, terminated, truncated, _ = env.step(actions[i[0] % 1000])
        i[0] += 1
        if terminated or truncated:
            env.reset()

    rate = _timed(step, seconds)
    env.close()
    return rate


def bench_camera(task: str, camera: str, size: int, seconds: float) -> float:
    env = sim.make(task, cameras=(camera,), image_size=size)
    env.reset(seed=0)
    u = env.unwrapped
    rate = _timed(lambda: u.render_cameras((camera,)), seconds)
    env.close()
    return rate


def bench_experts(n_seeds: int) -> list[tuple[str, str, int, float]]:
    rows = []
    for task in sim.TASKS:
        env = sim.make(task, cameras=())
        for name in ("expert", "noisy"):
            policy = make_policy(name, env, seed=0)
            wins, lengths = 0, []
            for seed in range(n_seeds):
                obs, info = env.reset(seed=seed)
                policy.reset(obs, info)
                steps = 0
                while True:
                    obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
                    steps += 1
                    if terminated or truncated:
                        break
                wins += info["is_success"]
                lengths.append(steps)
            rows.append((task, name, wins, float(np.mean(lengths))))
    return rows


def bench_recording(seconds: float, task: str = "push") -> str:
    """Episodes/min of ``prism-record`` (expert, 3 cameras at 128 px, H.264 encoding included)."""
    episodes = max(2, int(seconds))
    with tempfile.TemporaryDirectory() as tmp:
        s = record_episodes(
            Path(tmp) / "ds", task, "expert", episodes=episodes, cameras=sim.CAMERA_NAMES, size=128, progress_bar=False
        )
    return (
        f"{60 * s.episodes / s.seconds:,.1f} episodes/min ({s.frames / s.seconds:,.0f} frames/s, {task}, 3 cams 128px)"
    )


def main(args: Args) -> None:
    task = sim.resolve_task(args.task)
    print(
        f"sim benchmark, task={task}, mujoco {mujoco.__version__}, {os.cpu_count()} CPUs visible "
        "(figures are lower when other jobs share the CPU)"
    )
    physics = bench_physics(task, args.seconds)
    env_state = bench_env_steps(task, args.seconds)
    per_step_physics = CONTROL_SUBSTEPS / physics
    rows = [
        ("raw mj_step", f"{physics:,.0f} steps/s"),
        ("env.step, state only", f"{env_state:,.0f} steps/s"),
        (
            "env.step cost / raw substeps cost",
            f"{(1 / env_state) / per_step_physics:.2f}x ({CONTROL_SUBSTEPS} mj_step per env step)",
        ),
    ]
    for size in (64, 128, 224):
        for cam in sim.CAMERA_NAMES:
            rows.append((f"render {cam} {size}px", f"{bench_camera(task, cam, size, args.seconds / 2):,.0f} frames/s"))
    three = bench_env_steps(task, args.seconds, cameras=sim.CAMERA_NAMES, image_size=128)
    rows.append(("env.step, 3 cameras 128px", f"{three:,.0f} obs-steps/s"))
    if args.recording:
        rows.append(("recording", bench_recording(args.seconds)))
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if args.experts_seeds > 0:
        print(f"\nscripted experts on seeds 0..{args.experts_seeds - 1} (state only):")
        for t, name, wins, mean_len in bench_experts(args.experts_seeds):
            print(
                f"  {t:<10} {name:<7} {wins}/{args.experts_seeds} = {100 * wins / args.experts_seeds:5.1f}%  "
                f"mean length {mean_len:.1f} steps"
            )


if __name__ == "__main__":
    main(parse_config(Args))
