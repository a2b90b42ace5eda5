"""The import direction between our packages: each layer builds only on the layers below it.

    sim, episodes  ->  reward_models  ->  policies  ->  robot_bridge

Every module is parsed with ``ast`` (nothing is imported, so the check is fast and needs no
extras), and every import counts, including those inside functions: a lazy upward import is still
a dependency. Relative imports are resolved against the module's own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "episodes", "reward_models", "policies", "robot_bridge")
# Ours, but never importable from the packages: tests and benchmarks sit on top of everything.
NOT_IMPORTABLE = ("tests", "bench")
ALLOWED: dict[str, set[str]] = {
    "sim": set(),
    "episodes": set(),
    "reward_models": {"episodes"},
    "policies": {"sim", "episodes", "reward_models"},
    "robot_bridge": {"sim", "episodes", "reward_models", "policies"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own_package = module_name(path).split(".")
    if path.name != "__init__.py":
        own_package = own_package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..pkg import y
                base = own_package[: len(own_package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def layer_violations(package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    ours = set(PACKAGES) | set(NOT_IMPORTABLE)
    problems = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, name in imported_modules(path):
            top = name.split(".")[0]
            if top in ours and top not in allowed:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return problems


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package):
    problems = layer_violations(package)
    assert not problems, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of ours'}:\n" + "\n".join(
        problems
    )


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    """The parser itself: a lazy import and a relative import are both found and resolved."""
    package = tmp_path / "episodes"
    package.mkdir()
    (package / "__init__.py").write_text("from .lerobot import open_dataset\n")
    (package / "video.py").write_text("def f():\n    import policies.train\n    from ..sim import env\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert imported_modules(package / "__init__.py") == [(1, "episodes.lerobot")]
    assert layer_violations("episodes") == [
        "episodes/video.py:2 imports policies.train",
        "episodes/video.py:3 imports sim",
    ]
