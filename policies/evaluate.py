"""`prism-eval`: true success rate of a trained run, with a Wilson 95% confidence interval.

Examples::

    prism-eval --run runs/push_grm --episodes 50
    prism-eval --run runs/push_grm --episodes 20 --record data/push_grm_rollouts --video

Writes ``RUN_DIR/eval/eval.json`` (``success_rate`` in 0–1, ``ci_low``, ``ci_high``, ``episodes``,
``mean_return``, ...). ``--record`` also writes the rollouts as a LeRobot v3 dataset (through
``policies.record``); ``--video`` writes ``RUN_DIR/eval/videos/eval_ep*.mp4``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from episodes import open_dataset
from episodes.atomic import atomic_write_json, check_output_not_input
from episodes.camera_map import parse_cameras
from episodes.cli_errors import parse_config, run_cli
from policies.vla.configuration_vla import is_vla_checkpoint


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%)."""
    if n <= 0:
        raise ValueError("the Wilson interval needs n >= 1 trials")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; don't let rounding say otherwise.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


@dataclass
class EvalArgs:
    """Evaluate a prism-train run on true task success."""

    run: Path
    """Run directory written by prism-train (config.yaml + model.zip), or a prism-vla checkpoint folder."""
    task: str | None = None
    """Task to evaluate a (multi-task) prism-vla checkpoint on; a prism-train run knows its own."""
    episodes: int = 50
    """Number of evaluation episodes (episode k uses seed + k)."""
    seed: int = 20_000
    """First evaluation seed (differs from training and from in-training evaluation seeds)."""
    checkpoint: str = "model"
    """Which weights: model (final), best (eval/best_model.zip) or a path to a .zip."""
    record: Path | None = None
    """Also record the rollouts as a LeRobot v3 dataset here (cameras: --record-cameras)."""
    record_cameras: str = "front,side,wrist"
    """Cameras to record with --record."""
    video: bool = False
    """Write eval videos (front camera) to RUN_DIR/eval/videos/."""
    video_episodes: int = 3
    """How many episodes to put on video with --video."""
    device: str = "auto"
    """Torch device for the policy."""
    deterministic: bool = True
    """Use the policy's deterministic action (mean) rather than sampling."""


def rollout_figures(
    args: EvalArgs,
    task: str,
    policy: Any,
    act: Callable[[Any], np.ndarray],
    make_env: Callable[[], Any],
    video_path: Path,
    **record_kwargs: Any,
) -> dict:
    """True success (Wilson 95% interval), return, length and final progress of ``args.episodes``
    rollouts of ``policy`` on fresh seeds: recorded as a dataset with ``--record`` (``policy`` is a
    ``policies.record`` rollout policy; ``record_kwargs`` go to ``record_episodes``), else run live
    with ``act(obs)`` in ``make_env()`` (the first episodes filmed to ``video_path`` with ``--video``)."""
    from policies.callbacks import run_episodes, write_rollout_video  # SB3 and torch: kept out of --help

    if args.record is not None:
        from policies.record import record_episodes  # MuJoCo: kept out of --help

        check_output_not_input(args.record, [args.run], out_flag="--record")

        cams = parse_cameras(args.record_cameras)
        cams = tuple(dict.fromkeys(cams + policy.cameras))  # the policy's own views must be rendered
        summary = record_episodes(
            args.record, task, policy=policy, episodes=args.episodes, seed=args.seed, cameras=cams, **record_kwargs
        )
        successes = int(round(summary.success_rate * args.episodes))
        # True returns straight from the recorded next.reward column (the extra final frame has 0).
        recorded = [open_dataset(args.record).load_episode(i) for i in range(args.episodes)]
        returns = [float(np.sum(ep.reward)) for ep in recorded if ep.reward is not None]
        lengths = [ep.length - 1 for ep in recorded]
        final_progress = float(np.mean([ep.progress[-1] for ep in recorded if ep.progress is not None]))
    else:
        env = make_env()
        try:
            results, frames = run_episodes(
                act,
                env,
                args.episodes,
                args.seed,
                video_camera="front" if args.video else None,
                video_episodes=args.video_episodes,
            )
        finally:
            env.close()
        successes = sum(r.success for r in results)
        returns = [r.return_ for r in results]
        final_progress = float(np.nanmean([r.final_progress for r in results]))
        lengths = [r.length for r in results]
        if args.video and frames:
            write_rollout_video(video_path, frames, fps=20.0)
    lo, hi = wilson_interval(successes, args.episodes)
    return {
        "success_rate": successes / args.episodes,
        "ci_low": lo,
        "ci_high": hi,
        "confidence": 0.95,
        "episodes": args.episodes,
        "successes": successes,
        "mean_return": float(np.mean(returns)) if returns else None,
        "mean_length": float(np.mean(lengths)) if lengths else None,
        "mean_final_progress": final_progress,
    }


def evaluate(args: EvalArgs) -> dict:
    from policies.run import load_policy  # SB3 and torch: kept out of --help
    from policies.train import make_eval_env_fn  # SB3 and torch (as above)

    if is_vla_checkpoint(args.run):
        from policies.vla.rollout import evaluate_vla  # torch (as above); it also imports this module

        return evaluate_vla(args)
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    policy = load_policy(args.run, device=args.device, checkpoint=args.checkpoint)
    config = policy.config
    report = rollout_figures(
        args,
        policy.task,
        policy,
        lambda obs: policy.model.predict(obs, deterministic=args.deterministic)[0],
        make_eval_env_fn(config),
        Path(args.run) / "eval" / "videos" / "eval.mp4",
        size=policy.image_size,
        max_steps=config.max_episode_steps,
        env_kwargs={"action_mode": policy.action_mode},
    )
    report.update(
        {
            "task": policy.task,
            "reward": config.reward,
            "algo": config.algo,
            "checkpoint": str(policy.model_path),
            "seed": args.seed,
            "recorded_to": str(args.record) if args.record is not None else None,
        }
    )
    atomic_write_json(Path(args.run) / "eval" / "eval.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    return run_cli("prism-eval", _main, argv)


def _main(argv: list[str]) -> int:
    args = parse_config(EvalArgs, argv, description=__doc__.split("\n\n")[0])
    report = evaluate(args)
    print(
        f"{report['task']} ({report['algo']}, reward {report['reward']}): success "
        f"{report['success_rate']:.1%} [{report['ci_low']:.1%}, {report['ci_high']:.1%}] 95% CI "
        f"over {report['episodes']} episodes -> {report.get('report_path', Path(args.run) / 'eval' / 'eval.json')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
