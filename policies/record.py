"""`prism-record`: roll out a policy in a sim task and write the episodes as a LeRobot v3 dataset.

The policy is a scripted one from :mod:`sim.experts` (expert, noisy, random, failure generators,
failure-mix) or any object with ``reset(obs, info)`` / ``act(obs, info) -> action`` (trained
policies use this through ``prism-eval --record``). Each episode's outcome is labelled from what
really happened (:func:`episodes.episode.outcome_from_labels`), not from the script's intent.

Example::

    prism-record --task push --episodes 50 --seed 0 --policy failure-mix \\
        --cameras front,side,wrist --size 128 --out data/push
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

import sim
import sim.experts
from episodes import Episode, LeRobotWriter
from episodes.atomic import check_output_not_input
from episodes.camera_map import parse_cameras
from episodes.cli_errors import parse_config, run_cli
from episodes.episode import outcome_from_labels


class RolloutPolicy(Protocol):
    kind: str

    def reset(self, obs: dict, info: dict) -> None: ...

    def act(self, obs: dict, info: dict) -> np.ndarray: ...


@dataclass
class RecordArgs:
    """Record sim episodes into a LeRobot v3.0 dataset (parquet + one H.264 mp4 per camera)."""

    out: Path
    """Output dataset directory (written atomically; must not exist unless --overwrite)."""
    task: str = "push"
    """Task: reach, push, pickplace or drawer (env ids like prism/PandaPush-v0 also work)."""
    episodes: int = 20
    """Number of episodes to record (episode k uses seed + k)."""
    seed: int = 0
    """First seed; initial states, instructions and policy noise all derive from it."""
    policy: str = "expert"
    """Behaviour: expert, noisy, random, partial, stall, wrong-object, rewind or failure-mix; or
    ``vla:DIR``, a prism-vla checkpoint (its views are recorded too)."""
    noise: float | None = None
    """Action-noise std for the scripted policy (None: the policy's own default)."""
    cameras: str = "front,side,wrist"
    """Comma-separated camera names to record."""
    size: int = 128
    """Square image size in pixels (even: H.264 needs even dimensions)."""
    max_steps: int | None = None
    """Episode time limit in control steps (None: the task's default)."""
    randomize: bool = False
    """Domain randomisation (lighting, object colours, camera jitter) per episode."""
    world: str = "default"
    """Scene family: ``default`` (the fixed scene) or ``varied`` (a procedural scene variant per
    episode: textures, lighting, cameras, palette colours, shapes, distractors, arm appearance,
    paraphrased instructions; each episode's variant is stored in its metadata)."""
    world_split: str | None = None
    """``varied`` only: ``train`` (default) or ``heldout`` (colours, textures and arm appearances the
    train split never draws -- for evaluating generalisation)."""
    overwrite: bool = False
    """Replace an existing dataset at --out (the old one is swapped out only once the new one is complete)."""


@dataclass
class RecordSummary:
    out: Path
    task: str
    episodes: int
    frames: int
    outcomes: dict[str, int]
    kinds: dict[str, int]
    success_rate: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _camera_list(cameras: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    cameras = parse_cameras(cameras)
    if not cameras:
        raise ValueError("at least one camera is needed to record episodes (e.g. --cameras front,side,wrist)")
    return cameras


def rollout_episode(env, policy: RolloutPolicy, seed: int, cameras: tuple[str, ...], episode_index: int = 0) -> Episode:
    """Run one episode and return it with per-frame labels; the final observation is the last frame."""
    obs, info = env.reset(seed=seed)
    world = info.get("world")
    policy.reset(obs, info)
    frames: dict[str, list[np.ndarray]] = {c: [obs["pixels"][c]] for c in cameras}
    states, actions, rewards, successes = [obs["state"]], [], [], []
    progress, stage = [info["progress"]], [info["stage"]]
    task_text = info["task"]
    done = False
    while not done:
        action = np.asarray(policy.act(obs, info), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        actions.append(action)
        rewards.append(reward)
        successes.append(bool(info["is_success"]))
        for c in cameras:
            frames[c].append(obs["pixels"][c])
        states.append(obs["state"])
        progress.append(info["progress"])
        stage.append(info["stage"])
    # The extra final frame shows the end state: zero action, no reward, done.
    actions.append(np.zeros_like(actions[-1]))
    rewards.append(0.0)
    successes.append(successes[-1])
    done_flags = np.zeros(len(states), dtype=bool)
    done_flags[-1] = True
    progress_arr = np.asarray(progress, dtype=np.float32)
    return Episode(
        task=task_text,
        frames={c: np.stack(v) for c, v in frames.items()},
        fps=1.0 / env.unwrapped.control_dt,
        episode_index=episode_index,
        task_name=sim.resolve_task(env.spec.id if env.spec else env.unwrapped.task_name),
        state=np.asarray(states, dtype=np.float32),
        action=np.asarray(actions, dtype=np.float32),
        reward=np.asarray(rewards, dtype=np.float32),
        done=done_flags,
        success=np.asarray(successes, dtype=bool),
        progress=progress_arr,
        stage=np.asarray(stage, dtype=np.int64),
        outcome=outcome_from_labels(successes[-1], progress_arr),
        meta={
            "seed": int(seed),
            "policy": getattr(policy, "kind", type(policy).__name__),
            **({"world": world} if world is not None else {}),
        },
    )


def record_episodes(
    out: str | Path,
    task: str,
    policy: str | RolloutPolicy = "expert",
    episodes: int = 20,
    seed: int = 0,
    cameras: str | tuple[str, ...] = ("front", "side", "wrist"),
    size: int = 128,
    noise: float | None = None,
    max_steps: int | None = None,
    randomize: bool = False,
    overwrite: bool = False,
    progress_bar: bool = True,
    env_kwargs: dict[str, Any] | None = None,
    world: str = "default",
    world_split: str | None = None,
) -> RecordSummary:
    """Record ``episodes`` rollouts of ``policy`` in ``task`` into a LeRobot v3 dataset at ``out``."""
    task = sim.resolve_task(task)
    cams = _camera_list(cameras)
    if isinstance(policy, str) and policy.startswith("vla:"):
        from policies.vla.modeling_vla import load_vla  # torch: kept out of --help

        check_output_not_input(out, [policy[4:]])
        policy = load_vla(policy[4:])
        cams = tuple(dict.fromkeys(cams + policy.cameras))  # the policy's own views must be rendered
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1 (got {episodes}): a dataset with zero episodes is not a dataset")
    if size < 8 or size % 2:
        raise ValueError(f"--size must be an even number >= 8 (H.264 needs even dimensions), got {size}")
    out = Path(out)
    dr = sim.DomainRandomization(lighting=True, object_colors=True, camera_jitter=True) if randomize else None
    env = sim.make(
        task,
        cameras=cams,
        image_size=size,
        max_episode_steps=max_steps,
        domain_randomization=dr,
        world=world,
        world_split=world_split,
        **(env_kwargs or {}),
    )
    t0 = time.perf_counter()
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    frames = 0
    try:
        if isinstance(policy, str):
            behaviour = sim.experts.make_policy(policy, env, seed=seed, noise=noise)
        else:
            behaviour = policy
        unwrapped = env.unwrapped
        with LeRobotWriter(
            out,
            fps=1.0 / unwrapped.control_dt,
            cameras=list(cams),
            image_size=(size, size),
            state_names=list(unwrapped.state_names),
            action_names=list(unwrapped.action_names),
            robot_type="panda",
            overwrite=overwrite,
        ) as writer:
            bar = tqdm(range(episodes), desc=f"record {task}", unit="ep", disable=not progress_bar)
            for k in bar:
                ep = rollout_episode(env, behaviour, seed + k, cams, episode_index=k)
                writer.add_episode(ep)
                outcomes[ep.outcome] += 1
                kinds[ep.meta["policy"]] += 1
                frames += ep.length
                bar.set_postfix(success=f"{outcomes['success']}/{k + 1}")
    finally:
        env.close()
    return RecordSummary(
        out=out,
        task=task,
        episodes=episodes,
        frames=frames,
        outcomes=dict(outcomes),
        kinds=dict(kinds),
        success_rate=outcomes["success"] / episodes,
        seconds=time.perf_counter() - t0,
    )


def main(argv: list[str] | None = None) -> int:
    return run_cli("prism-record", _main, argv)


def _main(argv: list[str]) -> int:
    args = parse_config(RecordArgs, argv, description=__doc__.split("\n\n")[0])
    # Ctrl-C lands in run_cli (one line, exit 130); the dataset is written atomically, so an
    # interrupted recording leaves no folder that looks complete.
    summary = record_episodes(
        args.out,
        args.task,
        args.policy,
        args.episodes,
        args.seed,
        args.cameras,
        args.size,
        noise=args.noise,
        max_steps=args.max_steps,
        randomize=args.randomize,
        overwrite=args.overwrite,
        world=args.world,
        world_split=args.world_split,
    )
    print(
        f"wrote {summary.episodes} episodes ({summary.frames} frames) of {summary.task} to {summary.out} "
        f"in {summary.seconds:.1f}s; outcomes {summary.outcomes}; behaviours {summary.kinds}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
