"""One string names any progress model: ``load_progress_model(spec)``.

Spec forms (weights always come from local paths; nothing is downloaded):

=============================  =================================================================
``grm``                        the pretrained GRM shipped inside this package (its model card:
                               ``reward_models/pretrained/grm/MODEL_CARD.md``)
``PATH`` or ``grm:PATH``       our GRM checkpoint directory (``GRMProgressModel.from_pretrained``);
                               a local folder literally named ``grm`` is ``./grm`` or ``grm:grm``
``clip:ARCH:WEIGHTS``          VLM-RM-style CLIP reward; ARCH an open_clip name or a model-config
                               ``.json``; WEIGHTS a local open_clip checkpoint file
``vlm:DIR``                    GVL-style per-frame completion percent (transformers VLM dir)
``vlm-rubric:DIR``             RoboReward-style 1–5 rubric on the clip (transformers VLM dir)
``vlm-grm:DIR``                generative hop scorer in Robo-Dopamine's released prompt format
``oracle``                     ground-truth progress (needs episodes with a ``progress`` column)
``serve:NAME[@ADDRESS]``       a running reward service (``prism-reward serve``, Ray Serve; the
                               client keeps the tracker state, :mod:`reward_models.serve`)
=============================  =================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reward_models.base import ProgressModel

PRETRAINED_GRM_DIR = Path(__file__).resolve().parent / "pretrained" / "grm"
"""The GRM shipped with the package (spec ``grm``)."""

SPEC_FORMS = (
    "grm (the pretrained GRM shipped with prism-rl)",
    "PATH | grm:PATH (GRM checkpoint dir)",
    "clip:ARCH:WEIGHTS (open_clip arch name or config .json, local weights file)",
    "vlm:DIR (GVL per-frame percent, local transformers VLM)",
    "vlm-rubric:DIR (RoboReward-style 1-5 rubric, local transformers VLM)",
    "vlm-grm:DIR (Robo-Dopamine-format generative GRM, local transformers VLM)",
    "oracle (ground-truth progress)",
    "serve:NAME[@RAY_ADDRESS] (a running `prism-reward serve` reward service)",
)


class UnknownModelSpecError(ValueError):
    """The spec matches none of :data:`SPEC_FORMS`."""

    def __init__(self, spec: str, why: str = "") -> None:
        forms = "\n  ".join(SPEC_FORMS)
        super().__init__(f"cannot load progress model {spec!r}{': ' + why if why else ''}. Valid forms:\n  {forms}")


def _split_clip(rest: str) -> tuple[str, str | None]:
    """``ARCH[:WEIGHTS]`` where ARCH may itself be a path ending in ``.json``."""
    if ".json:" in rest:
        arch, weights = rest.split(".json:", 1)
        return arch + ".json", weights or None
    if rest.endswith(".json"):
        return rest, None
    arch, _, weights = rest.partition(":")
    return arch, weights or None


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``(kind, argument)`` of a spec; kind in grm/clip/vlm/vlm-rubric/vlm-grm/oracle/serve."""
    spec = spec.strip()
    if not spec:
        raise UnknownModelSpecError(spec, "empty spec")
    if spec == "oracle":
        return "oracle", None
    if spec == "grm":
        return "grm", str(pretrained_grm_path())
    for kind in ("vlm-rubric", "vlm-grm", "vlm", "clip", "grm", "serve"):
        if spec.startswith(kind + ":"):
            arg = spec[len(kind) + 1 :]
            if not arg:
                raise UnknownModelSpecError(spec, f"'{kind}:' needs an argument")
            return kind, arg
    if Path(spec).exists():
        return "grm", spec
    raise UnknownModelSpecError(spec, "not a known prefix and no such path")


def pretrained_grm_path() -> Path:
    """Directory of the shipped GRM; a clear error when this install lacks it."""
    if not (PRETRAINED_GRM_DIR / "config.json").is_file():
        raise FileNotFoundError(f"the pretrained GRM is missing from this install ({PRETRAINED_GRM_DIR}); "
                                "reinstall prism-rl or name a GRM checkpoint directory instead of 'grm'")
    return PRETRAINED_GRM_DIR


def resolve_grm_checkpoint(name: str | Path) -> Path:
    """A GRM checkpoint directory from ``grm`` (the shipped one), ``grm:DIR`` or ``DIR``."""
    text = str(name)
    if text == "grm":
        return pretrained_grm_path()
    return Path(text[4:] if text.startswith("grm:") else text)


def load_progress_model(spec: str, device: str = "auto", **options: Any) -> ProgressModel:
    """Build the :class:`ProgressModel` named by ``spec`` (see module docstring) on ``device``.

    ``options`` go to the model's config dataclass (e.g. ``max_frames=8`` for ``vlm:``,
    ``alpha=0.5`` for ``clip:``). The returned model's ``model_id`` is the spec itself, so
    reports and sidecar files say exactly what was evaluated.
    """
    kind, arg = parse_spec(spec)
    model: ProgressModel
    if kind == "oracle":
        from reward_models.oracle import OracleProgressModel

        model = OracleProgressModel(**options)
    elif kind == "grm":
        from reward_models.modeling_grm import GRMProgressModel

        path = Path(arg)
        if not path.exists():
            raise FileNotFoundError(f"GRM checkpoint {path} does not exist (spec {spec!r})")
        model = GRMProgressModel.from_pretrained(path, device=device)
    elif kind == "clip":
        from reward_models.baselines.clip_reward import CLIPRewardConfig, CLIPRewardModel

        arch, weights = _split_clip(arg)
        model = CLIPRewardModel(CLIPRewardConfig(arch=arch, weights=weights, **options), device=device)
    elif kind == "vlm":
        from reward_models.baselines.vlm import GVLConfig, GVLProgressModel

        model = GVLProgressModel(arg, device=device, config=GVLConfig(**options))
    elif kind == "vlm-rubric":
        from reward_models.baselines.vlm import RubricConfig, RubricProgressModel

        model = RubricProgressModel(arg, device=device, config=RubricConfig(**options))
    elif kind == "serve":
        from reward_models.serve import load_served_progress_model

        model = load_served_progress_model(spec, **options)
    elif kind == "vlm-grm":
        from reward_models.baselines.vlm_grm import VLMGRMConfig, VLMGRMProgressModel

        model = VLMGRMProgressModel(arg, device=device, config=VLMGRMConfig(**options))
    else:  # pragma: no cover - parse_spec only returns the kinds above
        raise UnknownModelSpecError(spec)
    model.model_id = spec
    return model


__all__ = ["PRETRAINED_GRM_DIR", "SPEC_FORMS", "UnknownModelSpecError", "load_progress_model", "parse_spec",
           "pretrained_grm_path", "resolve_grm_checkpoint"]
