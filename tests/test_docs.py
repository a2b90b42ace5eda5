"""The README and docs/ stay true to the code: the opening commands, the scripts and tests they name,
the sections the code cites, and docs/results.md generated from bench/results/*.json."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
GEN_RESULTS = REPO / "scripts" / "gen_results.py"
PRETRAINED_GRM = REPO / "reward_models" / "pretrained" / "grm"
PACKAGES = ("sim", "episodes", "reward_models", "policies", "robot_bridge", "bench", "scripts", "launch")
OPENING_COMMANDS = [
    "bash scripts/install.sh && .venv/bin/prism-demo              # main job on built-in defaults → prism_demo_out/report.html",
    "bash scripts/install.sh && .venv/bin/python -m pytest -q     # the tests (what CI runs)",
]


SHARED_DESIGN = "DESIGN" + ".md"
"""The background notes beside the repository, which users do not have (spelt in two parts so this
file does not itself cite them)."""


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_results", GEN_RESULTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------- README
def test_readme_opens_with_the_two_commands():
    text = _readme()
    first_block = re.search(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL)
    assert first_block, "README has no code block"
    assert first_block.group(1).splitlines() == OPENING_COMMANDS
    assert first_block.start() < text.index("\n## "), "the two commands must come before the first section"


def test_readme_is_a_short_guide_without_issue_numbers():
    text = _readme()
    assert len(text.splitlines()) <= 260
    assert not re.search(r"issue\s*#", text, flags=re.IGNORECASE)
    assert "../shared" not in text and SHARED_DESIGN not in text


def test_every_prism_command_named_in_the_docs_is_a_console_script():
    scripts = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        named = set(re.findall(r"(?<![\w/.-])prism-[a-z][a-z-]*[a-z]", doc.read_text(encoding="utf-8"))) - {"prism-rl"}
        unknown = sorted(named - scripts)
        assert not unknown, f"{doc.name} names {unknown}, which pyproject.toml [project.scripts] lacks"
    assert set(re.findall(r"`(prism-[a-z-]+)`", _section(_readme(), "Commands"))) == scripts


def test_every_reliability_guarantee_cites_tests_that_exist():
    section = _section(_readme(), "Reliability")
    bullets = [b for b in re.split(r"\n(?=- )", section) if b.startswith("- ")]
    assert len(bullets) >= 9, "the Reliability section lists the guarantees as bullets"
    for bullet in bullets:
        refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", bullet)
        assert refs, f"guarantee without a test: {bullet[:80]!r}"
        for path, name in refs:
            source = REPO / path
            assert source.is_file(), f"{path} (cited in Reliability) does not exist"
            assert re.search(rf"^\s*def {name}\(", source.read_text(encoding="utf-8"), flags=re.MULTILINE), (
                f"{path} defines no test {name} (cited in Reliability)"
            )


def test_local_links_in_the_docs_resolve():
    # The model card ships inside the pretrained GRM's folder: until that folder is added, its link
    # is the one allowed to point ahead; once the folder exists, the card must be in it.
    pending = set() if PRETRAINED_GRM.is_dir() else {PRETRAINED_GRM / "MODEL_CARD.md"}
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            path = (doc.parent / target).resolve()
            if "://" not in target and path not in pending:
                assert path.exists(), f"{doc.name} links to {target}, which does not exist"


# ------------------------------------------------------------------------------ code -> docs
def _package_sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]


def test_code_cites_docs_sections_that_exist_and_never_design_md():
    cited = 0
    for source in _package_sources():
        text = source.read_text(encoding="utf-8")
        assert SHARED_DESIGN not in text, f"{source.relative_to(REPO)} cites {SHARED_DESIGN}; cite docs/ instead"
        for citation in re.finditer(r"docs/(\w+\.md) § ", text):
            cited += 1
            doc = DOCS / citation.group(1)
            headings = (
                re.findall(r"^## (.+)$", doc.read_text(encoding="utf-8"), flags=re.MULTILINE) if doc.is_file() else []
            )
            after = text[citation.end() : citation.end() + 80]
            assert any(after.startswith(h) for h in headings), (
                f"{source.relative_to(REPO)} cites docs/{citation.group(1)} § {after.splitlines()[0]!r}: no such section"
            )
    assert cited >= 5


# ---------------------------------------------------------------------------- docs/results.md
def _write_samples(results_dir: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from results_io import write_bench_result
    finally:
        sys.path.remove(str(REPO / "bench"))
    task = {
        "multi_view": {"voc": 0.9731, "completion_acc": 0.875, "auroc": 1.0},
        "single_view": {"voc": 0.91, "completion_acc": 0.8125, "auroc": float("nan")},
        "rank": {"rank": 0.4321},
        "ece": 0.061,
        "adaptation": {
            "before": {"voc": 0.9, "completion_acc": 0.75, "auroc": 0.9},
            "after": {"voc": 0.96, "completion_acc": 0.9375, "auroc": 1.0},
        },
    }
    write_bench_result(
        "grm_generalisation",
        {
            "grm": "ckpt/grm",
            "tasks": {"push": task},
            "overhead": {"overhead_ratio": 1.37, "steps_per_s_without_model": 150.0, "steps_per_s_with_model": 109.5},
            "targets": ["Target (push): VOC 0.973 MET"],
        },
        command="python bench/grm_generalisation.py --grm grm",
        results_dir=results_dir,
    )
    write_bench_result(
        "sim_bench",
        {"render": {"64px": {"frames_per_s": 612.5}, "128px": {"frames_per_s": 351.0}}, "experts_success": 1.0},
        command="python bench/sim_bench.py --experts-seeds 50",
        results_dir=results_dir,
    )


def test_gen_results_renders_every_result_file(tmp_path):
    results_dir, out = tmp_path / "results", tmp_path / "docs" / "results.md"
    _write_samples(results_dir)
    envelope = json.loads((results_dir / "grm_generalisation.json").read_text())
    assert {"bench", "command", "date", "commit", "machine", "results"} <= set(envelope)
    assert envelope["results"]["tasks"]["push"]["single_view"]["auroc"] is None  # NaN is not JSON

    done = subprocess.run(
        [sys.executable, str(GEN_RESULTS), "--results-dir", str(results_dir), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    gen, sim = text.index("## grm_generalisation"), text.index("## sim_bench")
    assert gen < sim
    assert "python bench/grm_generalisation.py --grm grm" in text[gen:sim]
    assert f"`{envelope['commit']}" in text[gen:sim] and envelope["machine"]["cpu"] in text[gen:sim]
    # the known bench's table: one row per task, percentages, n/a for NaN, before -> after
    assert re.search(
        r"^\| push \| 0\.9731 \| 88 % \| 1 \| 0\.91 \| 81 % \| n/a \| 0\.4321 \| 0\.061 \| "
        r"0\.9 → 0\.96 / 75 % → 94 % / 0\.9 → 1 \|$",
        text,
        flags=re.MULTILINE,
    )
    assert "RL-loop overhead 1.37×" in text and "- Target (push): VOC 0.973 MET" in text
    # any other bench: a table with a row per key of a dict of dicts
    assert re.search(r"^\| 128px \| 351 \|$", text[sim:], flags=re.MULTILINE)
    assert re.search(r"^\| `experts_success` \| 1 \|$", text[sim:], flags=re.MULTILINE)
    # a pure function of the inputs: the same files give the same page
    assert _load_generator().render(results_dir) == text


def test_gen_results_without_results_says_how_to_produce_them(tmp_path, capsys):
    gen = _load_generator()
    (tmp_path / "results").mkdir()
    out = tmp_path / "results.md"
    assert gen.main(["--results-dir", str(tmp_path / "results"), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "No results are recorded yet." in text and "python scripts/gen_results.py" in text


@pytest.mark.parametrize(
    "content, culprit",
    [
        ("{not json", "not valid JSON"),
        ('{"bench": "x", "results": {}}', "lacks the field(s) command, date, commit, machine"),
        ('{"bench": "x", "command": "c", "date": "d", "commit": "c", "machine": {}, "results": [1]}', "'results'"),
    ],
)
def test_gen_results_bad_result_file_is_one_line_and_keeps_the_page(tmp_path, capsys, content, culprit):
    gen = _load_generator()
    results_dir, out = tmp_path / "results", tmp_path / "results.md"
    results_dir.mkdir()
    (results_dir / "broken.json").write_text(content)
    out.write_text(gen.GENERATED_MARKER + "\nold page\n")
    assert gen.main(["--results-dir", str(results_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.json" in err[0] and culprit in err[0], err
    assert out.read_text() == gen.GENERATED_MARKER + "\nold page\n"


def test_gen_results_never_replaces_a_hand_written_page(tmp_path, capsys):
    gen = _load_generator()
    (tmp_path / "results").mkdir()
    out = tmp_path / "results.md"
    out.write_text("# my notes\n")
    assert gen.main(["--results-dir", str(tmp_path / "results"), "--out", str(out)]) == 2
    assert "not generated by scripts/gen_results.py" in capsys.readouterr().err
    assert out.read_text() == "# my notes\n"


def test_docs_results_md_is_generated_from_bench_results():
    gen = _load_generator()
    expected = gen.render(REPO / "bench" / "results")
    assert (DOCS / "results.md").read_text(encoding="utf-8") == expected, (
        "docs/results.md is out of date with bench/results/*.json: run python scripts/gen_results.py"
    )
