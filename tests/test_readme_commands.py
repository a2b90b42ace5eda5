"""The README's commands work as written: every ``prism-*`` command and subcommand it names exists and
answers ``--help``, every flag it uses is one the command still has, and the short commands run.

Commands come from the README's fenced ``bash`` blocks (continuation lines joined) and from inline
code spans that start with ``prism-``. Long commands (training, the demo, ROS launches) are only
flag-checked. Everything runs in-process through the console scripts' ``main`` functions."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHELL_SEPARATORS = {"&&", "||", "&", ";", "|"}
SUBCOMMAND_PROGRAMS = ("prism-reward", "prism-vla")
"""Programs whose first argument is a subcommand with its own ``--help``."""


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name.startswith("prism-")}


def _split_commands(line: str) -> list[list[str]]:
    """The commands of one shell line (``a && b &`` -> two), each as argv with the program's name
    (``.venv/bin/prism-x`` -> ``prism-x``); only ``prism-*`` commands are kept."""
    commands, current = [], []
    for token in [*shlex.split(line, comments=True), "&&"]:
        if token in SHELL_SEPARATORS:
            if current and Path(current[0]).name.startswith("prism-"):
                commands.append([Path(current[0]).name, *current[1:]])
            current = []
        else:
            current.append(token)
    return commands


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """``(README text of the command, argv)`` for every ``prism-*`` command in ``text``."""
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found += [(" ".join(line.split()), argv) for argv in _split_commands(line)]
    for span in re.findall(r"`(prism-[a-z-]+(?:\s[^`]*)?)`", text):
        argv = _split_commands(span.replace("[", " ").replace("]", " "))[0]
        if len(argv) > 1 and argv[1].isupper():  # a placeholder such as `prism-reward COMMAND --help`
            continue
        found.append((" ".join(span.split()), argv))
    return list({" ".join(argv): (line, argv) for line, argv in found}.values())  # each command once


def _subcommand(argv: list[str]) -> str | None:
    if argv[0] in SUBCOMMAND_PROGRAMS and len(argv) > 1 and not argv[1].startswith("-"):
        return argv[1]
    return None


def run_main(program: str, args: list[str]) -> tuple[int, str]:
    """Exit code and stdout+stderr of ``program ARGS`` run in-process through its console script."""
    main = _entry_points()[program].load()
    # The ROS nodes' main takes sys.argv-style arguments (program name first, as rclpy expects).
    argv = [program, *args] if _entry_points()[program].value.startswith("robot_bridge.") else args
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return int(code or 0), out.getvalue()


@functools.cache
def help_text(program: str, subcommand: str | None) -> str:
    code, text = run_main(program, [subcommand, "--help"] if subcommand else ["--help"])
    assert code == 0, f"{program} {subcommand or ''} --help exited {code}:\n{text}"
    return text


def stale_flags(argv: list[str]) -> list[str]:
    """The ``--flags`` of ``argv`` that its command's ``--help`` does not list."""
    text = help_text(argv[0], _subcommand(argv))
    flags = {token.split("=", 1)[0] for token in argv[1:] if token.startswith("--") and token != "--"}
    return sorted(flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text))


README_COMMANDS = readme_commands(README.read_text())
NAMED_PROGRAMS = sorted(
    set(re.findall(r"(?<![\w/-])(?:\.venv/bin/)?(prism-[a-z-]+[a-z])", README.read_text())) - {"prism-rl"}
)  # the project's own name


def test_readme_commands_are_found():
    """The extraction itself works: the README's recording and evaluation commands are seen."""
    programs = {argv[0] for _, argv in README_COMMANDS}
    assert {"prism-record", "prism-reward", "prism-train", "prism-eval", "prism-vla", "prism-sim-robot"} <= programs
    record = next(argv for _, argv in README_COMMANDS if argv[0] == "prism-record")
    assert "--cameras" in record and "--out" in record  # the continuation line was joined


@pytest.mark.parametrize("program", NAMED_PROGRAMS)
def test_every_named_command_is_installed_and_answers_help(program):
    assert program in _entry_points(), f"README names {program}, which is not a console script of prism-rl"
    assert "usage" in help_text(program, None).lower()


@pytest.mark.parametrize("program", SUBCOMMAND_PROGRAMS)
def test_every_subcommand_answers_help(program):
    named = {sub for _, argv in README_COMMANDS if argv[0] == program and (sub := _subcommand(argv))}
    listed = set(re.findall(r"^  (\w+)\s", help_text(program, None), flags=re.M))
    assert named <= listed, f"README uses {program} subcommands {sorted(named - listed)} that do not exist"
    for sub in sorted(named | listed):
        assert "--" in help_text(program, sub)


@pytest.mark.parametrize(("line", "argv"), README_COMMANDS, ids=[" ".join(argv)[:60] for _, argv in README_COMMANDS])
def test_readme_flags_exist(line, argv):
    stale = stale_flags(argv)
    assert not stale, f"README command `{line}` uses {', '.join(stale)}, which `{argv[0]} --help` does not list"


def test_a_stale_flag_is_caught():
    [(_, argv)] = readme_commands("```bash\n.venv/bin/prism-record --task reach \\\n    --no-such-flag 3\n```\n")
    assert stale_flags(argv) == ["--no-such-flag"]
    assert stale_flags(["prism-reward", "eval", "--model=grm", "--camera-map", "a=b"]) == []


def _with_values(argv: list[str], values: dict[str, str], extra: tuple[str, ...] = ()) -> list[str]:
    """``argv`` with each flag in ``values`` set to that one value (its README values dropped)."""
    out, skipping = [], False
    for token in argv:
        if token.startswith("--"):
            skipping = token in values
        if not skipping:
            out.append(token)
    for flag, value in values.items():
        out += [flag, value]
    return [*out, *extra]


def test_short_readme_commands_run(tmp_path):
    """The README's recording and evaluation commands, shrunk to seconds, write what they promise."""
    record = next(argv for _, argv in README_COMMANDS if argv[0] == "prism-record")
    data = tmp_path / "data"
    record = _with_values(record, {"--episodes": "1", "--size": "32", "--cameras": "front", "--out": str(data)})
    code, text = run_main(record[0], record[1:])
    assert code == 0, text
    assert json.loads((data / "meta" / "info.json").read_text())["total_episodes"] == 1

    evaluate = next(argv for _, argv in README_COMMANDS if _subcommand(argv) == "eval" and "--task" not in argv)
    report = tmp_path / "report"
    evaluate = _with_values(
        evaluate,
        {"--data": str(data), "--out": str(report)},
        extra=("--device", "cpu", "--no-progress-bar", "--videos", "0"),
    )
    code, text = run_main(evaluate[0], evaluate[1:])
    assert code == 0, text
    specs = [argv for flag, argv in zip(evaluate, evaluate[1:]) if flag == "--model"]
    assert [m["spec"] for m in json.loads((report / "metrics.json").read_text())["models"].values()] == specs
