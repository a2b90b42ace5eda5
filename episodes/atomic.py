"""Atomic file and directory writes: a reader never sees a half-written output.

Every writer here builds its output under a temporary name *in the same directory* (so the final
``os.replace`` is a same-filesystem rename, which POSIX makes atomic) and renames it into place
only once it is complete. A crash or an exception leaves the old file untouched and no partial
file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path, kind: str = "tmp") -> Path:
    return path.with_name(f"{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _check_parent_writable(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create output directory {parent}: {exc}") from exc
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: directory {parent} is not writable")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (tmp file in the same directory + ``os.replace``)."""
    path = Path(path)
    _check_parent_writable(path)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 4) -> Path:
    """Serialise ``obj`` as JSON (UTF-8, not ASCII-escaped) and write it atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_parquet(path: str | os.PathLike, table: Any, **write_kwargs: Any) -> Path:
    """Write a ``pyarrow.Table`` (or a pandas DataFrame) to ``path`` atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    _check_parent_writable(path)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table)
    tmp = _tmp_sibling(path)
    try:
        pq.write_table(table, tmp, **write_kwargs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; rename it to ``target`` only on success.

    Yields the temporary directory (``<target>.tmp-<pid>-<rand>``) to fill. On a clean exit it
    becomes ``target``; on an exception it is removed and ``target`` is left as it was.

    If ``target`` exists: ``overwrite=False`` raises :class:`FileExistsError` (before any work is
    done); ``overwrite=True`` moves the old one aside only after the new one is complete, so there
    is never a moment where a half-written directory sits at ``target``.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass overwrite=True to replace it (it is only replaced "
            "once the new one is complete)"
        )
    _check_parent_writable(target)
    tmp = _tmp_sibling(target)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise PermissionError(f"cannot create a directory next to {target}: {exc}") from exc
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Commit. A directory cannot be os.replace'd over a non-empty one, so the old target is
    # renamed aside first; the window where `target` is missing is two renames long and
    # never exposes partial content.
    old = None
    if target.exists() or target.is_symlink():
        if not overwrite:  # appeared while we were writing
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{target} appeared while it was being written; not replacing it")
        old = _tmp_sibling(target, "old")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
