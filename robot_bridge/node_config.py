"""Node configuration dataclasses <-> ROS parameters and ``--help`` text (no ROS import here).

Every node is configured by one dataclass whose fields carry a docstring each (CleanRL style). The
same dataclass is

* declared field by field as ROS parameters (``--ros-args --params-file FILE -p name:=value``) --
  see :func:`robot_bridge.ros_utils.declare_config`;
* printed by ``prism-<node> --help`` (:func:`help_text`), so every option is explained.

Values arriving as ROS parameters are coerced to the field's type here (``-p rate:=20`` is accepted
for a float field) with an error that names the parameter when they do not fit.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Any, get_args, get_origin


def field_docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field) of a dataclass."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(annotation: Any) -> str:
    """``bool``/``int``/``float``/``str`` or ``float[]``/``str[]`` for tuples and lists."""
    origin = get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        inner = args[0] if args else str
        return f"{_kind(inner)}[]"
    if origin is typing.Literal:
        return type(get_args(annotation)[0]).__name__
    if origin is typing.Union or str(origin) == "types.UnionType":
        non_none = [a for a in get_args(annotation) if a is not type(None)]
        return _kind(non_none[0])
    if annotation in (bool, int, float, str):
        return annotation.__name__
    raise TypeError(f"unsupported parameter type {annotation!r}")


def parameter_specs(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, kind, default, doc) for every field of the config dataclass ``cls``."""
    hints = _resolved_types(cls)
    docs = field_docstrings(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        specs.append((f.name, _kind(hints[f.name]), default, docs.get(f.name, "")))
    return specs


def coerce(name: str, kind: str, value: Any, annotation: Any = None) -> Any:
    """Convert a ROS parameter value to the field kind; ValueError naming ``name`` if impossible."""
    try:
        if kind.endswith("[]"):
            if value is None:
                return ()
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            inner = kind[:-2]
            return tuple(coerce(name, inner, v) for v in value)
        if kind == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("true", "1", "yes", "on"):
                    return True
                if lowered in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind == "str":
            return "" if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameter {name!r}: cannot use {value!r} as {kind}") from exc
    raise ValueError(f"parameter {name!r}: unsupported kind {kind}")


def build_config(cls: type, values: dict[str, Any]):
    """Instantiate the config dataclass from raw parameter values (missing names keep defaults);
    ``Literal`` fields are checked against their allowed values."""
    hints = _resolved_types(cls)
    kwargs = {}
    for name, kind, _default, _doc in parameter_specs(cls):
        if name not in values:
            continue
        value = coerce(name, kind, values[name])
        if get_origin(hints[name]) is typing.Literal and value not in get_args(hints[name]):
            raise ValueError(f"parameter {name!r} must be one of {get_args(hints[name])}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def require_positive(config, *names: str) -> None:
    """ValueError naming the first parameter in ``names`` that is not > 0 (a rate of 0 would divide
    by zero when the node starts its timer; NaN fails too)."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"parameter {name!r} must be > 0, got {value!r}")


def help_text(cls: type, program: str, node_name: str, summary: str) -> str:
    """``--help`` output: usage, the node's purpose and every parameter with type, default, doc."""
    hints = _resolved_types(cls)
    lines = [
        f"usage: {program} [--help] [--ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r __ns:=/NS]]",
        "",
        *[textwrap.fill(" ".join(par.split()), 100) + "\n" for par in summary.strip().split("\n\n")],
        f"ROS parameters (node name `{node_name}`; set them in a params file under `{node_name}:` or `/**:`",
        "-> `ros__parameters:`, or one by one with `-p name:=value`; lists as `-p name:=[a,b]`):",
    ]
    for name, kind, default, doc in parameter_specs(cls):
        choices = ""
        if get_origin(hints[name]) is typing.Literal:
            choices = " {" + "|".join(str(a) for a in get_args(hints[name])) + "}"
        shown = list(default) if isinstance(default, tuple) else default
        lines.append(f"  {name} ({kind}{choices}, default: {shown!r})")
        lines += textwrap.wrap(doc, 96, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines) + "\n"
