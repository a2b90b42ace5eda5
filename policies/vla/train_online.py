"""Reward-driven post-training of a VLA policy: online RL (``prism-vla rl``), reward-ranked DPO
(``prism-vla dpo``) and reward-filtered fine-tuning (``prism-vla rft``), all starting from a BC
checkpoint.

Every iteration collects ``groups × group_size`` online episodes (:mod:`policies.vla.online`:
``group_size`` episodes from each of ``groups`` start states, chunks sampled at ``temperature``,
rewards from any ``--reward`` spec through the policy-invariant shaping wrapper), updates the
policy, and every ``eval_every`` iterations runs the deterministic policy on fixed evaluation seeds.
Training stops after ``--episodes`` online episodes (evaluation episodes are not counted).

**rl** -- PPO-style, token level, no learned critic. Why this algorithm: the policy already has an
exact log π per action token (so on-policy ratios are exact and cheap), and a critic on images would
have to be learned from the few hundred episodes we can afford; instead the baseline is (a) the
potential itself -- with shaping the reward-to-go from step t telescopes to (success to go) + γ^… Φ(s_T)
− Φ(s_t), so Φ(s_t) is subtracted for free -- and (b) the mean over the episodes of the same start
state at the same decision index (as GRPO does per prompt). The objective per executed token is the
clipped surrogate min(ρA, clip(ρ, 1 ± ε)A) with ρ = π/π_old, plus ``kl_coef`` × KL(π ‖ π_BC), the
exact categorical KL to the frozen starting policy over the executed tokens: the anchor that keeps
the policy near the states the BC data and the reward model know.

**dpo** -- NORA-1.5 style: within each start state's group, the episode with the highest shaped
return (the reward model's judgement; with a shaped reward it is ≈ success + Φ_final − Φ_0) is
*chosen* and the lowest *rejected* (ties are skipped); the loss is DPO's
−log σ(β[(log π(τ_w) − log π_ref(τ_w)) − (log π(τ_l) − log π_ref(τ_l))]) with log π(τ) the sum over
the episode's executed tokens and π_ref the frozen BC policy, plus ``nll_weight`` × the chosen
episode's per-token negative log-likelihood (meant to stop DPO from lowering the likelihood of
chosen and rejected rollouts alike); several rounds of fresh rollouts. Measured in
``bench/vla_bench.py``: plain DPO and DPO + NLL on the *summed* log-ratios (β = 0.1) both collapsed
the small BC policy on push to 0 % within 144 episodes, ranked by the GRM or at random: the summed
log-ratio of ~400 tokens per episode dwarfs the per-token NLL. Hence the default ``per_token``
(length-normalised log-ratios, β = 2, as SimPO).
``--ranking random`` ranks the same rollouts at random (the control).

**rft** -- reward-filtered fine-tuning (rejection-sampling fine-tuning, as in ReST / RAFT for
language models and SOAR / RLDG-style self-improvement for robot policies): within each start
state's group, the ``keep`` episodes with the highest shaped return are kept if they beat the
group's mean (a group whose returns tie -- e.g. all failures under ``sparse`` -- gives none); the
kept episodes' decisions join a buffer that grows over the run, and every iteration takes
``sft_steps`` behaviour-cloning steps on the buffer (per-token NLL of the executed tokens) plus
``kl_coef`` × KL(π ‖ π_BC). Why it is here: with a policy that succeeds on a fifth of its
start states, a positive-only, supervised update uses every good rollout many times over (PPO uses
each once, DPO also pushes down the rejected one) and never pushes an action down on the strength
of a noisy negative advantage. In ``bench/vla_bench.py`` it did not beat PPO (``docs/results.md``).
``--ranking random`` keeps random
episodes instead (the control). The buffer is part of each checkpoint, so ``--resume`` is exact.

Output ``--out`` is a loadable VLA checkpoint (as for ``prism-vla bc``) plus ``curve.csv`` (one row
per iteration: online episodes so far, training success, evaluation success), ``curve.png``,
``summary.json``, ``train_config.json`` and ``checkpoints/step_N`` (N = iteration; every iteration,
atomically; ``--resume`` continues exactly: each iteration's seeds and sampling derive from
(seed, iteration)). Ctrl-C saves at the last finished iteration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

import sim
from episodes.atomic import atomic_dir, atomic_write_json, atomic_write_text, check_output_not_input
from episodes.cli_errors import check_numeric_fields
from policies.shaping import RewardSpec
from policies.vla.configuration_vla import is_vla_checkpoint
from policies.vla.modeling_vla import CONFIG_NAME, WEIGHTS_NAME, VLAPolicy, load_vla_module, token_log_probs
from policies.vla.online import (
    DecisionBatch,
    Episode,
    collect,
    concat_batches,
    describe,
    group_relative_advantages,
    make_online_env,
    summarise,
    to_batch,
    token_kl,
)
from policies.vla.train_bc import restore_checkpoint, save_checkpoint, step_checkpoints
from reward_models.devices import resolve_device

TRAIN_CONFIG_NAME = "train_config.json"
EVAL_SEED = 7_000_000
"""First seed of the evaluation episodes (the same every evaluation, so the curve compares like
with like)."""
TRAIN_SEED = 3_000_000
"""Base of the training start-state seeds: far from the small seeds demonstrations are usually
recorded from (a BC policy replays the start states it was trained on much better than new ones),
and below the evaluation seeds."""


@dataclass
class OnlineConfig:
    """Options shared by ``prism-vla rl`` and ``prism-vla dpo``."""

    init: Path
    """The starting policy: a VLA checkpoint folder (``prism-vla bc --out``); also the frozen reference."""
    out: Path
    """Output folder: the post-trained policy checkpoint, its curve and training state."""
    task: str = "push"
    """Sim task to practise (reach, push, pickplace, drawer)."""
    reward: str = "grm"
    """Reward spec as for prism-train: sparse, oracle, grm, grm:CKPT, naive-delta, SPEC+pessimism=K."""
    episodes: int = 300
    """Online episodes to train on (evaluation episodes are not counted)."""
    groups: int = 4
    """Start states per iteration."""
    group_size: int = 4
    """Episodes from each start state (compared with each other: the baseline / the DPO pairs)."""
    temperature: float = 1.0
    """Sampling temperature of the action tokens while collecting."""
    gamma: float = 0.99
    """Discount of the shaping and of the reward-to-go (per env step)."""
    lr: float = 1e-4
    """Adam learning rate."""
    success_reward: float = 1.0
    """Reward paid on the success step (the shaping wrapper's r_success)."""
    eval_every: int = 4
    """Iterations between evaluations of the deterministic policy (one is always run first and last)."""
    eval_episodes: int = 16
    """Evaluation episodes (fixed seeds, deterministic chunks)."""
    seed: int = 0
    """Seed of the training start states and of the sampling."""
    device: str = "auto"
    """Torch device of the policy and the reward model: auto, cpu, cuda[:N]."""
    vec_env: Literal["dummy", "subproc"] = "dummy"
    """Vectorisation of the envs: in-process or one subprocess per env."""
    resume: bool = False
    """Continue the run in --out from its newest checkpoint (its options must match)."""
    overwrite: bool = False
    """Replace an existing --out that prism-vla wrote."""
    progress_bar: bool = True
    """Show a progress bar."""


@dataclass
class AnchoredConfig(OnlineConfig):
    """Options of the learners that take minibatch steps with a KL anchor to the starting policy."""

    minibatch: int = 64
    """Decisions per gradient step."""
    kl_coef: float = 0.05
    """Weight of KL(π ‖ π_BC) per token (the anchor); 0 turns it off."""


@dataclass
class RLConfig(AnchoredConfig):
    """Online RL from a BC checkpoint: token-level PPO with a KL anchor to the starting policy."""

    epochs: int = 4
    """Passes over each iteration's decisions."""
    clip: float = 0.2
    """PPO ratio clip ε."""
    target_kl: float = 0.02
    """Stop an iteration's epochs once the per-token KL between the policy and the one that collected
    the data exceeds 1.5 × this (as SB3's PPO ``target_kl``); 0 turns it off."""


@dataclass
class DPOConfig(OnlineConfig):
    """Reward-ranked DPO from a BC checkpoint (NORA-1.5 style), against the frozen BC policy."""

    beta: float = 2.0
    """DPO β (inverse temperature of the preference model), on the per-token log-ratio when
    ``per_token`` (SimPO's range), on the summed one otherwise (DPO's usual 0.1)."""
    per_token: bool = True
    """Length-normalise each episode's log-ratio by its executed tokens (as SimPO / R-DPO do for long
    sequences): summed over ~400 tokens it swamps the NLL term and collapsed the policy in our bench."""
    dpo_steps: int = 8
    """Gradient steps per round."""
    pairs_per_step: int = 4
    """Chosen/rejected pairs per gradient step."""
    ranking: Literal["reward", "random"] = "reward"
    """``reward``: best vs worst shaped return in a group; ``random``: the control."""
    nll_weight: float = 1.0
    """Weight of the chosen episodes' per-token negative log-likelihood added to the DPO loss
    (as in RPO / iterative reasoning preference optimisation): DPO alone can lower the likelihood
    of chosen and rejected alike and drift off the data; 0 gives plain DPO."""


@dataclass
class RFTConfig(AnchoredConfig):
    """Reward-filtered fine-tuning from a BC checkpoint: behaviour cloning on the best rollouts."""

    keep: int = 1
    """Episodes kept per start state: the best by shaped return, if they beat the group's mean."""
    sft_steps: int = 16
    """Behaviour-cloning steps on the buffer of kept decisions per iteration."""
    ranking: Literal["reward", "random"] = "reward"
    """``reward``: keep the best episodes by shaped return; ``random``: keep random ones (the control)."""
    buffer_size: int = 10_000
    """Most decisions the buffer holds (the oldest go first); it is saved with every checkpoint."""


NUMERIC_RANGES = {
    "episodes": "[1, inf)",
    "groups": "[1, inf)",
    "group_size": "[2, inf)",
    "temperature": "(0, inf)",
    "gamma": "(0, 1]",
    "lr": "(0, 1]",
    "success_reward": "[0, inf)",
    "eval_every": "[1, inf)",
    "eval_episodes": "[1, inf)",
    "seed": "[0, 100000]",
    "epochs": "[1, inf)",
    "minibatch": "[1, inf)",
    "clip": "(0, 1)",
    "kl_coef": "[0, inf)",
    "target_kl": "[0, inf)",
    "beta": "(0, inf)",
    "dpo_steps": "[1, inf)",
    "pairs_per_step": "[1, inf)",
    "nll_weight": "[0, inf)",
    "keep": "[1, inf)",
    "sft_steps": "[1, inf)",
    "buffer_size": "[1, inf)",
}
RESUME_MAY_CHANGE = {"episodes", "resume", "overwrite", "progress_bar", "device", "vec_env", "eval_every"}


def validate(cfg: OnlineConfig) -> None:
    check_numeric_fields(cfg, {k: v for k, v in NUMERIC_RANGES.items() if hasattr(cfg, k)})
    if not is_vla_checkpoint(cfg.init):
        raise ValueError(f"--init {cfg.init} is not a VLA checkpoint folder (train one with prism-vla bc)")
    sim.resolve_task(cfg.task)
    RewardSpec.parse(cfg.reward)
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    check_output_not_input(cfg.out, [cfg.init])
    resolve_device(cfg.device)


def algorithm_name(cfg: OnlineConfig) -> str:
    """``rl``, ``dpo`` or ``rft``: the subcommand ``cfg`` belongs to."""
    return {RLConfig: "rl", DPOConfig: "dpo", RFTConfig: "rft"}[type(cfg)]


def _config_json(cfg: OnlineConfig) -> dict:
    d = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    d["algorithm"] = algorithm_name(cfg)
    return d


def _check_resumable(cfg: OnlineConfig) -> None:
    path = cfg.out / TRAIN_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {cfg.out} is not a prism-vla training folder (no {TRAIN_CONFIG_NAME})")
    saved = json.loads(path.read_text())
    for key, value in _config_json(cfg).items():
        if key not in RESUME_MAY_CHANGE and saved.get(key) != value:
            raise ValueError(
                f"--resume: --{key.replace('_', '-')} is {value!r} but the run in {cfg.out} used "
                f"{saved.get(key)!r}; give the same options (only {sorted(RESUME_MAY_CHANGE)} may change)"
            )


# --------------------------------------------------------------------------------------------
# The two updates
# --------------------------------------------------------------------------------------------


def _tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(x, device=device)


def ppo_update(
    policy: VLAPolicy,
    reference: VLAPolicy,
    optimizer: torch.optim.Optimizer,
    batch: DecisionBatch,
    advantages: np.ndarray,
    cfg: RLConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """Token-level clipped surrogate + KL anchor over ``cfg.epochs`` passes (module docstring)."""
    dev = policy.device
    chunks, mask = _tensor(batch.chunks, dev), _tensor(batch.mask, dev)
    adv = _tensor(advantages.astype(np.float32), dev)
    rows_all = np.arange(len(batch))
    with torch.no_grad():
        old = torch.cat(
            [
                token_log_probs(policy.logits(batch.obs(r)) / cfg.temperature, chunks[r], mask[r])
                for r in np.array_split(rows_all, max(1, math.ceil(len(batch) / cfg.minibatch)))
            ]
        )
    stats: dict[str, list[float]] = {"policy_loss": [], "kl": [], "clip_fraction": [], "approx_kl": []}
    epochs = 0
    for _ in range(cfg.epochs):
        if cfg.target_kl > 0 and stats["approx_kl"] and np.mean(stats["approx_kl"][-3:]) > 1.5 * cfg.target_kl:
            break  # the policy has moved far enough from the one that collected the data
        epochs += 1
        order = torch.randperm(len(batch), generator=generator).numpy()
        for start in range(0, len(batch), cfg.minibatch):
            rows = order[start : start + cfg.minibatch]
            obs = batch.obs(rows)
            logits = policy.logits(obs)
            # ρ compares the tempered policy that sampled the chunks with its update (τ = 1: π itself)
            logp = token_log_probs(logits / cfg.temperature, chunks[rows], mask[rows])
            ratio = (logp - old[rows]).exp()
            a = adv[rows].view(-1, 1, 1)
            surrogate = torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a)
            m = mask[rows].unsqueeze(-1).expand_as(surrogate).to(surrogate.dtype)
            policy_loss = -(surrogate * m).sum() / m.sum().clamp(min=1.0)
            with torch.no_grad():
                ref_logits = reference.logits(obs)
            kl = token_kl(logits, ref_logits, mask[rows])
            loss = policy_loss + cfg.kl_coef * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
            optimizer.step()
            stats["policy_loss"].append(float(policy_loss.detach()))
            stats["kl"].append(float(kl.detach()))
            with torch.no_grad():  # (ρ − 1) − log ρ: a low-variance, non-negative estimate of KL(π_old ‖ π)
                log_ratio = (logp - old[rows]) * m
                stats["approx_kl"].append(float(((log_ratio.exp() - 1 - log_ratio) * m).sum() / m.sum().clamp(min=1)))
            stats["clip_fraction"].append(
                float((((ratio - 1).abs() > cfg.clip).float() * m).sum() / m.sum().clamp(min=1))
            )
    return {**{k: float(np.mean(v)) for k, v in stats.items()}, "epochs": epochs}


def preference_pairs(episodes: list[Episode], ranking: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(chosen, rejected) episode indices, one pair per start-state group: best vs worst shaped return
    (``reward``; a group whose returns tie gives none) or two episodes in random order (``random``)."""
    pairs = []
    for g in sorted({ep.group for ep in episodes}):
        members = [i for i, ep in enumerate(episodes) if ep.group == g]
        if ranking == "random":
            a, b = rng.choice(members, size=2, replace=False)
            pairs.append((int(a), int(b)))
            continue
        scores = np.asarray([episodes[i].shaped_return for i in members])
        best, worst = members[int(scores.argmax())], members[int(scores.argmin())]
        if scores.max() - scores.min() > 1e-6:
            pairs.append((best, worst))
    return pairs


def _episode_log_probs(policy: VLAPolicy, batch: DecisionBatch, episodes: np.ndarray, n_episodes: int) -> torch.Tensor:
    """(n_episodes,) log π of each listed episode's executed tokens (others 0), differentiable."""
    rows = np.flatnonzero(np.isin(batch.episode, episodes))
    dev = policy.device
    logp = token_log_probs(
        policy.logits(batch.obs(rows)), _tensor(batch.chunks[rows], dev), _tensor(batch.mask[rows], dev)
    ).sum(dim=(1, 2))
    out = torch.zeros(n_episodes, device=dev, dtype=logp.dtype)
    return out.index_add(0, _tensor(batch.episode[rows], dev), logp)


def dpo_update(
    policy: VLAPolicy,
    reference: VLAPolicy,
    optimizer: torch.optim.Optimizer,
    batch: DecisionBatch,
    pairs: list[tuple[int, int]],
    n_episodes: int,
    cfg: DPOConfig,
    rng: np.random.Generator,
) -> dict[str, float]:
    """``cfg.dpo_steps`` DPO steps on ``pairs`` of this round's episodes (module docstring)."""
    if not pairs:
        return {"dpo_loss": float("nan"), "reward_margin": float("nan"), "pairs": 0}
    used = np.unique(np.asarray(pairs).ravel())
    with torch.no_grad():
        ref = _episode_log_probs(reference, batch, used, n_episodes)
    executed_tokens = np.bincount(batch.episode, weights=batch.mask.sum(1), minlength=n_episodes)
    tokens = torch.as_tensor(executed_tokens * batch.chunks.shape[-1], device=policy.device, dtype=torch.float32)
    losses, margins = [], []
    for _ in range(cfg.dpo_steps):
        pick = rng.choice(len(pairs), size=min(cfg.pairs_per_step, len(pairs)), replace=False)
        chosen = torch.as_tensor([pairs[k][0] for k in pick], device=policy.device)
        rejected = torch.as_tensor([pairs[k][1] for k in pick], device=policy.device)
        logp = _episode_log_probs(policy, batch, np.union1d(chosen.cpu().numpy(), rejected.cpu().numpy()), n_episodes)
        ratio = logp - ref
        if cfg.per_token:
            ratio = ratio / tokens.clamp(min=1)
        margin = ratio[chosen] - ratio[rejected]
        loss = -torch.nn.functional.logsigmoid(cfg.beta * margin).mean()
        if cfg.nll_weight > 0:
            loss = loss + cfg.nll_weight * (-logp[chosen] / tokens[chosen].clamp(min=1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        margins.append(float(margin.detach().mean()))
    return {"dpo_loss": float(np.mean(losses)), "reward_margin": float(np.mean(margins)), "pairs": len(pairs)}


def kept_episodes(episodes: list[Episode], keep: int, ranking: str, rng: np.random.Generator) -> list[int]:
    """Indices of the episodes RFT trains on: per start-state group, the ``keep`` best by shaped
    return that beat the group's mean (``reward``), or ``keep`` at random (``random``)."""
    kept = []
    for g in sorted({ep.group for ep in episodes}):
        members = [i for i, ep in enumerate(episodes) if ep.group == g]
        if ranking == "random":
            kept += [int(i) for i in rng.choice(members, size=min(keep, len(members)), replace=False)]
            continue
        scores = np.asarray([episodes[i].shaped_return for i in members])
        order = np.argsort(-scores, kind="stable")[:keep]
        kept += [members[k] for k in order if scores[k] > scores.mean() + 1e-6]
    return sorted(kept)


def rft_update(
    policy: VLAPolicy,
    reference: VLAPolicy,
    optimizer: torch.optim.Optimizer,
    buffer: DecisionBatch | None,
    cfg: RFTConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """``cfg.sft_steps`` behaviour-cloning steps on minibatches of the buffer, with the KL anchor."""
    if buffer is None or len(buffer) == 0:
        return {"nll": float("nan"), "kl": float("nan"), "buffer_decisions": 0}
    dev = policy.device
    nlls, kls = [], []
    for _ in range(cfg.sft_steps):
        rows = torch.randint(len(buffer), (min(cfg.minibatch, len(buffer)),), generator=generator).numpy()
        obs = buffer.obs(rows)
        mask = _tensor(buffer.mask[rows], dev)
        logits = policy.logits(obs)
        logp = token_log_probs(logits, _tensor(buffer.chunks[rows], dev), mask)
        m = mask.unsqueeze(-1).expand_as(logp).to(logp.dtype)
        nll = -logp.sum() / m.sum().clamp(min=1.0)
        with torch.no_grad():
            ref_logits = reference.logits(obs)
        kl = token_kl(logits, ref_logits, mask)
        loss = nll + cfg.kl_coef * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
        optimizer.step()
        nlls.append(float(nll.detach()))
        kls.append(float(kl.detach()))
    return {"nll": float(np.mean(nlls)), "kl": float(np.mean(kls)), "buffer_decisions": len(buffer)}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def evaluate(venv, policy: VLAPolicy, cfg: OnlineConfig) -> dict[str, float]:
    """Deterministic episodes from the fixed evaluation seeds, ``venv.num_envs`` at a time."""
    n = venv.num_envs
    episodes: list[Episode] = []
    for first in range(0, cfg.eval_episodes, n):
        seeds = [EVAL_SEED + first + k for k in range(n)]
        episodes += collect(venv, policy, seeds, 1, temperature=0.0)[: cfg.eval_episodes - first]
    return summarise(episodes)


CURVE_FIELDS = (
    "iteration",
    "episodes",
    "env_steps",
    "train_success",
    "train_final_progress",
    "train_shaped_return",
    "eval_success",
    "eval_final_progress",
    "seconds",
)


def _write_curve(out: Path, curve: list[dict]) -> None:
    lines = [",".join(CURVE_FIELDS)]
    for row in curve:
        lines.append(",".join("" if row.get(k) is None else f"{row[k]:.6g}" for k in CURVE_FIELDS))
    atomic_write_text(out / "curve.csv", "\n".join(lines) + "\n")


def _plot_curve(out: Path, curve: list[dict], title: str) -> None:
    import matplotlib  # optional plotting dependency, imported only when a curve is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ev = [r for r in curve if r.get("eval_success") is not None]
    ax.plot(
        [r["episodes"] for r in ev], [100 * r["eval_success"] for r in ev], "o-", label="evaluation (deterministic)"
    )
    tr = [r for r in curve if r.get("train_success") is not None]
    ax.plot(
        [r["episodes"] for r in tr],
        [100 * r["train_success"] for r in tr],
        ".--",
        alpha=0.6,
        label="training rollouts (sampled)",
    )
    ax.set(xlabel="online episodes", ylabel="true success (%)", ylim=(-2, 102), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = out / ".curve.png.tmp"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(out / "curve.png")


def train_online(cfg: OnlineConfig) -> dict:
    """Run (or resume) ``prism-vla rl`` / ``dpo`` / ``rft``; returns the summary (also ``OUT/summary.json``)."""
    validate(cfg)
    out = Path(cfg.out)
    algorithm = algorithm_name(cfg)
    if cfg.resume:
        _check_resumable(cfg)
    elif out.exists() and not cfg.overwrite:
        raise FileExistsError(f"--out {out} already exists; pass --resume to continue it or --overwrite to replace it")
    device = resolve_device(cfg.device)
    reference = VLAPolicy(load_vla_module(cfg.init).requires_grad_(False), device=device, path=cfg.init)
    model, state, iteration = restore_checkpoint(out, reference.config, device) if cfg.resume else (None, {}, 0)
    if model is None:
        model = load_vla_module(cfg.init)
    policy = VLAPolicy(model, device=device, path=out)
    per_iteration = cfg.groups * cfg.group_size
    # The envs (and the reward model they load) before anything is written: a bad spec leaves no folder.
    venv = make_online_env(
        policy,
        sim.resolve_task(cfg.task),
        cfg.reward,
        per_iteration,
        cfg.gamma,
        device=str(device),
        vec_env=cfg.vec_env,
        success_reward=cfg.success_reward,
    )
    if not cfg.resume:
        with atomic_dir(out, overwrite=cfg.overwrite, kind="checkpoint") as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
            (tmp / WEIGHTS_NAME).write_bytes((Path(cfg.init) / WEIGHTS_NAME).read_bytes())
            atomic_write_json(tmp / TRAIN_CONFIG_NAME, _config_json(cfg))
    optimizer = torch.optim.Adam([p for p in policy.model.parameters() if p.requires_grad], lr=cfg.lr)
    if state:
        optimizer.load_state_dict(state["optimizer"])
    curve: list[dict] = list(state.get("curve", []))
    done = int(state.get("episodes", 0))
    buffer: DecisionBatch | None = state.get("buffer")  # rft's kept decisions so far
    env_steps = int(curve[-1].get("env_steps", 0)) if curve else 0
    bar = tqdm(
        total=cfg.episodes,
        initial=min(done, cfg.episodes),
        desc=f"prism-vla {algorithm}",
        unit="episode",
        disable=not cfg.progress_bar,
    )
    started = time.time()
    earlier_seconds = float(curve[-1]["seconds"]) if curve else 0.0  # wall time of the sessions before a resume
    try:
        if not curve:
            first = evaluate(venv, policy, cfg)
            curve.append(
                {
                    "iteration": 0,
                    "episodes": 0,
                    "eval_success": first["success_rate"],
                    "eval_final_progress": first["final_progress"],
                    "seconds": 0.0,
                }
            )
            bar.write(f"[{algorithm}] start: evaluation {describe(first)}")
        while done < cfg.episodes:
            iteration += 1
            torch.manual_seed(cfg.seed * 1_000_003 + iteration)
            rng = np.random.default_rng([cfg.seed, iteration])
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
            seeds = [TRAIN_SEED + cfg.seed * 100_000 + iteration * cfg.groups + g for g in range(cfg.groups)]
            episodes = collect(venv, policy, seeds, cfg.group_size, cfg.temperature)
            batch = to_batch(episodes, cfg.gamma, policy.config.chunk_size)
            if isinstance(cfg, RLConfig):
                update = ppo_update(
                    policy, reference, optimizer, batch, group_relative_advantages(batch, episodes), cfg, generator
                )
            elif isinstance(cfg, RFTConfig):
                kept = kept_episodes(episodes, cfg.keep, cfg.ranking, rng)
                if kept:
                    new_rows = batch.take(np.flatnonzero(np.isin(batch.episode, kept)))
                    buffer = new_rows if buffer is None else concat_batches([buffer, new_rows])
                    if len(buffer) > cfg.buffer_size:
                        buffer = buffer.take(np.arange(len(buffer) - cfg.buffer_size, len(buffer)))
                update = {**rft_update(policy, reference, optimizer, buffer, cfg, generator), "kept": len(kept)}
            else:
                pairs = preference_pairs(episodes, cfg.ranking, rng)
                update = dpo_update(policy, reference, optimizer, batch, pairs, len(episodes), cfg, rng)
            done += len(episodes)
            env_steps += sum(ep.length for ep in episodes)
            stats = summarise(episodes)
            row = {
                "iteration": iteration,
                "episodes": done,
                "env_steps": env_steps,
                "train_success": stats["success_rate"],
                "train_final_progress": stats["final_progress"],
                "train_shaped_return": stats["shaped_return"],
                "seconds": round(earlier_seconds + time.time() - started, 1),
                **update,
            }
            if iteration % cfg.eval_every == 0 or done >= cfg.episodes:
                ev = evaluate(venv, policy, cfg)
                row.update(eval_success=ev["success_rate"], eval_final_progress=ev["final_progress"])
            curve.append(row)
            save_checkpoint(
                policy.model,
                out,
                iteration,
                {"optimizer": optimizer.state_dict(), "curve": curve, "episodes": done, "buffer": buffer},
            )
            _write_curve(out, curve)
            bar.update(min(len(episodes), cfg.episodes - bar.n))
            bar.set_postfix(
                train=f"{stats['success_rate']:.0%}",
                eval=f"{row['eval_success']:.0%}" if "eval_success" in row else "-",
            )
    finally:
        bar.close()
        venv.close()
    _plot_curve(out, curve, f"prism-vla {algorithm}: {cfg.task}, reward {cfg.reward}")
    evals = [r for r in curve if r.get("eval_success") is not None]
    summary = {
        "algorithm": algorithm,
        "task": sim.resolve_task(cfg.task),
        "reward": cfg.reward,
        "episodes": done,
        "iterations": iteration,
        "start_eval_success": evals[0]["eval_success"],
        "final_eval_success": evals[-1]["eval_success"],
        "best_eval_success": max(r["eval_success"] for r in evals),
        "eval_episodes": cfg.eval_episodes,
        "env_steps": env_steps,
        "seconds": curve[-1]["seconds"] if curve else 0.0,
        "curve": curve,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def interrupted_message(out: Path) -> str:
    saved = step_checkpoints(out)
    return (
        (
            f"interrupted; iteration {saved[-1][0]} is saved in {saved[-1][1]}; resume with the same command plus "
            "--resume"
        )
        if saved
        else "interrupted before the first iteration finished; nothing to resume"
    )


__all__ = [
    "DPOConfig",
    "OnlineConfig",
    "RFTConfig",
    "RLConfig",
    "dpo_update",
    "interrupted_message",
    "kept_episodes",
    "ppo_update",
    "rft_update",
    "preference_pairs",
    "train_online",
]
