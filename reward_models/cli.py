"""``prism-reward``: train, adapt and evaluate process reward models.

Subcommands live in :data:`COMMANDS` (name -> ``"module:function"`` + one-line help). Each
function takes the remaining argv, parses it itself (tyro) and returns an exit code (or any
value, meaning success). Modules are imported only when their subcommand runs, so ``--help`` is
fast and one broken optional dependency does not take the other subcommands down. To add one:
``COMMANDS["name"] = ("package.module:main", "what it does")`` or :func:`register`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from episodes.cli_errors import run_cli

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("reward_models.train_grm:main", "Train a GRM on LeRobot v3 datasets (ground-truth progress labels)."),
    "adapt": (
        "reward_models.adapt_grm:main",
        "One-shot adaptation of a GRM to a new task from a single demonstration.",
    ),
    "eval": (
        "reward_models.evaluate:main",
        "Evaluate reward models on recorded episodes (VOC, completion, AUROC, ...).",
    ),
    "calibrate": (
        "reward_models.confidence:main",
        "Fit a GRM's post-hoc confidence (OOD statistics, calibrated P(success)) on reference data.",
    ),
    "serve": (
        "reward_models.serve:main",
        "Serve a reward model to many clients with Ray Serve (dynamic batching); clients name it serve:NAME.",
    ),
    "ingest": (
        "reward_models.evaluate:ingest_main",
        "Convert rosbag2 bags (sqlite3 or MCAP: camera + joint-state topics) into a LeRobot v3 dataset.",
    ),
}


def register(name: str, target: str, help: str) -> None:
    """Add a subcommand: ``target`` is ``"module:function"`` taking argv."""
    if ":" not in target:
        raise ValueError(f"subcommand target must be 'module:function', got {target!r}")
    COMMANDS[name] = (target, help)


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: prism-reward COMMAND [options]   (prism-reward COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help}" for name, (_, help) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"prism-reward: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    # Bad input (missing/corrupt dataset, bad checkpoint, unknown model spec, unwritable output)
    # is reported in one line for every subcommand; programming errors still show a traceback.
    return run_cli(f"prism-reward {name}", func, rest)


if __name__ == "__main__":
    sys.exit(main())
