"""`prism-train`: SB3 (SAC / PPO) in a prism sim task with a policy-invariant shaped reward.

Examples::

    prism-train --task reach --reward oracle --out runs/reach_oracle   # the task's tuned preset
    prism-train --config policies/configs/sac_reach_tiny.yaml --out runs/reach_tiny   # ~1.5 min on a CPU
    prism-train --task push --algo sac --reward grm:ckpts/grm_push --n-envs 8 --out runs/push_grm
    prism-train --config policies/configs/sac_push.yaml --reward naive-delta --out runs/push_naive
    prism-train --config policies/configs/sac_push_demos.yaml --reward oracle --out runs/push_demos   # 100 expert episodes first
    prism-train --out runs/push_grm --resume          # continue from the newest checkpoint

The run directory holds ``config.yaml`` (everything needed to rebuild the run), ``model.zip``,
``checkpoints/``, ``tb/`` (TensorBoard: true success and return, shaped return, Φ, rollout
filmstrips) and ``eval/`` (``curve.csv`` of true success vs env steps, ``best_model.zip``,
rollout videos).

Each checkpoint (``checkpoints/step_N/``: model, replay buffer, RNG and callback state, manifest) is
written as one unit and taken after every evaluation, every --checkpoint-every steps and
--checkpoint-minutes, at the end, and on Ctrl-C or SIGTERM -- which then exit with 130 (SIGINT) or
143 (SIGTERM) after one line saying where the checkpoint is. ``--resume`` continues from the newest
intact checkpoint (falling back to the one before if it is damaged).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import VecNormalize

import sim
from episodes.atomic import atomic_write_json, atomic_write_text, check_output_not_input, check_replaceable
from episodes.camera_map import parse_cameras
from episodes.cli_errors import one_line, run_cli
from policies.async_relabel import AsyncShapedRewardVecEnv, async_buffer_class
from policies.callbacks import (
    AtomicCheckpointCallback,
    ShapingLogCallback,
    SuccessProgressBarCallback,
    TrainingInterrupted,
    TrueSuccessEvalCallback,
    checkpoint_candidates,
    load_checkpoint,
    remove_stale_checkpoint_temporaries,
    restore_training_state,
    save_model_atomic,
    set_aside,
    stop_on_signals,
)
from policies.configuration_train import RLTrainConfig, algo_hyperparams, parse_train_config
from policies.critics import LayerNormMlpPolicy, LayerNormMultiInputPolicy
from policies.envs import make_env_fns, make_sim_env, make_vec_env, normalizing_policy_kwargs, state_statistics
from policies.expert_demos import DemoMixReplayBuffer, DemoSAC, collect_demonstrations
from policies.features import relative_features_kwargs, state_names
from policies.ray_rollouts import RayVecEnv, actor_cpu_share
from policies.shaping import RewardSpec, ShapedRewardVecEnv, make_potential
from reward_models.devices import resolve_device
from reward_models.oracle import OracleProgressModel
from reward_models.registry import load_progress_model
from reward_models.tracker import FusionConfig


@dataclass
class RunResult:
    """What a finished training run produced."""

    run_dir: Path
    model_path: Path
    env_steps: int
    """Env steps done by the learner in total (including any resumed part)."""
    train_seconds: float
    """Wall time of this call's ``learn`` (excludes setup)."""
    steps_per_second: float
    """Env steps per second of this call's training loop."""
    final_success_rate: float
    """True success rate of the last evaluation (0–1)."""
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    """Rows of eval/curve.csv: timesteps, success_rate, mean_return, mean_length, episodes."""
    train_curve: list[dict[str, float]] = field(default_factory=list)
    """Rolling true success of training episodes vs timesteps."""
    model_calls: int = 0
    """Batched reward-model calls made during this call."""
    demo_env_steps: int = 0
    """Env steps of the expert demonstrations collected before learning (not in ``env_steps``)."""


def load_reward_model(config: RLTrainConfig, device: str):
    """The progress model behind ``config.reward`` (None for sparse/oracle/naive-delta)."""
    spec = RewardSpec.parse(config.reward)
    if spec.potential != "model":
        return spec, None
    if spec.model_spec == "oracle":
        return spec, OracleProgressModel()
    return spec, load_progress_model(spec.model_spec, device=device)


def build_train_env(config: RLTrainConfig, device: str, reward_model: Any = None, spec: Any = None):
    """The shaped VecEnv of a config. Returns ``(venv, shaped)``: the outer env to learn on and
    the :class:`ShapedRewardVecEnv` inside it (for its model-call counter)."""
    if spec is None:
        spec, reward_model = load_reward_model(config, device)
    reward_cams: tuple[str, ...] = ()
    if spec.potential == "model":
        reward_cams = parse_cameras(config.reward_cameras) or tuple(getattr(reward_model, "cameras", None) or ())
    env_kwargs = dict(
        task=config.task,
        obs_mode=config.obs,
        cameras=parse_cameras(config.cameras),
        image_size=config.image_size,
        action_mode=config.action_mode,
        max_episode_steps=config.max_episode_steps,
        reward_cameras=reward_cams,
    )
    if config.vec_env == "ray":
        from reward_models.serve import ensure_ray  # Ray (optional, the scale extra): only Ray runs need it

        ensure_ray(config.ray_address)
        workers = min(config.ray_workers, config.n_envs)
        venv = RayVecEnv(
            make_env_fns(config.n_envs, config.seed, **env_kwargs),
            n_workers=workers,
            worker_cpus=actor_cpu_share(workers + int(config.async_reward)),
        )
        venv.seed(config.seed)
    else:
        venv = make_vec_env(config.n_envs, config.seed, vec_env=config.vec_env, **env_kwargs)
    try:
        if config.async_reward:  # the labeller actor scores the frames (policies/async_relabel.py)
            shaped = AsyncShapedRewardVecEnv(
                venv, reward_cams, gamma=config.gamma, default_task=sim.resolve_task(config.task)
            )
            return shaped, shaped
        potential = make_potential(
            spec,
            config.n_envs,
            device=device,
            cameras=reward_cams,
            fusion=FusionConfig(mode=config.fusion, delta=config.success_delta),
            delta=config.success_delta,
            model=reward_model,
        )
        shaped = ShapedRewardVecEnv(
            venv,
            potential,
            gamma=config.gamma,
            naive=spec.naive,
            success_source=config.success_source,
            success_reward=config.success_reward,
            query_every=config.query_every,
            default_task=sim.resolve_task(config.task),
        )
    except BaseException:
        venv.close()
        raise
    outer = (
        VecNormalize(shaped, norm_obs=False, norm_reward=True, gamma=config.gamma)
        if config.normalize_reward
        else shaped
    )
    return outer, shaped


def make_eval_env_fn(config: RLTrainConfig):
    def make():
        return make_sim_env(
            task=config.task,
            obs_mode=config.obs,
            cameras=parse_cameras(config.cameras),
            image_size=config.image_size,
            action_mode=config.action_mode,
            max_episode_steps=config.max_episode_steps,
            monitor=False,
        )

    return make


def _algo_class(algo: str, demos: bool = False):
    if demos and algo == "sac":
        return DemoSAC
    return {"sac": SAC, "ppo": PPO}[algo]


def build_model(config: RLTrainConfig, env, device: str):
    hyper = algo_hyperparams(config.algo)
    for key in ("gamma", "env", "policy", "seed", "device", "tensorboard_log"):
        if key in config.hyperparams:
            raise ValueError(f"hyperparams may not set {key!r}; use the --{key.replace('_', '-')} option")
    hyper.update(config.hyperparams)
    policy_kwargs = dict(hyper.pop("policy_kwargs", {}) or {})
    policy_kwargs.setdefault("net_arch", list(config.net_arch))
    if config.normalize_obs and config.obs_stats_steps > 0 and "features_extractor_class" not in policy_kwargs:
        mean, std = state_statistics(
            config.task,
            config.obs_stats_steps,
            seed=config.seed,
            action_mode=config.action_mode,
            max_episode_steps=config.max_episode_steps,
        )
        if config.policy_features == "relative":
            policy_kwargs.update(relative_features_kwargs(config.task, state_names(config.task), mean, std))
        else:
            policy_kwargs.update(normalizing_policy_kwargs(config.obs, mean, std))
    policy: Any = "MultiInputPolicy" if config.obs == "pixels" else "MlpPolicy"
    if config.critic_layer_norm:
        policy = LayerNormMultiInputPolicy if config.obs == "pixels" else LayerNormMlpPolicy
    if config.demo_episodes > 0:
        if config.obs != "state":
            raise ValueError("--demo-episodes works with --obs state only")
        # room for the requested episodes plus the unfinished ones of the other envs
        longest = config.max_episode_steps or sim.MAX_EPISODE_STEPS[sim.resolve_task(config.task)]
        hyper["replay_buffer_class"] = DemoMixReplayBuffer
        hyper["replay_buffer_kwargs"] = {
            "demo_fraction": config.demo_fraction,
            "demo_capacity": (config.demo_episodes + config.n_envs) * longest,
        }
        hyper["bc_weight"] = config.bc_weight
    if config.obs == "pixels" and config.algo == "sac":
        hyper.setdefault("buffer_size", 50_000)
        hyper["buffer_size"] = min(int(hyper["buffer_size"]), 50_000)  # images are big
    if config.async_reward:
        from reward_models.serve import ensure_ray  # Ray (as above)

        ensure_ray(config.ray_address)
        rollout_actors = min(config.ray_workers, config.n_envs) if config.vec_env == "ray" else 0

        hyper["replay_buffer_class"] = async_buffer_class(config.obs)
        hyper["replay_buffer_kwargs"] = {
            "labeller": {
                "reward": config.reward,
                "n_envs": config.n_envs,
                "gamma": config.gamma,
                "cameras": tuple(env.potential.cameras),
                "success_source": config.success_source,
                "success_reward": config.success_reward,
                "fusion": config.fusion,
                "delta": config.success_delta,
                "device": device,
                "default_task": sim.resolve_task(config.task),
            },
            "labeller_cpus": actor_cpu_share(rollout_actors + 1),
        }
    cls = _algo_class(config.algo, demos=config.demo_episodes > 0)
    try:
        return cls(
            policy,
            env,
            gamma=config.gamma,
            seed=config.seed,
            device=device,
            verbose=0,
            tensorboard_log=str(config.out / "tb"),
            policy_kwargs=policy_kwargs,
            **hyper,
        )
    except TypeError as exc:
        raise ValueError(f"bad hyperparams for {config.algo}: {exc}") from exc


def _resume_model(config: RLTrainConfig, env: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """The model and training state of the newest checkpoint of ``config.out`` that loads; a damaged
    or incomplete one is reported on stderr and the one before it tried instead."""
    out = Path(config.out)
    candidates = checkpoint_candidates(out)
    unusable: list[Path] = []
    for i, (_, path) in enumerate(candidates):
        try:
            loaded = load_checkpoint(
                path,
                _algo_class(config.algo, demos=config.demo_episodes > 0),
                env,
                device,
                tensorboard_log=str(out / "tb"),
            )
        except Exception as exc:  # anything unreadable in it (zip, pickle, torch): fall back
            following = (
                f"trying the previous one, {candidates[i + 1][1].name}"
                if i + 1 < len(candidates)
                else "no older checkpoint to fall back to"
            )
            print(f"prism-train: checkpoint {path} is unusable ({one_line(exc)}); {following}", file=sys.stderr)
            unusable.append(path)
            continue
        for bad in unusable:  # kept for inspection, out of the way of the checkpoints to come
            print(f"prism-train: moved the unusable checkpoint aside to {set_aside(bad)}", file=sys.stderr)
        return loaded
    raise FileNotFoundError(
        f"--resume: none of the {len(candidates)} checkpoints in {out / 'checkpoints'} can be loaded"
    )


def train(config: RLTrainConfig) -> RunResult:
    """Train (or resume) one run; everything lands in ``config.out``.

    Raises :class:`policies.callbacks.TrainingInterrupted` after checkpointing when SIGINT or SIGTERM
    arrives during training (in the main thread)."""
    out = Path(config.out)
    check_output_not_input(out, [config.reward])
    if not config.resume:
        check_replaceable(out, "run")  # a run folder (or an empty one): never write into a user's folder
    has_checkpoints = bool(checkpoint_candidates(out))
    if not config.resume and (has_checkpoints or (out / "model.zip").exists()):
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if config.resume and not has_checkpoints:
        raise FileNotFoundError(f"--resume: no checkpoints in {out / 'checkpoints'} to resume from")
    device = resolve_device(config.device)
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_checkpoint_temporaries(out)
    atomic_write_text(out / "config.yaml", config.to_yaml())

    if config.ray_address:  # join the cluster first: a serve:NAME reward is looked up in it
        from reward_models.serve import ensure_ray  # Ray (as above)

        ensure_ray(config.ray_address)
    spec, reward_model = load_reward_model(config, device)
    env, shaped = build_train_env(config, device, reward_model, spec)
    eval_cb = bar_cb = None
    try:
        state = None
        if config.resume:
            model, state = _resume_model(config, env, device)
        else:
            model = build_model(config, env, device)
        demos_file = out / "demos.json"
        if config.demo_episodes > 0 and state is None:
            demo_steps = collect_demonstrations(
                model,
                env,
                config.demo_episodes,
                seed=config.seed + 20_000,
                noise=config.demo_noise,
                progress=config.progress_bar,
                max_progress=config.demo_max_progress,
            )
            atomic_write_json(demos_file, {"episodes": config.demo_episodes, "env_steps": demo_steps})
        else:  # resuming: the demonstrations came back with the replay buffer
            demo_steps = int(json.loads(demos_file.read_text())["env_steps"]) if demos_file.is_file() else 0
        if abs(model.gamma - shaped.gamma) > 1e-12:
            raise RuntimeError(f"shaping γ={shaped.gamma} differs from the learner's γ={model.gamma}")

        log_cb = ShapingLogCallback()
        eval_cb = TrueSuccessEvalCallback(
            make_eval_env_fn(config),
            out / "eval",
            config.eval_every,
            config.eval_episodes,
            seed=config.seed + 10_000,
            video_every=config.video_every,
        )
        stateful = {"shaping_log": log_cb, "eval": eval_cb}
        ckpt_cb = AtomicCheckpointCallback(
            out,
            config.checkpoint_every,
            every_seconds=60 * config.checkpoint_minutes,
            eval_callback=eval_cb,
            stateful=stateful,
        )
        if state is not None:
            restore_training_state(model, state, stateful)
        remaining = max(0, config.steps - model.num_timesteps)
        bar_cb = SuccessProgressBarCallback(log_cb) if config.progress_bar else None
        calls0 = shaped.n_model_calls
        start_steps = model.num_timesteps
        t0 = time.perf_counter()
        if remaining > 0:
            with stop_on_signals(ckpt_cb):
                model.learn(
                    total_timesteps=remaining,
                    callback=[cb for cb in (log_cb, eval_cb, ckpt_cb, bar_cb) if cb is not None],
                    reset_num_timesteps=not config.resume,
                    tb_log_name="run",
                )
        seconds = time.perf_counter() - t0
        model_path = save_model_atomic(model, out / "model.zip")
        steps_done = model.num_timesteps
        curve = list(eval_cb.curve)
        result = RunResult(
            run_dir=out,
            model_path=model_path,
            env_steps=int(steps_done),
            train_seconds=seconds,
            steps_per_second=(steps_done - start_steps) / seconds if seconds > 0 else 0.0,
            final_success_rate=float(curve[-1]["success_rate"]) if curve else 0.0,
            eval_curve=curve,
            train_curve=log_cb.history,
            model_calls=shaped.n_model_calls - calls0,
            demo_env_steps=demo_steps,
        )
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in result.__dict__.items() if k != "train_curve"}
        atomic_write_json(out / "train_summary.json", summary)
        return result
    finally:  # (after an interrupt SB3 never calls the callbacks' on_training_end)
        for cb in (eval_cb, bar_cb):
            if cb is not None:
                cb.close()
        env.close()


def _train_command(argv: list[str]) -> int:
    config = parse_train_config(argv, description=__doc__.split("\n\n")[0])
    try:
        result = train(config)
    except TrainingInterrupted as stop:
        print(
            f"prism-train: interrupted at step {stop.step}; checkpoint saved in {stop.checkpoint}; "
            f"resume with: prism-train --out {shlex.quote(str(config.out))} --resume",
            file=sys.stderr,
        )
        return 128 + int(stop.signum)
    print(
        f"trained {result.env_steps} env steps in {result.train_seconds:.0f}s "
        f"({result.steps_per_second:.0f} steps/s); true success {result.final_success_rate:.0%}; "
        f"run: {result.run_dir}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``prism-train``: bad input is one line on stderr and exit 2 (``--debug`` for the traceback);
    Ctrl-C / SIGTERM checkpoint first, then exit 130 / 143."""
    return run_cli("prism-train", _train_command, argv)


if __name__ == "__main__":
    sys.exit(main())
