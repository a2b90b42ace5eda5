"""Reading a model's ``config.json`` and checking a checkpoint folder, with errors that name the file.

Shared by every model that saves itself as a directory of ``config.json`` + weights (the GRM, the VLA
policy): a config is a dataclass; unknown fields, wrong types and unreadable files are one clear
``ValueError`` each, so a damaged checkpoint is reported, not a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


def read_json_object(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``FileNotFoundError`` when missing, ``ValueError`` naming ``what``
    (e.g. ``"GRM config.json"``) when unreadable or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def dataclass_from_dict(cls: type[C], data: Mapping[str, Any], source: str = "config") -> C:
    """``cls(**data)`` with unknown fields and bad values reported as one ``ValueError``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"{source}: invalid {cls.__name__}: {exc}") from exc


def require_checkpoint_files(
    path: str | Path, label: str, names: Sequence[str], hints: Mapping[str, str] | None = None
) -> Path:
    """``path`` as a checkpoint directory holding every file in ``names``; ``label`` (``"GRM"``)
    names the kind in the errors, ``hints`` adds a sentence to a missing file's error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {label} checkpoint at {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is not a {label} checkpoint directory (expected {' + '.join(names)})")
    for name in names:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{label} checkpoint {path} is missing {name}{(hints or {}).get(name, '')}")
    return path
