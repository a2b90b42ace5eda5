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
import re
import secrets
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

OUTPUT_MARKERS: dict[str, str] = {
    "dataset": "meta/info.json",
    "report": "metrics.json",
    "checkpoint": "config.json",
    "run": "config.yaml",
    "demo": "demo_config.json",
}
"""What each kind of output this project writes always contains: ``--overwrite`` replaces a folder
only when it holds its kind's marker (or is empty), so it never deletes a folder we did not write."""

_TMP_NAME = re.compile(r"^(?P<base>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _tmp_sibling(path: Path, kind: str = "tmp") -> Path:
    return path.with_name(f"{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove ``<path>.tmp-PID-*`` / ``<path>.old-PID-*`` siblings left by processes that no longer
    run (a SIGKILLed writer cannot clean up after itself). Says so on stderr; returns what it removed.
    A temporary of a live process (another writer right now) is left alone."""
    path = Path(path)
    removed: list[Path] = []
    parent = path.parent
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        m = _TMP_NAME.match(entry.name)
        if m is None or m["base"] != path.name or _pid_alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        print(f"removed {entry}, a temporary left by process {m['pid']} that is no longer running", file=sys.stderr)
    return removed


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output_not_input(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], out_flag: str = "--out"
) -> None:
    """Refuse an output folder that is an input, lies inside one, or contains one (writing it would
    replace or delete the input). An input may be a model spec such as ``grm:DIR`` or
    ``clip:ARCH:FILE``: every part after a colon is tried as a path. Parts that are not existing local
    paths (``oracle``, an architecture name) are skipped."""
    out_path = Path(out).expanduser().resolve()
    for item in inputs:
        if item is None or str(item) == "":
            continue
        text = str(item)
        candidates = [text] + [text.split(":", i)[-1] for i in range(1, text.count(":") + 1)]
        for candidate in candidates:
            in_path = Path(candidate).expanduser()
            if not in_path.exists():
                continue
            in_path = in_path.resolve()
            if _is_within(out_path, in_path) or _is_within(in_path, out_path):
                raise ValueError(
                    f"{out_flag} {out} would write over the input {item}; choose an output folder outside every input"
                )


def check_replaceable(target: str | os.PathLike, kind: str) -> None:
    """Raise unless an existing ``target`` is a folder this project wrote as ``kind`` (it holds the
    kind's marker, see :data:`OUTPUT_MARKERS`) or an empty folder. Missing ``target`` is fine."""
    target = Path(target)
    if not (target.exists() or target.is_symlink()):
        return
    marker = OUTPUT_MARKERS[kind]
    if target.is_dir() and not target.is_symlink():
        if (target / marker).is_file() or not any(target.iterdir()):
            return
        raise FileExistsError(
            f"{target} exists and is not a {kind} written by prism-rl (no {marker}), so "
            "it is never replaced or written into: choose another output folder"
        )
    raise FileExistsError(f"{target} exists and is not a folder; choose another output path")


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
def atomic_dir(
    target: str | os.PathLike, overwrite: bool = False, kind: str | None = None, flag: str = "--overwrite"
) -> Iterator[Path]:
    """Build a directory under a temporary sibling name; rename it to ``target`` only on success.

    Yields the temporary directory (``<target>.tmp-<pid>-<rand>``) to fill. On a clean exit it
    becomes ``target``; on an exception it is removed and ``target`` is left as it was.

    If ``target`` exists: ``overwrite=False`` raises :class:`FileExistsError` (before any work is
    done; the message names ``flag``); ``overwrite=True`` moves the old one aside only after the new
    one is complete, so there is never a moment where a half-written directory sits at ``target``.
    With ``kind`` (a key of :data:`OUTPUT_MARKERS`) only a folder of that kind, or an empty one, is
    ever replaced. Temporaries that dead processes left next to ``target`` are removed first.
    """
    target = Path(target)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"{target} already exists; pass {flag} to replace it (it is only replaced once the new one is complete)"
        )
    if kind is not None:
        check_replaceable(target, kind)
    _check_parent_writable(target)
    remove_stale_temporaries(target)
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
