"""Running a VLA checkpoint in the sim: ``prism-eval --run DIR --task T`` for a VLA folder.

The VLA is multi-task, so the task is named on the command line; the report goes to
``DIR/eval/eval_<task>.json`` (one per task) with the same fields as a prism-train run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

import sim
from episodes.atomic import atomic_write_json
from policies.evaluate import rollout_figures
from policies.vla.modeling_vla import VLAPolicy, load_vla


class EpisodeStartHook(gym.Wrapper):
    """Tells the policy about every new episode (its instruction, ``info["task"]``) at ``reset``, so
    a rollout loop that only calls ``act(obs)`` still starts each episode with a fresh chunk."""

    def __init__(self, env: gym.Env, policy: VLAPolicy) -> None:
        super().__init__(env)
        self.policy = policy

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.policy.reset(obs, info)
        return obs, info


def evaluate_vla(args: Any) -> dict:
    """``prism-eval`` for a VLA checkpoint (``args`` is ``policies.evaluate.EvalArgs``)."""
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if not args.task:
        raise ValueError(f"--task is required for the VLA checkpoint {args.run} (one policy serves every task)")
    if args.checkpoint != "model":
        raise ValueError("--checkpoint applies to prism-train runs; pass a VLA checkpoint folder as --run instead")
    task = sim.resolve_task(args.task)
    policy = load_vla(args.run, device=args.device)
    policy.temperature = None if args.deterministic else 1.0
    size = policy.image_size + policy.image_size % 2  # H.264 (--record) needs an even size

    def make_env() -> gym.Env:
        return EpisodeStartHook(sim.make(task, cameras=policy.cameras, image_size=size), policy)

    report = rollout_figures(
        args, task, policy, policy.act, make_env, Path(args.run) / "eval" / "videos" / f"eval_{task}.mp4", size=size
    )
    report.update(
        {
            "task": task,
            "reward": "none (imitation)",
            "algo": policy.config.model_id,
            "checkpoint": str(args.run),
            "seed": args.seed,
            "deterministic": bool(args.deterministic),
            "recorded_to": str(args.record) if args.record is not None else None,
        }
    )
    path = atomic_write_json(Path(args.run) / "eval" / f"eval_{task}.json", report)
    return {**report, "report_path": str(path)}


__all__ = ["EpisodeStartHook", "evaluate_vla"]
