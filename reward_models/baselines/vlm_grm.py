"""A generative hop scorer in Robo-Dopamine's released GRM prompt format (``vlm-grm:<dir>``).

Facts about the released format (FlagOpen/Robo-Dopamine, ``examples/inference.py`` and
``eval/``), which this module follows so that the released Qwen2.5-VL-based GRM weights run
through our tracker, evaluation and shaping unchanged:

* one user turn with **8 images** interleaved with text, in this order: REFERENCE START (front
  view, "task just starting"), REFERENCE END (front view, "task fully completed"), then the
  BEFORE state as Front / Left Wrist / Right Wrist images, then the AFTER state as Front / Left
  Wrist / Right Wrist images;
* the task instruction appears inside ``<Task>`` ... ``</Task>`` together with the two reference
  images, and again in the evaluation criteria;
* the instructions ask for the improvement relative to what *remained* (progress) or the
  deterioration relative to what *had been achieved* (regress) -- exactly our hop definition --
  as an integer percentage in [-100 %, +100 %];
* the answer is one line ``<score>+NN%</score>`` / ``<score>-NN%</score>`` / ``<score>0%</score>``;
  the released evaluators read the number inside ``<score>``, else the last ``NN%`` in the
  text, and fall back to 0 (unchanged) -- we do the same and count the fallbacks;
* images are bounded to 12,544 .. 76,800 pixels by the Qwen image processor;
* the three estimates (incremental, forward from the start, backward from the goal, where
  the goal image fills all three BEFORE views) come from the same prompt with different BEFORE
  states -- which our :class:`~reward_models.tracker.ProgressTracker` already does by calling
  :meth:`hop_from_embeddings` with (prev, start, goal) as ``before``.

Deviations: we decode greedily (the release samples at temperature 0.1), and when a state has
fewer than three views the missing wrist slots repeat the last available view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reward_models.base import Observation, ProgressModel
from reward_models.baselines.common import image_views
from reward_models.baselines.parsing import ParseStats, parse_signed_percent
from reward_models.baselines.vlm import Content, VLMBackend

SLOTS = ("front", "left_wrist", "right_wrist")
"""The three view slots of the released prompt, in order."""


@dataclass
class VLMGRMConfig:
    """Robo-Dopamine-format generative hop scorer."""

    cameras: tuple[str, ...] | None = None
    """Our camera names for the (front, left wrist, right wrist) slots, in that order; default:
    the observation's cameras in order (a camera named like ``front``/``high`` goes first)."""
    min_pixels: int = 12544
    """Lower pixel bound per image (released setting)."""
    max_pixels: int = 76800
    """Upper pixel bound per image (released setting)."""
    max_new_tokens: int = 16
    """Answer budget (the answer is one short line)."""
    batch_size: int = 8
    """Prompts per generate call."""


def build_prompt(task: str) -> Content:
    """The released GRM user turn with 8 image slots (see module docstring for the layout)."""
    t = f"`{task}`"
    return [
        {
            "type": "text",
            "text": (
                "\nYou are a rigorous, impartial vision evaluator for robot task progress. Your job is to judge "
                "whether the AFTER image set moves closer to the task objective than the BEFORE image set, using "
                "the provided reference examples only as anchors.\n\n<Task>\n" + t + "\n\n"
                "REFERENCE EXAMPLES (for visual anchoring only; not necessarily this run's actual START/END):\n"
                "- REFERENCE START — Robot Front Image (task just starting): "
            ),
        },
        {"type": "image"},
        {"type": "text", "text": "\n- REFERENCE END — Robot Front Image (task fully completed): "},
        {"type": "image"},
        {"type": "text", "text": "\n</Task>\n\nBEFORE Robot Front Image: "},
        {"type": "image"},
        {"type": "text", "text": "\nBEFORE Robot Left Wrist Image: "},
        {"type": "image"},
        {"type": "text", "text": "\nBEFORE Robot Right Wrist Image: "},
        {"type": "image"},
        {"type": "text", "text": "\n\nAFTER Robot Front Image: "},
        {"type": "image"},
        {"type": "text", "text": "\nAFTER Robot Left Wrist Image: "},
        {"type": "image"},
        {"type": "text", "text": "\nAFTER Robot Right Wrist Image: "},
        {"type": "image"},
        {
            "type": "text",
            "text": (
                "\n\nGoal\nCompare the BEFORE and AFTER three-view sets and judge whether AFTER moves closer to "
                "accomplishing the task than BEFORE, using the REFERENCE START/END images as conceptual anchors.\n\n"
                "Progress Estimation (no formulas)\n"
                "1) Calibrate using the references:\n"
                "   - REFERENCE START = “just beginning”; REFERENCE END = “fully completed.”\n"
                "   - Visually estimate how far BEFORE and AFTER are along this START→END continuum.\n"
                "2) Direction:\n"
                "   - AFTER better than BEFORE → positive score.\n"
                "   - AFTER worse than BEFORE → negative score.\n"
                "   - Essentially the same → 0.\n"
                "3) Normalize to an integer percentage in [-100%, +100%]:\n"
                "   - For improvements, scale the improvement relative to what remained from BEFORE to END.\n"
                "   - For regressions, scale the deterioration relative to how far BEFORE had progressed from START.\n"
                "   - Clip to [-100%, +100%] and round to the nearest integer percent.\n\n"
                "Evaluation Criteria (apply across all three views)\n"
                "1) Task Alignment: Evidence directly tied to " + t + ".\n"
                "2) Completeness & Accuracy: Correct pose, contact, placement, orientation, grasp quality, absence "
                "of collisions, stability, etc.\n"
                "3) View-Specific Evidence & Consistency:\n"
                "   - Use the **Front** view for global layout, object pose, approach path, end-state geometry, and "
                "scene-level constraints.\n"
                "   - Use the **Left/Right Wrist** views to inspect **fine-grained gripper state** (finger closure, "
                "contact location/area, slippage, wedge/misalignment, object deformation, cable/wire/cloth "
                "entanglement, unintended contact, occluded collisions).\n"
                "   - When views disagree, prioritize the view that provides **decisive cues** for the criterion at "
                "hand. In particular, wrist views often **override** for grasp/contact validity and safety.\n"
                "   - If any single view shows a failure that invalidates success (e.g., mis-grasp, collision, "
                "unsafe/unstable pose), let that override when judging progress.\n"
                "4) Ignore Irrelevant Factors: Lighting, color shifts, background clutter, or UI/watermarks that "
                "don't affect task success.\n"
                "5) Ambiguity: If evidence is genuinely inconclusive or conflicting without decisive cues, treat "
                "progress as unchanged → 0%.\n\n"
                "Output Format (STRICT)\n"
                "Return ONLY one line containing the score wrapped in <score> tags, as an integer percentage with a "
                "percent sign:\n<score>+NN%</score>  or  <score>-NN%</score>  or  <score>0%</score>\n"
            ),
        },
    ]


def _slot_order(names: Sequence[str]) -> list[str]:
    front_like = [n for n in names if any(k in n.lower() for k in ("front", "high", "top", "scene", "main"))]
    rest = [n for n in names if n not in front_like]
    return (front_like[:1] + [n for n in names if n not in front_like[:1]]) if front_like else list(rest)


class VLMGRMProgressModel(ProgressModel):
    """Hops from a generative GRM answering in the released Robo-Dopamine format."""

    def __init__(self, path: str | Path, device: str = "auto", config: VLMGRMConfig | None = None) -> None:
        self.cfg = config or VLMGRMConfig()
        self.backend = VLMBackend(
            path,
            device=device,
            max_new_tokens=self.cfg.max_new_tokens,
            max_pixels=self.cfg.max_pixels,
            min_pixels=self.cfg.min_pixels,
        )
        self.model_id = f"vlm-grm:{self.backend.path.name}"
        self.cameras = tuple(self.cfg.cameras) if self.cfg.cameras else None
        self.stats = ParseStats()
        self.n_prompts = 0

    def encode(self, obs: Observation) -> dict[str, np.ndarray]:
        """The embedding is the images themselves, one array per slot (B, H, W, 3)."""
        views = image_views(obs, self.cameras)
        names = list(self.cameras) if self.cameras else _slot_order(list(views))
        picked = [views[n] for n in names[:3]]
        while len(picked) < 3:
            picked.append(picked[-1])  # fewer views than slots: repeat the last one
        return dict(zip(SLOTS, picked))

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None) -> np.ndarray:
        tasks = list(tasks)
        n = len(before["front"])
        if len(after["front"]) != n or len(tasks) != n:
            raise ValueError(f"batch sizes differ: before {n}, after {len(after['front'])}, tasks {len(tasks)}")
        # Without context, the references fall back to neutral stand-ins: the BEFORE front view
        # as "start" and a mid-grey frame as "end" (the release always has both; we count it).
        hops = np.zeros(n)
        bs = max(1, self.cfg.batch_size)
        for s in range(0, n, bs):
            rows = range(s, min(n, s + bs))
            images = []
            for i in rows:
                ref_start = start["front"][i] if start is not None else before["front"][i]
                ref_end = goal["front"][i] if goal is not None else np.full_like(before["front"][i], 128)
                images.append([ref_start, ref_end] + [before[k][i] for k in SLOTS] + [after[k][i] for k in SLOTS])
            answers = self.backend.generate([build_prompt(tasks[i]) for i in rows], images)
            self.n_prompts += len(answers)
            for i, a in zip(rows, answers):
                h = parse_signed_percent(a)
                self.stats.record(h is not None, a)
                hops[i] = 0.0 if h is None else h
        return hops

    def config(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            **super().config(),
            "kind": "vlm-grm",
            "path": str(self.backend.path),
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()},
            "prompts": self.n_prompts,
            **self.stats.as_dict(),
        }
