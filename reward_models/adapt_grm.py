"""One-shot adaptation of a trained GRM to a new task or scene (``prism-reward adapt``).

Fine-tunes on hops from a *single* demonstration of the new task: the demo's frames give every
ordered pair (progress and rewound regress), anchored at its first and last frame, with view and
context dropout and augmentation -- the same batch construction as training. The new
instruction's words are added to the vocabulary (starting from the ``<unk>`` vector). Labels are
the demo's ground-truth progress when it has them, else Φ_i = i / (T − 1) (a demo is successful).

Plain fine-tuning on one episode overfits it (measured on a visually different scene: push VOC
0.74 → 0.10). Adaptation therefore never trusts the last step:

* regularised: L2-SP (``anchor_weight``: the loss also pays (α/2)·‖w − w₀‖² for leaving the
  pretrained weights w₀, instead of weight decay towards 0), the early image layers frozen
  (``freeze``), rehearsal of pretraining episodes (``rehearse``), and the trainer's
  augmentation (colour jitter, shift, temporal sub-sampling and start clipping);
* a label-free self-check picks the step: every ``holdout_every``-th frame of the demo (and of
  each unlabelled video) is never trained on; those frames played forward and then rewound must
  get a Φ that rises and falls (Spearman with the tent) and a successful video must end near
  Φ = 1, while negatives built from the same frames (played backwards, the first frame held
  still, the first half shuffled) must end near Φ = 0. The score is taken at step 0 (the
  unadapted model) and every ``check_every`` steps; the best checkpoint is kept, so adaptation can
  not make the self-check worse;
* guarded by rehearsal: labelled episodes of data the model already handled (``rehearse``; by
  default the checkpoint's own rehearsal set, ``CHECKPOINT/rehearsal/``, which the shipped ``grm``
  carries: train-split sim episodes of every task) are split in two: half are
  mixed into the batches, the other half is never trained on and scored at every check; a step
  is a candidate only if their success AUROC, 3-class accuracy and VOC each stay within
  ``guard_tolerance`` of step 0's -- lost discrimination of failures, which no check on one
  successful demo can see. Measured (``bench/grm_generalisation.py``, 60 steps, held-out world
  split, the shipped rehearsal set): push 3-class 47 % → 40 %, AUROC 0.87 → 0.82, where the
  demo-only self-check gave 33 % / 0.70; still below zero-shot, because what rises is a *partial* push of the new scene read as
  done, which neither the train-split guard nor the demo's negatives (Φ ≈ 0 at every step) show;
* unlabelled videos of the new scene (``unlabelled``, assumed successful unless they say
  otherwise) teach time order only: a later frame is further along, a rewound pair is regress
  (``batch_loss(sign_only=True)``: only the sign of the hop is supervised, not its size);
* ``eval``: held-out labelled episodes of the scene are scored by ``prism-reward eval`` with the
  zero-shot and the adapted checkpoint, and a before/after table is printed and written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from episodes.atomic import atomic_write_json, check_output_not_input, check_replaceable
from episodes.camera_map import map_episode_cameras, parse_camera_map
from episodes.cli_errors import check_numeric_fields, parse_config
from reward_models.devices import resolve_device
from reward_models.metrics import auroc, completion_class, spearman, voc
from reward_models.modeling_grm import (
    GRM,
    ConvBackbone,
    GRMProgressModel,
    load_grm_module,
    save_grm,
)
from reward_models.registry import resolve_grm_checkpoint
from reward_models.tracker import track_episode
from reward_models.train_grm import (
    NUMERIC_RANGES,
    GRMTrainConfig,
    PairSampler,
    TrainEpisode,
    batch_loss,
    load_source_episodes,
    run_training,
    to_train_episode,
)

ADAPT_RANGES: dict[str, str] = {
    "anchor_weight": "[0, inf)",
    "holdout_every": "[2, inf)",
    "check_every": "[1, inf)",
    "min_gain": "[0, inf)",
    "unlabelled_weight": "[0, inf)",
    "rehearse_episodes": "[1, inf)",
    "guard_tolerance": "[0, inf)",
}
"""Valid interval of each numeric adaptation field (the training ones come from NUMERIC_RANGES)."""
FREEZE_CHOICES = ("none", "early", "backbone")
DEMO_TASK_KEY = "<adaptation demo>"
"""The demo's own task key: with rehearsal it is a sampling group of its own (not one episode
among the pretraining episodes of its task), so it keeps a fixed share of every batch."""


REHEARSAL_DIR = "rehearsal"
"""Subfolder of a GRM checkpoint holding its rehearsal set: one labelled dataset per task."""


def checkpoint_rehearsal_sets(checkpoint: Path) -> tuple[Path, ...]:
    """The datasets of ``checkpoint``'s rehearsal set (``prism-pretrain-grm`` writes it), sorted."""
    root = Path(checkpoint) / REHEARSAL_DIR
    if not root.is_dir():
        return ()
    return tuple(sorted(d for d in root.iterdir() if (d / "meta" / "info.json").is_file()))


@dataclass
class AdaptConfig:
    """Adapt a GRM checkpoint to a new task from one demonstration episode."""

    checkpoint: Path
    """GRM checkpoint directory to start from, or ``grm`` for the pretrained GRM shipped with prism-rl."""
    out: Path
    """Where the adapted checkpoint directory is written."""
    demo: Path | None = None
    """Source holding the demonstration: a LeRobot v3 dataset or any other source prism-reward eval
    reads (episode folders, Robo-Dopamine's raw-data layout, ...)."""
    episode: int = 0
    """Index of the demonstration episode inside --demo."""
    task: str | None = None
    """Instruction of the new task (default: the demo's own instruction)."""
    camera_map: tuple[str, ...] = ()
    """Rename the demo's cameras onto the checkpoint's views: ``cam_high=front,cam_left_wrist=wrist``
    (repeatable); cameras not named keep their names."""
    fps: float | None = None
    """Subsample the demo to this frame rate while loading (the final frame is kept; default: all frames)."""
    labels: str = "auto"
    """Hop labels from: auto (the demo's progress column if present, else linear), progress, linear."""
    steps: int = 200
    """Fine-tuning steps."""
    lr: float = 3e-4
    """Peak learning rate."""
    frames_per_episode: int = 8
    """Frames of the demo per batch group (all ordered pairs are scored)."""
    batch_episodes: int = 4
    """Groups per batch (each with its own frames, dropout and augmentation)."""
    freeze: str = "early"
    """Image-backbone layers kept fixed: ``early`` (every conv stage but the last; a pretrained
    backbone entirely), ``backbone`` (all of it) or ``none``. Early filters (edges, colour blobs)
    are generic and one demo has too few images to re-learn them without memorising its pixels;
    the last stage, the projection and the head re-map them to a new scene's layout."""
    anchor_weight: float = 0.1
    """L2-SP strength α: the loss adds (α/2)·‖w − w₀‖² over the trained weights (w₀: the
    checkpoint's), the α of Li et al. 2018 ("Explicit inductive bias for transfer learning"). 0:
    plain fine-tuning (with the trainer's weight decay towards 0 instead)."""
    rehearse: tuple[Path, ...] = ()
    """Labelled datasets the checkpoint already handles (its pretraining data, or new recordings of
    it): half their episodes are mixed into the adaptation batches, the other half is scored at
    every self-check (the rehearsal guard). Default: the checkpoint's own rehearsal set
    (``CHECKPOINT/rehearsal/*``; the shipped ``grm`` has one) when it has one."""
    no_rehearse: bool = False
    """Adapt without rehearsal, even where the checkpoint ships a rehearsal set."""
    rehearse_episodes: int = 32
    """Use at most this many episodes of each --rehearse dataset."""
    guard_tolerance: float = 0.02
    """A step is kept only if, on the rehearsal episodes, success AUROC, 3-class accuracy and VOC
    each stay within this of step 0's (inf: no guard)."""
    unlabelled: Path | None = None
    """Unlabelled videos of the new scene (a dataset or a video folder; successful demonstrations
    unless an episode says otherwise): time order and rewinds only, no progress labels."""
    unlabelled_weight: float = 1.0
    """Weight of the unlabelled videos' time-order loss (when there is a demo or rehearsal)."""
    holdout_every: int = 3
    """Every N-th frame of the demo and of each unlabelled video is held out of training for the
    self-check (videos shorter than 2N frames are trained on and checked in full)."""
    check_every: int | None = None
    """Self-check every N steps (default: steps / 10); step 0 is always checked."""
    min_gain: float = 0.01
    """A later step replaces the best checkpoint only when its self-check is higher by this."""
    eval: Path | None = None
    """Held-out labelled episodes of the new scene: scored with the zero-shot and the adapted model."""
    eval_out: Path | None = None
    """Before/after report directory (default: <out>.eval)."""
    seed: int = 0
    """Seed of sampling and augmentation."""
    device: str = "auto"
    """auto | cpu | cuda."""
    num_threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    run_dir: Path | None = None
    """Training state and TensorBoard logs (default: <out>.run)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        self.checkpoint, self.out = Path(self.checkpoint), Path(self.out)
        self.demo = None if self.demo is None else Path(self.demo)
        if self.labels not in ("auto", "progress", "linear"):
            raise ValueError(f"labels must be auto, progress or linear, got {self.labels!r}")
        self.rehearse = tuple(
            Path(r) for r in ((self.rehearse,) if isinstance(self.rehearse, (str, Path)) else self.rehearse)
        )
        self.unlabelled = None if self.unlabelled is None else Path(self.unlabelled)
        self.eval = None if self.eval is None else Path(self.eval)
        self.eval_out = None if self.eval_out is None else Path(self.eval_out)

    def resolved_eval_out(self) -> Path:
        return self.eval_out if self.eval_out is not None else self.out.with_name(self.out.name + ".eval")


def freeze_for_adaptation(model: GRM, which: str) -> int:
    """Fix the image-backbone layers ``which`` names (see ``AdaptConfig.freeze``); returns the
    number of frozen parameters."""
    backbone = model.backbone
    if which == "none":
        return 0
    if which == "backbone" or not isinstance(backbone, ConvBackbone):
        frozen = list(backbone.parameters())
    else:
        last_conv = max(i for i, m in enumerate(backbone.net) if isinstance(m, torch.nn.Conv2d))
        frozen = [p for m in list(backbone.net)[:last_conv] for p in m.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def split_held_out(length: int, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(trained, held-out) frame indices: every ``every``-th frame is held out for the self-check
    (never the first or last, which anchor the hops). Shorter than 2·every frames: all of it, both."""
    idx = np.arange(length)
    if length < 2 * every:
        return idx, idx
    held = idx % every == every // 2
    held[[0, -1]] = False
    return idx[~held], idx[held]


def split_rehearsal(episodes: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """(guard, trained): every other labelled rehearsal episode guards and is never trained on, so
    the guard measures drift on the data the model handled before, not what rehearsal memorised."""
    labelled = [ep for ep in episodes if ep.outcome is not None]
    guard = labelled[1::2]
    return guard, [ep for ep in episodes if not any(ep is g for g in guard)]


def keep_frames(ep: TrainEpisode, rows: np.ndarray) -> TrainEpisode:
    """The training episode restricted to the frames ``rows`` (in order)."""
    return replace(
        ep,
        frames=ep.frames[torch.from_numpy(rows)],
        progress=ep.progress[rows],
        state=None if ep.state is None else ep.state[rows],
    )


def rewound(episode: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The frames ``rows`` played forward, then backwards to the first (ReWiND-style rewind)."""
    order = np.r_[rows, rows[-2::-1]]
    return {cam: frames[order] for cam, frames in episode.frames.items()}


Video = tuple[dict[str, np.ndarray], str]
"""Frames per camera and the instruction."""


def demo_negatives(episode: Any, rows: np.ndarray, task: str, rng: np.random.Generator) -> list[Video]:
    """Failures built from a successful video without labels, each ending short of done: the
    frames ``rows`` played backwards (ends at the start), the first frame held still as long, and
    the first half of ``rows`` shuffled (never past half-way, in no order)."""
    first_half = rows[: max(2, len(rows) // 2)]
    orders = (rows[::-1], np.zeros(len(rows), dtype=int), rng.permutation(first_half))
    return [({cam: frames[order] for cam, frames in episode.frames.items()}, task) for order in orders]


def self_check(
    model: GRM, videos: Sequence[Video], device: torch.device, negatives: Sequence[Video] = ()
) -> dict[str, float]:
    """Label-free score in [-1, 1] of a model on successful videos played forward then rewound:
    the mean of (a) Spearman(Φ, the rise-then-fall time order), (b) 2·Φ_end − 1, Φ_end being Φ at
    the last forward frame (a successful demo ends done), and, with ``negatives``, (c) 1 − 2·Φ̄_neg,
    Φ̄_neg their mean final Φ (a model that reads everything as progress loses in (c) what it gains
    in (b)). A constant Φ ranks nothing: (a) = 0."""
    tracked = GRMProgressModel(model, device)
    order, end = [], []
    for frames, task in videos:
        phi = track_episode(tracked, frames, task=task).phi
        n = (len(phi) + 1) // 2
        rho = spearman(np.r_[np.arange(n), np.arange(n - 2, -1, -1)], phi)
        order.append(rho if np.isfinite(rho) else 0.0)
        end.append(float(phi[n - 1]))
    terms = [float(np.mean(order)), 2.0 * float(np.mean(end)) - 1.0]
    result = {"rise_fall_order": terms[0], "end_progress": float(np.mean(end))}
    if negatives:
        result["negative_end_progress"] = float(
            np.mean([track_episode(tracked, f, task=t).final for f, t in negatives])
        )
        terms.append(1.0 - 2.0 * result["negative_end_progress"])
    model.train()
    return {"score": float(np.mean(terms)), **result}


GUARD_METRICS = ("success_auroc", "completion_accuracy", "voc_plus")
"""What the rehearsal guard compares with step 0 (reward_models.metrics names)."""


def rehearsal_metrics(model: GRM, episodes: Sequence[Any], device: torch.device) -> dict[str, float]:
    """Success AUROC (score: final Φ), 3-class accuracy and VOC of successes on labelled episodes
    (NaN where undefined, e.g. AUROC without failures)."""
    tracked = GRMProgressModel(model, device)
    phis = [track_episode(tracked, ep).phi for ep in episodes]
    model.train()
    success = np.array([ep.outcome == "success" for ep in episodes])
    vocs = [np.nan_to_num(voc(phi)) for phi, ok in zip(phis, success) if ok]  # a flat Φ orders nothing: 0
    return {
        "success_auroc": auroc([phi[-1] for phi in phis], success),
        "completion_accuracy": float(np.mean([completion_class(phi) == ep.outcome for phi, ep in zip(phis, episodes)])),
        "voc_plus": float(np.mean(vocs)) if vocs else float("nan"),
    }


class BestStepKeeper:
    """``on_step`` hook: runs the self-check every ``every`` steps (and at the last) and keeps the
    weights of the best-scoring step; step 0 is checked at construction, so it is a candidate.
    With ``guard`` episodes (labelled), a later step is a candidate only if none of their
    :data:`GUARD_METRICS` fell more than ``tolerance`` below step 0's."""

    def __init__(
        self,
        model: GRM,
        videos: Sequence[Video],
        device: torch.device,
        every: int,
        last: int,
        min_gain: float,
        negatives: Sequence[Video] = (),
        guard: Sequence[Any] = (),
        tolerance: float = 0.0,
    ) -> None:
        self.videos, self.device, self.every, self.last, self.min_gain = videos, device, every, last, min_gain
        self.negatives, self.guard, self.tolerance = negatives, guard, tolerance
        self.curve: list[dict[str, Any]] = []
        self.best_step, self.best_score, self.best_state = -1, -np.inf, None
        self.reference: dict[str, float] = {}
        self(0, model)

    def guard_holds(self, rehearsal: dict[str, float]) -> bool:
        """No metric more than ``tolerance`` below step 0's (metrics undefined at step 0 are skipped)."""
        return all(
            not np.isfinite(self.reference[k])
            or np.nan_to_num(rehearsal[k], nan=-np.inf) >= self.reference[k] - self.tolerance
            for k in GUARD_METRICS
        )

    def __call__(self, step: int, model: GRM) -> None:
        if step % self.every and step != self.last:
            return
        with torch.no_grad():
            result: dict[str, Any] = self_check(model, self.videos, self.device, self.negatives)
            if self.guard and np.isfinite(self.tolerance):
                result["rehearsal"] = rehearsal_metrics(model, self.guard, self.device)
                self.reference = self.reference or result["rehearsal"]
                result["guard_holds"] = self.guard_holds(result["rehearsal"])
        self.curve.append({"step": step, **result})
        if not result.get("guard_holds", True):
            return
        if result["score"] > self.best_score + (self.min_gain if self.curve[1:] else 0.0):
            self.best_step, self.best_score = step, result["score"]
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def l2sp_loss(model: GRM, weight: float) -> Callable[[GRM, torch.device], tuple[torch.Tensor, dict[str, float]]]:
    """``extra_loss`` hook: (α/2)·‖w − w₀‖² over the parameters being trained, w₀ their values now."""
    anchors = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def loss(m: GRM, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        sq = sum(((p - anchors[name].to(p.device)) ** 2).sum() for name, p in m.named_parameters() if name in anchors)
        return 0.5 * weight * sq, {"l2sp_sq_distance": float(sq.detach())}

    return loss


def time_order_loss(
    sampler: PairSampler, weight: float
) -> Callable[[GRM, torch.device], tuple[torch.Tensor, dict[str, float]]]:
    """``extra_loss`` hook: a batch of unlabelled videos each step, only the hops' signs supervised."""

    def loss(m: GRM, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        value, metrics = batch_loss(m, sampler.sample(), device, sign_only=True)
        return weight * value, {"time_order_loss": metrics["loss"]}

    return loss


def adapt_grm(
    cfg: AdaptConfig,
    demo_episode: Any | None = None,
    unlabelled_episodes: Sequence[Any] | None = None,
    rehearse_episodes: Sequence[Any] | None = None,
) -> Path:
    """Adapt and write the new checkpoint; returns its path. In-memory :class:`episodes.Episode`
    objects replace the files when given: ``demo_episode`` (``cfg.demo``/``cfg.episode``),
    ``unlabelled_episodes`` (``cfg.unlabelled``), ``rehearse_episodes`` (``cfg.rehearse``)."""
    check_numeric_fields(
        cfg,
        {
            **ADAPT_RANGES,
            **{
                key: NUMERIC_RANGES[key]
                for key in ("steps", "lr", "frames_per_episode", "batch_episodes", "num_threads", "fps")
            },
        },
    )
    if cfg.freeze not in FREEZE_CHOICES:  # checked here, not in __post_init__: tyro would box the message
        raise ValueError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, got {cfg.freeze!r}")
    cfg.checkpoint = resolve_grm_checkpoint(cfg.checkpoint)  # "grm": the shipped one
    if cfg.no_rehearse:
        if cfg.rehearse:
            raise ValueError("--no-rehearse and --rehearse contradict each other: choose one")
        rehearse_episodes = []
    elif not cfg.rehearse and rehearse_episodes is None:
        cfg.rehearse = checkpoint_rehearsal_sets(cfg.checkpoint)
    if cfg.demo is None and demo_episode is None and cfg.unlabelled is None and unlabelled_episodes is None:
        raise ValueError("nothing to adapt to: give --demo (one demonstration) and/or --unlabelled (videos)")
    inputs = [cfg.checkpoint, cfg.demo, *cfg.rehearse, cfg.unlabelled, cfg.eval]
    check_output_not_input(cfg.out, inputs)
    check_replaceable(cfg.out, "checkpoint")
    if cfg.eval is not None:
        check_output_not_input(cfg.resolved_eval_out(), [*inputs, cfg.out], out_flag="--eval-out")
        check_replaceable(cfg.resolved_eval_out(), "report")
    mapping = parse_camera_map(cfg.camera_map)  # a malformed map fails here, before anything is loaded
    model = load_grm_module(cfg.checkpoint)
    cameras, size = model.config.cameras, model.config.image_size
    if demo_episode is None and cfg.demo is not None:
        _, items = load_source_episodes(cfg.demo, model.config.image_size, fps=cfg.fps, camera_map=mapping)
        if not 0 <= cfg.episode < len(items):
            raise IndexError(f"--episode {cfg.episode} out of range: {cfg.demo} has {len(items)} episodes")
        demo_episode = items[cfg.episode].load()
    elif demo_episode is not None:
        demo_episode = map_episode_cameras(demo_episode, mapping)
    if unlabelled_episodes is None and cfg.unlabelled is not None:
        _, items = load_source_episodes(cfg.unlabelled, size, fps=cfg.fps, camera_map=mapping)
        unlabelled_episodes = [item.load() for item in items]
    elif unlabelled_episodes is not None:
        unlabelled_episodes = [map_episode_cameras(ep, mapping) for ep in unlabelled_episodes]
    # Unlabelled videos teach time order only where they are successful demonstrations.
    from reward_models.evaluate import episode_success_label

    unlabelled_episodes = [ep for ep in unlabelled_episodes or [] if episode_success_label(ep) is not False]
    if demo_episode is None and not unlabelled_episodes:
        raise ValueError(f"--unlabelled {cfg.unlabelled}: no video of a successful demonstration to learn from")
    task = cfg.task or (demo_episode.task if demo_episode is not None else unlabelled_episodes[0].task)
    if not task:
        raise ValueError("the videos carry no instruction: pass --task")
    check_videos: list[Video] = []
    negatives: list[Video] = []
    negative_rng = np.random.default_rng(cfg.seed + 2)
    labelled: list[TrainEpisode] = []
    held_out = {}
    if demo_episode is not None:
        if cfg.labels == "linear" or (cfg.labels == "auto" and demo_episode.progress is None):
            demo_episode = replace(demo_episode, progress=np.linspace(0.0, 1.0, demo_episode.length, dtype=np.float32))
        elif demo_episode.progress is None:
            raise ValueError(f"--labels progress: demo episode {cfg.episode} of {cfg.demo} has no progress column")
        demo_episode = replace(demo_episode, task=task, outcome="success")
        trained, checked = split_held_out(demo_episode.length, cfg.holdout_every)
        demo = to_train_episode(demo_episode, cameras, size, source=str(cfg.demo))
        labelled.append(replace(keep_frames(demo, trained), task_key=DEMO_TASK_KEY))
        check_videos.append((rewound(demo_episode, checked), task))
        negatives += demo_negatives(demo_episode, checked, task, negative_rng)
        held_out["demo"] = checked.tolist()
    unlabelled: list[TrainEpisode] = []
    for ep in unlabelled_episodes:
        ep = replace(
            ep,
            task=cfg.task or ep.task or task,
            outcome="success",
            progress=np.linspace(0.0, 1.0, ep.length, dtype=np.float32),
        )  # time order (signs only)
        trained, checked = split_held_out(ep.length, cfg.holdout_every)
        unlabelled.append(keep_frames(to_train_episode(ep, cameras, size, source=str(cfg.unlabelled)), trained))
        check_videos.append((rewound(ep, checked), ep.task))
        negatives += demo_negatives(ep, checked, ep.task, negative_rng)
        held_out.setdefault("unlabelled", []).append(checked.tolist())
    if rehearse_episodes is None:
        rehearse_episodes = [
            item.load()
            for root in cfg.rehearse
            for item in load_source_episodes(root, size, max_episodes=cfg.rehearse_episodes)[1]
        ]
    guard, rehearsed = split_rehearsal(rehearse_episodes)
    labelled += [to_train_episode(ep, cameras, size, source="rehearse") for ep in rehearsed]
    added = model.extend_vocabulary(sorted({task} | {ep.task for ep in unlabelled}))
    frozen = freeze_for_adaptation(model, cfg.freeze)
    train_cfg = GRMTrainConfig(
        out=cfg.out,
        run_dir=cfg.run_dir,
        steps=cfg.steps,
        lr=cfg.lr,
        warmup_steps=min(20, cfg.steps // 5),
        batch_episodes=cfg.batch_episodes,
        frames_per_episode=cfg.frames_per_episode,
        image_size=model.config.image_size,
        counterfactual=0.0,
        seed=cfg.seed,
        device=cfg.device,
        num_threads=cfg.num_threads,
        progress_bar=cfg.progress_bar,
        save_every=0,
        # L2-SP replaces decay towards 0: the prior for the weights is the checkpoint, not zero.
        **({"weight_decay": 0.0} if cfg.anchor_weight > 0 else {}),
    )
    device = resolve_device(cfg.device)
    model.to(device)
    extra = [l2sp_loss(model, cfg.anchor_weight)] if cfg.anchor_weight > 0 else []
    if labelled and unlabelled and cfg.unlabelled_weight > 0:
        extra.append(
            time_order_loss(
                PairSampler(unlabelled, train_cfg, np.random.default_rng(cfg.seed + 1)), cfg.unlabelled_weight
            )
        )
    keeper = BestStepKeeper(
        model,
        check_videos,
        device,
        cfg.check_every or max(1, cfg.steps // 10),
        cfg.steps,
        cfg.min_gain,
        negatives,
        guard,
        cfg.guard_tolerance,
    )

    def extra_loss(m: GRM, dev: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        parts = [hook(m, dev) for hook in extra]
        return sum(p[0] for p in parts), {k: v for p in parts for k, v in p[1].items()}

    model, summary = run_training(
        model,
        labelled or unlabelled,
        train_cfg,
        desc="adapt GRM",
        sign_only=not labelled,
        extra_loss=extra_loss if extra else None,
        on_step=keeper,
    )
    model.load_state_dict(keeper.best_state)
    model.requires_grad_(True)
    training = dict(model.config.training)
    adaptations = list(training.get("adaptations", []))
    adaptations.append(
        {
            "from": str(cfg.checkpoint),
            "demo": None if demo_episode is None else str(cfg.demo),
            "episode": cfg.episode,
            "task": task,
            "camera_map": mapping,
            "new_words": added,
            "steps": cfg.steps,
            "final_metrics": summary,
            "selected_step": keeper.best_step,
            "self_check": keeper.curve,
            "held_out_frames": held_out,
            "method": {
                "anchor_weight": cfg.anchor_weight,
                "freeze": cfg.freeze,
                "frozen_parameters": frozen,
                "rehearse": [str(r) for r in cfg.rehearse] or (["<memory>"] if rehearse_episodes else []),
                "rehearse_episodes_used": len(rehearsed),
                "guard_episodes": len(guard),
                "guard_tolerance": cfg.guard_tolerance,
                "unlabelled": None if not unlabelled else str(cfg.unlabelled or "<memory>"),
                "unlabelled_videos": len(unlabelled),
                "min_gain": cfg.min_gain,
            },
        }
    )
    training["adaptations"] = adaptations
    training["instructions"] = sorted(set(training.get("instructions", [])) | {task})
    model.config.training = training
    path = save_grm(model, cfg.out, overwrite=True)
    if cfg.eval is not None:
        print_before_after(before_after(cfg), cfg)
    return path


EVAL_METRICS = ("voc_plus", "completion_accuracy", "success_auroc")
"""The before/after table's rows (reward_models.metrics names)."""


def before_after(cfg: AdaptConfig) -> dict[str, dict[str, float | None]]:
    """Score ``cfg.eval`` with the zero-shot checkpoint and the adapted one (``prism-reward eval``);
    writes the eval report to ``cfg.resolved_eval_out()`` and the table to its ``before_after.json``."""
    from reward_models.evaluate import EvalConfig, run_eval

    report = cfg.resolved_eval_out()
    result = run_eval(
        EvalConfig(
            model=[str(cfg.checkpoint), str(cfg.out)],
            data=str(cfg.eval),
            out=str(report),
            task=cfg.task,
            device=cfg.device,
            videos=0,
            progress_bar=cfg.progress_bar,
            camera_map=list(cfg.camera_map) or None,
        )
    )
    before, after = (m["metrics"] for m in result["models"].values())
    table = {key: {"zero_shot": before[key]["value"], "adapted": after[key]["value"]} for key in EVAL_METRICS}
    atomic_write_json(
        report / "before_after.json",
        {
            "zero_shot": str(cfg.checkpoint),
            "adapted": str(cfg.out),
            "data": str(cfg.eval),
            "episodes": result["n_episodes"],
            "metrics": table,
        },
    )
    return table


def print_before_after(table: dict[str, dict[str, float | None]], cfg: AdaptConfig) -> None:
    def cell(v: float | None) -> str:
        return f"{'n/a' if v is None else f'{v:.3f}':>10}"

    print(f"held-out episodes of {cfg.eval} (report: {cfg.resolved_eval_out()}):")
    print(f"  {'metric':<22}{'zero-shot':>10}{'adapted':>10}")
    for key, row in table.items():
        print(f"  {key:<22}{cell(row['zero_shot'])}{cell(row['adapted'])}")


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(AdaptConfig, argv, prog="prism-reward adapt")
    path = adapt_grm(cfg)
    print(f"adapted GRM checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
