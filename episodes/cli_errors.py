"""How every ``prism-*`` command reports bad input: one line on stderr, exit code 2.

``run_cli(prog, body)`` runs a command's body and turns the errors that mean *the input is wrong*
(a missing or corrupt file, an out-of-range value, an output that would overwrite something) into
``prog: error: <message>`` and exit 2. Ctrl-C becomes ``prog: interrupted`` and exit 130 (the
body may have checkpointed first). Programming errors keep their traceback. ``--debug`` on the
command line, or ``PRISM_DEBUG=1`` in the environment, shows the full traceback of input errors too.

It lives in ``episodes`` because that is the lowest package every command-line tool imports.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tyro

T = TypeVar("T")

INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, LookupError)
"""Exceptions that mean the user's input is wrong (``FileNotFoundError``/``FileExistsError`` are
``OSError``; ``KeyError``/``IndexError`` are ``LookupError``)."""

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    """True when ``--debug`` is in ``argv`` or ``PRISM_DEBUG`` is set to a non-empty, non-zero value."""
    if os.environ.get("PRISM_DEBUG", "") not in ("", "0"):
        return True
    return argv is not None and "--debug" in argv


def strip_debug(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--debug`` (so the command's own parser never sees it)."""
    return [a for a in argv if a != "--debug"]


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (``KeyError`` quotes its message; this does not)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(str(text).split()) or type(exc).__name__
    return text


def run_cli(prog: str, body: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``body(argv)`` and map input errors to exit 2, Ctrl-C to 130.

    ``body`` returns an exit code, or anything else for success (0).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    if threading.current_thread() is threading.main_thread():
        # A command started from a non-interactive shell in the background inherits SIGINT ignored;
        # Ctrl-C (or a supervisor's SIGINT) must still stop it cleanly, as it does in a terminal.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = body(strip_debug(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except INPUT_ERRORS as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# ----------------------------------------------------------------------------------------------
# Parsing: repeated list options, and numeric fields checked once, up front
# ----------------------------------------------------------------------------------------------


def _list_flags(config_cls: type) -> set[str]:
    """``--flag`` spellings of the top-level list/tuple fields of a dataclass."""
    hints = typing.get_type_hints(config_cls)
    flags: set[str] = set()
    for f in dataclasses.fields(config_cls):
        hint = hints.get(f.name)
        candidates = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(typing.get_origin(c) in (list, tuple, collections.abc.Sequence) for c in candidates):
            flags |= {"--" + f.name.replace("_", "-"), "--" + f.name}
    return flags


def merge_repeated_list_flags(config_cls: type, argv: Sequence[str]) -> list[str]:
    """``--model A --model B`` -> ``--model A B`` for the list options of ``config_cls``.

    tyro (like argparse) keeps only the last occurrence of a repeated option, which silently drops
    the others; users write both forms (``--data a b`` and ``--data a --data b``), so both are
    accepted. Every other argument keeps its place."""
    flags = _list_flags(config_cls)
    out: list[str] = []
    first_value_end: dict[str, int] = {}  # flag -> index in `out` after its values so far
    i = 0
    args = list(argv)
    while i < len(args):
        token = args[i]
        name, eq, inline = token.partition("=")
        if name not in flags or not token.startswith("--"):
            out.append(token)
            i += 1
            continue
        key = name.replace("_", "-")
        values = [inline] if eq else []
        i += 1
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        if key in first_value_end:
            at = first_value_end[key]
            out[at:at] = values
            for k, end in first_value_end.items():
                if end >= at and k != key:
                    first_value_end[k] = end + len(values)
            first_value_end[key] = at + len(values)
        else:
            out.append(name)
            out.extend(values)
            first_value_end[key] = len(out)
    return out


def parse_config(config_cls: type[T], argv: Sequence[str] | None = None, **tyro_kwargs: Any) -> T:
    """``tyro.cli(config_cls)`` over ``argv`` with repeated list options merged (see above)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return tyro.cli(config_cls, args=merge_repeated_list_flags(config_cls, args), **tyro_kwargs)


def check_numeric_fields(config: Any, ranges: dict[str, str] | None = None) -> None:
    """Raise ``ValueError`` naming the flag for any numeric field of the dataclass ``config`` that is
    not finite (NaN, inf) or lies outside its interval in ``ranges`` (``"(0, 1]"``, ``"[0, inf)"``).
    Numbers inside tuple/list fields are checked for finiteness too. Run it once, before any work,
    so a bad value never trains silently or fails late."""
    ranges = ranges or {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if not math.isfinite(item):
                raise ValueError(f"{flag}: must be a finite number, got {item}")
        if f.name in ranges and value is not None:
            lo_br, lo, hi, hi_br = _parse_interval(ranges[f.name])
            ok = (value > lo or (lo_br == "[" and value == lo)) and (value < hi or (hi_br == "]" and value == hi))
            if not ok:
                raise ValueError(f"{flag}: must be in {ranges[f.name]}, got {value}")


def _parse_interval(text: str) -> tuple[str, float, float, str]:
    lo_br, body, hi_br = text[0], text[1:-1], text[-1]
    lo, hi = (float(x) for x in body.split(","))
    if lo_br not in "[(" or hi_br not in ")]":
        raise ValueError(f"bad interval {text!r}")
    return lo_br, lo, hi, hi_br
