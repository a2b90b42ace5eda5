"""Behaviour cloning of the VLA (``prism-vla bc``), plain or progress-weighted (RA-BC).

The loss is the exact negative log-likelihood of the demonstrated action tokens per token
(``modeling_vla.token_log_prob``), weighted per sample (all 1, or RA-BC weights, see
:mod:`policies.vla.data`). The output folder ``--out`` is itself a loadable policy checkpoint::

    OUT/config.json            the policy architecture (fixed when training starts)
    OUT/model.safetensors      the latest saved weights (replaced atomically at every save)
    OUT/train_config.json      this command's options (a resumed run must match them)
    OUT/checkpoints/step_N/    atomic checkpoints: weights + optimiser state (the last two kept)
    OUT/tb/                    TensorBoard: loss, token accuracy, learning rate

Resume (``--resume``) continues from the newest complete checkpoint (an unreadable newest one
falls back to the one before) and gives the same weights as an uninterrupted run: each step's
batch and augmentation are drawn from a generator seeded by (seed, step), not from a running state.
Ctrl-C saves a checkpoint first.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import safetensors.torch
import torch
from tqdm import tqdm

from episodes.atomic import atomic_dir, atomic_write_bytes, atomic_write_json, check_output_not_input
from episodes.camera_map import parse_cameras
from episodes.cli_errors import check_numeric_fields
from policies.vla.configuration_vla import VLAConfig, parse_vla_backbone
from policies.vla.data import BCData, load_bc_data
from policies.vla.modeling_vla import (
    CONFIG_NAME,
    VLA,
    WEIGHTS_NAME,
    action_to_tokens,
    load_vla_module,
    save_vla,
    token_log_prob,
)
from reward_models.devices import resolve_device

TRAIN_CONFIG_NAME = "train_config.json"
TRAINER_STATE_NAME = "trainer_state.pt"
CHECKPOINTS_DIR = "checkpoints"
STEP_DIR = re.compile(r"^step_(\d+)$")
KEEP_CHECKPOINTS = 2


@dataclass
class BCConfig:
    """Train a VLA policy by behaviour cloning on LeRobot v3 datasets (plain or RA-BC)."""

    data: tuple[str, ...]
    """LeRobot v3 datasets (prism-record output); several datasets and tasks train one policy."""
    out: Path
    """Output folder: a loadable policy checkpoint plus training state (see the module docstring)."""
    weighting: Literal["none", "progress"] = "none"
    """``none``: plain BC. ``progress``: RA-BC, each sample weighted by its chunk's progress gain."""
    progress: tuple[str, ...] = ()
    """With ``--weighting progress``: one progress sidecar per --data (``progress.parquet`` of
    prism-reward eval, or a sarm_progress parquet); none: the datasets' ground-truth progress."""
    progress_column: str | None = None
    """Sidecar column holding Φ (default: its only ``phi.*`` column)."""
    cameras: str = "front,side,wrist"
    """Views the policy uses (comma-separated); a dataset may hold any non-empty subset of them."""
    image_size: int = 64
    """Side (px) views are resized to."""
    backbone: str = "conv"
    """``conv`` (small CNN from scratch) or ``hf:<local dir>`` (a transformers vision tower)."""
    freeze_backbone: bool = False
    """Keep an ``hf`` backbone's weights fixed."""
    text_encoder: str = "sentence:minilm"
    """Frozen sentence encoder of the instructions (``sentence:minilm`` or ``sentence:<local dir>``)."""
    chunk_size: int = 8
    """H: actions predicted per observation."""
    execute_steps: int = 4
    """Actions of a chunk executed before re-planning (receding horizon), 1..H."""
    act_mode: Literal["argmax", "mean"] = "argmax"
    """Deterministic action: the most likely bin or the expected bin centre."""
    embed_dim: int = 128
    """Width of the view, text and proprioception embeddings."""
    hidden_dim: int = 256
    """Width of the trunk MLP."""
    steps: int = 3000
    """Optimiser steps in total (a resumed run continues up to this number; the learning-rate
    schedule follows it, so only an unchanged --steps resumes exactly)."""
    batch_size: int = 64
    """Samples per step."""
    lr: float = 3e-4
    """AdamW learning rate (cosine decay to 10% over --steps, after a short warm-up)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    augment_shift: int = 4
    """Random image shift (px, replicate-padded) per sample and view; 0 turns augmentation off."""
    seed: int = 0
    """Seed of the initial weights, batches and augmentation."""
    save_every: int = 500
    """Steps between checkpoints (one is always written at the end)."""
    log_every: int = 50
    """Steps between TensorBoard points and progress-bar updates."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda[:N]."""
    resume: bool = False
    """Continue the run in --out from its newest checkpoint (its options must match)."""
    overwrite: bool = False
    """Replace an existing --out that prism-vla wrote (only once the new run is set up)."""
    progress_bar: bool = True
    """Show a progress bar."""


NUMERIC_RANGES = {
    "image_size": "[16, 1024]",
    "chunk_size": "[1, 256]",
    "execute_steps": "[1, 256]",
    "embed_dim": "[1, 8192]",
    "hidden_dim": "[1, 65536]",
    "steps": "[1, inf)",
    "batch_size": "[1, inf)",
    "lr": "(0, 1]",
    "weight_decay": "[0, inf)",
    "augment_shift": "[0, 64]",
    "save_every": "[1, inf)",
    "log_every": "[1, inf)",
    "seed": "[0, inf)",
}
RESUME_MAY_CHANGE = {"steps", "resume", "overwrite", "progress_bar", "device", "save_every", "log_every"}
"""Options a resumed run may give differently; every other one must match the saved run."""


def validate(cfg: BCConfig) -> None:
    """Every check that needs no data, before anything is read or written."""
    check_numeric_fields(cfg, NUMERIC_RANGES)
    if not cfg.data:
        raise ValueError("--data: give at least one dataset")
    if cfg.execute_steps > cfg.chunk_size:
        raise ValueError(f"--execute-steps ({cfg.execute_steps}) must be <= --chunk-size ({cfg.chunk_size})")
    parse_vla_backbone(cfg.backbone)
    if not cfg.text_encoder.startswith("sentence:"):
        raise ValueError(
            f"--text-encoder must be 'sentence:minilm' or 'sentence:<local dir>', got {cfg.text_encoder!r}"
        )
    if not parse_cameras(cfg.cameras):
        raise ValueError("--cameras: give at least one camera")
    if cfg.progress and cfg.weighting != "progress":
        raise ValueError("--progress is only read with --weighting progress")
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    check_output_not_input(cfg.out, [*cfg.data, *cfg.progress, cfg.backbone])
    resolve_device(cfg.device)


def _config_json(cfg: BCConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["out"] = str(cfg.out)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _check_resumable(cfg: BCConfig) -> None:
    saved_path = cfg.out / TRAIN_CONFIG_NAME
    if not saved_path.is_file():
        raise FileNotFoundError(f"--resume: {cfg.out} is not a prism-vla training folder (no {TRAIN_CONFIG_NAME})")
    saved = json.loads(saved_path.read_text())
    now = _config_json(cfg)
    for key, value in now.items():
        if key not in RESUME_MAY_CHANGE and key != "out" and saved.get(key) != value:
            raise ValueError(
                f"--resume: --{key.replace('_', '-')} is {value!r} but the run in {cfg.out} used "
                f"{saved.get(key)!r}; give the same options (only {sorted(RESUME_MAY_CHANGE)} may change)"
            )


def step_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints under ``out/checkpoints``, oldest first."""
    root = out / CHECKPOINTS_DIR
    found = []
    if root.is_dir():
        for entry in root.iterdir():
            m = STEP_DIR.match(entry.name)
            if m and (entry / CONFIG_NAME).is_file():
                found.append((int(m.group(1)), entry))
    return sorted(found)


def _model_config(cfg: BCConfig, data: BCData) -> VLAConfig:
    proprio = data.proprio.numpy().astype(np.float64)
    return VLAConfig(
        cameras=parse_cameras(cfg.cameras),
        image_size=cfg.image_size,
        backbone=cfg.backbone,
        freeze_backbone=cfg.freeze_backbone,
        text_encoder=cfg.text_encoder,
        embed_dim=cfg.embed_dim,
        hidden_dim=cfg.hidden_dim,
        proprio_indices=data.proprio_indices,
        proprio_mean=tuple(proprio.mean(0)),
        proprio_std=tuple(np.maximum(proprio.std(0), 1e-3)),
        chunk_size=cfg.chunk_size,
        execute_steps=cfg.execute_steps,
        act_mode=cfg.act_mode,
        model_id=f"vla-{'rabc' if cfg.weighting == 'progress' else 'bc'}",
    )


def _random_shift(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by ``shift`` and crop back at a random offset per image."""
    n, v, c, h, w = images.shape
    flat = images.reshape(n * v, c, h, w).float()
    padded = torch.nn.functional.pad(flat, (shift, shift, shift, shift), mode="replicate")
    dx = torch.randint(0, 2 * shift + 1, (n * v,), generator=generator)
    dy = torch.randint(0, 2 * shift + 1, (n * v,), generator=generator)
    rows = dy.view(-1, 1) + torch.arange(h).view(1, -1)  # (NV, H)
    cols = dx.view(-1, 1) + torch.arange(w).view(1, -1)  # (NV, W)
    idx = torch.arange(n * v).view(-1, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx, rows.unsqueeze(-1), cols.unsqueeze(1)].permute(0, 3, 1, 2)
    return out.reshape(n, v, c, h, w)


def _lr_at(cfg: BCConfig, step: int) -> float:
    warmup = min(100, max(1, cfg.steps // 20))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress))))


def batch_loss(
    model: VLA,
    data: BCData,
    idx: torch.Tensor,
    sentences: torch.Tensor,
    device: torch.device,
    shift: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-token NLL of the batch ``idx`` and its token accuracy (greedy token = demo token)."""
    images = data.images[idx]
    if shift > 0:
        images = _random_shift(images, shift, generator)
    mask = data.chunk_mask[idx].to(device)
    logits = model(
        images.to(device),
        data.view_mask[idx].to(device),
        data.proprio[idx].to(device),
        sentences[data.text_index[idx]].to(device),
    )
    actions = data.actions[idx].to(device)
    tokens_per_sample = mask.sum(1).clamp_min(1) * actions.shape[-1]
    nll = -token_log_prob(logits, actions, mask) / tokens_per_sample
    weights = data.weights[idx].to(device)
    loss = (weights * nll).mean()
    with torch.no_grad():
        hit = (logits.argmax(-1) == action_to_tokens(actions, logits.shape[-1])).float().mean(-1)
        accuracy = (hit * mask).sum() / mask.sum().clamp_min(1)
    return loss, accuracy


def _save(model: VLA, optimizer: torch.optim.Optimizer, out: Path, step: int, losses: list[float]) -> None:
    save_checkpoint(model, out, step, {"step": step, "optimizer": optimizer.state_dict(), "losses": losses})


def save_checkpoint(model: VLA, out: Path, step: int, trainer_state: dict) -> None:
    """``out/checkpoints/step_N`` (weights, config, ``trainer_state``) written atomically, the
    top-level weights replaced, and all but the newest :data:`KEEP_CHECKPOINTS` removed."""
    buffer = io.BytesIO()
    torch.save(trainer_state, buffer)
    save_vla(
        model,
        out / CHECKPOINTS_DIR / f"step_{step:08d}",
        overwrite=True,
        extra_files={TRAINER_STATE_NAME: buffer.getvalue()},
    )
    # The top-level policy: config.json never changes after the start, so replacing the weights
    # file atomically keeps the pair consistent at every moment.
    atomic_write_bytes(
        out / WEIGHTS_NAME, safetensors.torch.save({k: v.contiguous() for k, v in model.state_dict().items()})
    )
    for _, old in step_checkpoints(out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def restore_checkpoint(out: Path, model_config: VLAConfig, device: torch.device) -> tuple[VLA | None, dict, int]:
    """The newest readable checkpoint's model and trainer state; a damaged one falls back. (None,
    {}, 0) when the run was set up but interrupted before its first checkpoint."""
    errors = []
    for step, folder in reversed(step_checkpoints(out)):
        try:
            model = load_vla_module(folder)
            state = torch.load(folder / TRAINER_STATE_NAME, map_location="cpu", weights_only=False)
        except (OSError, ValueError, RuntimeError, EOFError) as exc:
            errors.append(f"{folder.name}: {exc}")
            print(f"prism-vla: checkpoint {folder} is unreadable ({exc}); trying the one before", file=sys.stderr)
            continue
        if model.config.to_dict() != model_config.to_dict():
            raise ValueError(f"--resume: {folder} holds a different model than the run's {CONFIG_NAME}")
        return model.to(device), state, step
    if errors:
        raise ValueError(f"--resume: no readable checkpoint in {out / CHECKPOINTS_DIR} ({'; '.join(errors)})")
    return None, {}, 0  # set up but interrupted before the first checkpoint: start at step 0


def train_bc(cfg: BCConfig) -> dict:
    """Run (or resume) a BC / RA-BC training; returns a summary (also in ``OUT/train_summary.json``)."""
    validate(cfg)
    out = Path(cfg.out)
    if cfg.resume:
        _check_resumable(cfg)
    elif out.exists() and not cfg.overwrite:
        raise FileExistsError(f"--out {out} already exists; pass --resume to continue it or --overwrite to replace it")
    device = resolve_device(cfg.device)
    data = load_bc_data(
        cfg.data,
        parse_cameras(cfg.cameras),
        cfg.image_size,
        cfg.chunk_size,
        cfg.weighting,
        cfg.progress,
        cfg.progress_column,
        progress_bar=cfg.progress_bar,
    )
    if cfg.resume:
        model_config = VLAConfig.from_json(out / CONFIG_NAME)
        model, state, start = restore_checkpoint(out, model_config, device)
    else:
        model, state, start = None, {}, 0
        model_config = _model_config(cfg, data)
    if model is None:
        torch.manual_seed(cfg.seed)
        model = VLA(model_config).to(device)
    if not cfg.resume:
        with atomic_dir(out, overwrite=cfg.overwrite, kind="checkpoint") as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
            atomic_write_json(tmp / TRAIN_CONFIG_NAME, _config_json(cfg))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state:
        optimizer.load_state_dict(state["optimizer"])
    losses: list[float] = list(state.get("losses", []))
    with torch.no_grad():
        sentences = model.encode_text(data.instructions).cpu()
    from torch.utils.tensorboard import SummaryWriter  # tensorboard: slow to import; only a training run writes it

    writer = SummaryWriter(str(out / "tb"), purge_step=start)
    bar = tqdm(total=cfg.steps, initial=start, desc="prism-vla bc", unit="step", disable=not cfg.progress_bar)
    model.train()
    step = start
    started = time.time()
    try:
        while step < cfg.steps:
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            idx = torch.randint(0, len(data), (cfg.batch_size,), generator=generator)
            loss, accuracy = batch_loss(model, data, idx, sentences, device, cfg.augment_shift, generator)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(cfg, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                recent = float(np.mean(losses[-cfg.log_every :]))
                writer.add_scalar("train/loss", recent, step)
                writer.add_scalar("train/token_accuracy", float(accuracy), step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                bar.set_postfix(loss=f"{recent:.3f}", acc=f"{float(accuracy):.2f}")
            if step % cfg.save_every == 0 or step == cfg.steps:
                _save(model, optimizer, out, step, losses)
    except KeyboardInterrupt:
        saved = step_checkpoints(out)
        if step > start and (not saved or saved[-1][0] != step):
            _save(model, optimizer, out, step, losses)
        raise
    finally:
        bar.close()
        writer.close()
    model.eval()
    summary = {
        "steps": step,
        "samples": len(data),
        "instructions": data.instructions,
        "tasks": data.tasks,
        "weighting": cfg.weighting,
        "first_loss": float(np.mean(losses[: cfg.log_every])) if losses else None,
        "final_loss": float(np.mean(losses[-cfg.log_every :])) if losses else None,
        "zero_weight_fraction": float((data.weights == 0).float().mean()),
        "seconds_this_session": round(time.time() - started, 1),
    }
    atomic_write_json(out / "train_summary.json", summary)
    return summary


__all__ = [
    "BCConfig",
    "batch_loss",
    "restore_checkpoint",
    "save_checkpoint",
    "step_checkpoints",
    "train_bc",
    "validate",
]
