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

Each kind is an entry of :data:`MODEL_KINDS`. A new model needs no edit here::

    register_model("toy", lambda arg, *, spec, device, **options: ToyModel(arg), "toy:ARG (my model)")

after which ``toy:ARG`` works wherever a spec is accepted (``prism-reward eval --model``,
``prism-train --reward``, ...). A heavy optional dependency (torch, open_clip, transformers, Ray)
is imported only when a spec of its kind is loaded: the baseline modules import it where they
load a model, and the GRM's and the service's modules, which import torch and Ray at their top,
are imported inside their loaders here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from reward_models.base import ProgressModel
from reward_models.baselines.clip_reward import CLIPRewardConfig, CLIPRewardModel
from reward_models.baselines.vlm import GVLConfig, GVLProgressModel, RubricConfig, RubricProgressModel
from reward_models.baselines.vlm_grm import VLMGRMConfig, VLMGRMProgressModel
from reward_models.oracle import OracleProgressModel

PRETRAINED_GRM_DIR = Path(__file__).resolve().parent / "pretrained" / "grm"
"""The GRM shipped with the package (spec ``grm``)."""

PATH_KIND = "grm"
"""The kind of a spec that is neither a known form nor a prefix but an existing path."""


class ModelLoader(Protocol):
    def __call__(self, arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
        """The model for ``arg`` (the text after ``KIND:``; ``None`` for a bare-word kind); ``spec`` is
        the whole spec as given, ``options`` go to the model's config."""


@dataclass(frozen=True)
class ModelKind:
    """One registered kind of progress model."""

    kind: str
    loader: ModelLoader
    spec_forms: tuple[str, ...]
    """How the kind is written, with a short explanation each (listed in errors)."""
    prefix: bool
    """``KIND:ARG`` form (True) or the bare word ``KIND`` with no argument (False)."""
    bare_argument: Callable[[], str] | None = None
    """For a prefix kind that also accepts the bare word ``KIND``: the argument it stands for."""


MODEL_KINDS: dict[str, ModelKind] = {}
"""Registered kinds by name, in registration order (the order errors list their forms in)."""


def register_model(
    kind: str,
    loader: ModelLoader,
    spec_form: str | tuple[str, ...],
    prefix: bool = True,
    *,
    bare_argument: Callable[[], str] | None = None,
    replace: bool = False,
) -> ModelKind:
    """Make specs of ``kind`` loadable: ``KIND:ARG`` if ``prefix`` else the bare word ``KIND``.

    ``spec_form`` describes the form(s) for error messages, e.g. ``"toy:ARG (my toy model)"``.
    Registering a taken kind is an error unless ``replace``, so two models never silently shadow
    each other."""
    if not kind or ":" in kind or kind != kind.strip():
        raise ValueError(f"model kind {kind!r} must be a non-empty word without ':' or surrounding spaces")
    if kind in MODEL_KINDS and not replace:
        raise ValueError(f"model kind {kind!r} is already registered; pass replace=True to replace it")
    if bare_argument is not None and not prefix:
        raise ValueError(f"model kind {kind!r}: bare_argument only applies to prefix kinds")
    forms = (spec_form,) if isinstance(spec_form, str) else tuple(spec_form)
    entry = ModelKind(kind, loader, forms, prefix, bare_argument)
    MODEL_KINDS[kind] = entry
    return entry


def unregister_model(kind: str) -> None:
    """Forget ``kind`` (specs of it become unknown again)."""
    if kind not in MODEL_KINDS:
        raise KeyError(f"model kind {kind!r} is not registered (registered: {', '.join(MODEL_KINDS)})")
    del MODEL_KINDS[kind]


def spec_forms() -> tuple[str, ...]:
    """Every valid spec form of the registered kinds, in registration order."""
    return tuple(form for entry in MODEL_KINDS.values() for form in entry.spec_forms)


SPEC_FORMS: tuple[str, ...]
"""Every valid spec form, as :func:`spec_forms` (computed on access, so it lists later registrations)."""


def __getattr__(name: str) -> Any:
    if name == "SPEC_FORMS":
        return spec_forms()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UnknownModelSpecError(ValueError):
    """The spec matches none of the registered forms (:func:`spec_forms`)."""

    def __init__(self, spec: str, why: str = "") -> None:
        forms = "\n  ".join(spec_forms())
        super().__init__(f"cannot load progress model {spec!r}{': ' + why if why else ''}. Valid forms:\n  {forms}")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``(kind, argument)`` of a spec; kind is a key of :data:`MODEL_KINDS`."""
    spec = spec.strip()
    if not spec:
        raise UnknownModelSpecError(spec, "empty spec")
    entry = MODEL_KINDS.get(spec)
    if entry is not None and not entry.prefix:
        return entry.kind, None
    if entry is not None and entry.bare_argument is not None:
        return entry.kind, entry.bare_argument()
    kind, colon, arg = spec.partition(":")
    entry = MODEL_KINDS.get(kind)
    if colon and entry is not None and entry.prefix:
        if not arg:
            raise UnknownModelSpecError(spec, f"'{kind}:' needs an argument")
        return kind, arg
    if PATH_KIND in MODEL_KINDS and Path(spec).exists():
        return PATH_KIND, spec
    raise UnknownModelSpecError(spec, "not a known prefix and no such path")


def pretrained_grm_path() -> Path:
    """Directory of the shipped GRM; a clear error when this install lacks it."""
    if not (PRETRAINED_GRM_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"the pretrained GRM is missing from this install ({PRETRAINED_GRM_DIR}); "
            "reinstall prism-rl or name a GRM checkpoint directory instead of 'grm'"
        )
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
    model = MODEL_KINDS[kind].loader(arg, spec=spec, device=device, **options)
    model.model_id = spec
    return model


# --------------------------------------------------------------------------------------------
# Built-in kinds.
# --------------------------------------------------------------------------------------------


def _load_grm(arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
    from reward_models.modeling_grm import GRMProgressModel  # torch

    path = Path(str(arg))
    if not path.exists():
        raise FileNotFoundError(f"GRM checkpoint {path} does not exist (spec {spec!r})")
    return GRMProgressModel.from_pretrained(path, device=device)


def _split_clip(rest: str) -> tuple[str, str | None]:
    """``ARCH[:WEIGHTS]`` where ARCH may itself be a path ending in ``.json``."""
    if ".json:" in rest:
        arch, weights = rest.split(".json:", 1)
        return arch + ".json", weights or None
    if rest.endswith(".json"):
        return rest, None
    arch, _, weights = rest.partition(":")
    return arch, weights or None


def _load_clip(arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
    arch, weights = _split_clip(str(arg))
    return CLIPRewardModel(CLIPRewardConfig(arch=arch, weights=weights, **options), device=device)


def _load_gvl(arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
    return GVLProgressModel(arg, device=device, config=GVLConfig(**options))


def _load_rubric(arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
    return RubricProgressModel(arg, device=device, config=RubricConfig(**options))


def _load_vlm_grm(arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
    return VLMGRMProgressModel(arg, device=device, config=VLMGRMConfig(**options))


def _load_oracle(arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
    return OracleProgressModel(**options)


def _load_served(arg: str | None, *, spec: str, device: str, **options: Any) -> ProgressModel:
    from reward_models.serve import load_served_progress_model  # Ray

    # The client talks to the service; the model's device is the service's business.
    return load_served_progress_model(spec, **options)


register_model(
    "grm",
    _load_grm,
    ("grm (the pretrained GRM shipped with prism-rl)", "PATH | grm:PATH (GRM checkpoint dir)"),
    bare_argument=lambda: str(pretrained_grm_path()),
)
register_model("clip", _load_clip, "clip:ARCH:WEIGHTS (open_clip arch name or config .json, local weights file)")
register_model("vlm", _load_gvl, "vlm:DIR (GVL per-frame percent, local transformers VLM)")
register_model("vlm-rubric", _load_rubric, "vlm-rubric:DIR (RoboReward-style 1-5 rubric, local transformers VLM)")
register_model("vlm-grm", _load_vlm_grm, "vlm-grm:DIR (Robo-Dopamine-format generative GRM, local transformers VLM)")
register_model("oracle", _load_oracle, "oracle (ground-truth progress)", prefix=False)
register_model("serve", _load_served, "serve:NAME[@RAY_ADDRESS] (a running `prism-reward serve` reward service)")


__all__ = [
    "MODEL_KINDS",
    "PATH_KIND",
    "PRETRAINED_GRM_DIR",
    "SPEC_FORMS",
    "ModelKind",
    "ModelLoader",
    "UnknownModelSpecError",
    "load_progress_model",
    "parse_spec",
    "pretrained_grm_path",
    "register_model",
    "resolve_grm_checkpoint",
    "spec_forms",
    "unregister_model",
]
