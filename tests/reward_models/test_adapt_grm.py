"""One-shot GRM adaptation never hurts: regularised fine-tuning, a label-free self-check that can
keep step 0, unlabelled-video adaptation and the before/after report.

A tiny GRM is pretrained on scene A (a red block sliding to a green marker on a beige table) and
adapted to scene B: the same task on a blue-grey table, a visual shift the zero-shot model has
never seen. Everything is 32 px, one view, a few hundred steps: the module runs in about a minute
on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from episodes import Episode, LeRobotWriter
from reward_models.adapt_grm import AdaptConfig, adapt_grm
from reward_models.modeling_grm import load_grm_module
from reward_models.train_grm import GRMTrainConfig, train_grm

TASK = "slide the red block to the green marker"
SCENE_A, SCENE_B = (190, 185, 170), (200, 120, 110)
SIZE, T = 32, 24


def render(p: float, row: float, background: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), background, np.uint8) + rng.integers(0, 6, (SIZE, SIZE, 3), dtype=np.uint8)

    def box(cx: float, cy: float, colour: tuple[int, int, int], r: int) -> None:
        cx, cy = int(cx * (SIZE - 1)), int(cy * (SIZE - 1))
        img[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = colour

    box(0.85, row, (40, 170, 60), 4)
    box(0.15 + 0.7 * p, row, (210, 40, 40), 3)
    return img


def episode(background, rng, success: bool = True, labelled: bool = True) -> Episode:
    t = np.linspace(0, 1, T)
    if success:
        progress = np.maximum.accumulate(np.clip(t + rng.normal(0, 0.02, T), 0, 1))
        progress[0], progress[-1] = 0.0, 1.0
    else:  # part of the way and back
        progress = rng.uniform(0.3, 0.6) * np.sin(np.pi * t)
    row = rng.uniform(0.25, 0.75)
    frames = {"front": np.stack([render(p, row, background, rng) for p in progress])}
    return Episode(
        task=TASK,
        frames=frames,
        task_name="slide",
        progress=progress.astype(np.float32) if labelled else None,
        outcome=("success" if success else "fail") if labelled else None,
        fps=10.0,
    )


def write_dataset(root: Path, eps: list[Episode]) -> Path:
    with LeRobotWriter(root, fps=10.0, cameras=["front"], image_size=(SIZE, SIZE)) as w:
        for ep in eps:
            w.add_episode(ep)
    return root


@pytest.fixture(scope="module")
def scene_a_grm(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    eps = [episode(SCENE_A, rng, success=i % 3 != 2) for i in range(12)]
    out = tmp_path_factory.mktemp("pretrain") / "grm"
    cfg = GRMTrainConfig(
        out=out,
        steps=250,
        image_size=SIZE,
        batch_episodes=6,
        frames_per_episode=5,
        embed_dim=48,
        warmup_steps=20,
        device="cpu",
        num_threads=1,
        progress_bar=False,
        save_every=0,
        seed=0,
    )
    return train_grm(cfg, episodes=eps)


@pytest.fixture(scope="module")
def scene_b_held_out(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    eps = [episode(SCENE_B, rng, success=s) for s in [True] * 5 + [False] * 3]
    return write_dataset(tmp_path_factory.mktemp("scene_b") / "held_out", eps)


def adapt(base: Path, out: Path, **kw) -> AdaptConfig:
    return AdaptConfig(
        checkpoint=base,
        out=out,
        **{"steps": 120, "lr": 1e-3, "device": "cpu", "num_threads": 1, "progress_bar": False, "check_every": 20, **kw},
    )


def entry(path: Path) -> dict:
    return load_grm_module(path).config.training["adaptations"][-1]


def test_adaptation_to_a_shifted_scene_never_loses_held_out_scores(scene_a_grm, scene_b_held_out, tmp_path, capsys):
    demo = episode(SCENE_B, np.random.default_rng(7))
    cfg = adapt(scene_a_grm, tmp_path / "adapted", eval=scene_b_held_out)
    adapt_grm(cfg, demo_episode=demo)
    table = json.loads((tmp_path / "adapted.eval" / "before_after.json").read_text())["metrics"]
    printed = capsys.readouterr().out
    assert "zero-shot" in printed and "voc_plus" in printed
    print(table, [(c["step"], round(c["score"], 3)) for c in entry(tmp_path / "adapted")["self_check"]])
    before, after = table["voc_plus"]["zero_shot"], table["voc_plus"]["adapted"]
    assert after >= before - 0.02, table
    assert table["completion_accuracy"]["adapted"] >= table["completion_accuracy"]["zero_shot"] - 0.13, table
    record = entry(tmp_path / "adapted")
    steps = [c["step"] for c in record["self_check"]]
    assert steps[0] == 0 and steps[-1] == 120 and record["selected_step"] in steps
    best = max(c["score"] for c in record["self_check"])
    selected = next(c for c in record["self_check"] if c["step"] == record["selected_step"])
    assert selected["score"] >= best - 0.01
    assert selected["negative_end_progress"] < 0.5 < selected["end_progress"]  # the demo's negatives are not success


def test_self_check_keeps_step_0_when_the_demo_labels_are_wrong(scene_a_grm, tmp_path):
    demo = episode(SCENE_B, np.random.default_rng(7))
    demo.progress = np.random.default_rng(3).permutation(demo.progress)  # corrupted: shuffled in time
    out = adapt_grm(adapt(scene_a_grm, tmp_path / "adapted", anchor_weight=0.0, freeze="none"), demo_episode=demo)
    record = entry(out)
    print([(c["step"], round(c["score"], 3)) for c in record["self_check"]])
    assert record["selected_step"] == 0, record["self_check"]
    assert min(c["score"] for c in record["self_check"][1:]) < record["self_check"][0]["score"]  # it did hurt
    base, adapted = load_grm_module(scene_a_grm).state_dict(), load_grm_module(out).state_dict()
    for name in base:
        torch.testing.assert_close(adapted[name], base[name], msg=f"{name} changed although step 0 was kept")


def test_l2_sp_keeps_the_weights_near_the_pretrained_ones(scene_a_grm, tmp_path):
    demo = episode(SCENE_B, np.random.default_rng(7))
    base = load_grm_module(scene_a_grm).state_dict()

    def last_step_distance(name: str, anchor_weight: float) -> float:
        adapt_grm(
            adapt(scene_a_grm, tmp_path / name, steps=60, anchor_weight=anchor_weight, freeze="none"), demo_episode=demo
        )
        trained = load_grm_module(tmp_path / f"{name}.run" / "last" / "model").state_dict()  # the last step's weights
        return float(sum(((trained[k] - base[k]) ** 2).sum() for k in base if base[k].is_floating_point()))

    plain, anchored = last_step_distance("plain", 0.0), last_step_distance("l2sp", 1.0)
    print({"plain": plain, "l2sp": anchored})
    assert anchored < 0.7 * plain, (plain, anchored)


def test_guard_rejects_steps_that_lose_the_rehearsal_metrics(monkeypatch):
    """The self-check keeps rising, but from step 2 on the rehearsal episodes lose 3-class
    accuracy: those steps are never kept; a drop within the tolerance is allowed."""
    import reward_models.adapt_grm as adapt_module

    scores, accuracies = iter([0.0, 0.1, 0.2, 0.3]), iter([0.75, 0.74, 0.70, 0.60])  # steps 0..3
    monkeypatch.setattr(adapt_module, "self_check", lambda model, videos, device, negatives=(): {"score": next(scores)})
    monkeypatch.setattr(
        adapt_module,
        "rehearsal_metrics",
        lambda model, episodes, device: {
            "success_auroc": 0.9,
            "completion_accuracy": next(accuracies),
            "voc_plus": 0.8,
        },
    )
    model = torch.nn.Linear(2, 1)
    keeper = adapt_module.BestStepKeeper(
        model, [], torch.device("cpu"), every=1, last=3, min_gain=0.0, guard=["episode"], tolerance=0.02
    )
    for step in (1, 2, 3):
        keeper(step, model)
    assert [c["guard_holds"] for c in keeper.curve] == [True, True, False, False]
    assert keeper.best_step == 1


def test_guard_keeps_failures_of_the_rehearsal_data_apart(scene_a_grm, tmp_path):
    """Rehearsal that teaches scene-A failures to read as successes (mislabelled) pulls the
    held-out half of the rehearsal data down; the guard refuses those steps."""
    rng = np.random.default_rng(5)
    rehearse = []
    for i in range(8):
        success = i % 4 < 2
        ep = episode(SCENE_A, rng, success=success)
        if i % 2 == 0 and not success:  # trained half: failures labelled as successes
            ep.progress, ep.outcome = np.linspace(0, 1, T, dtype=np.float32), "success"
        rehearse.append(ep)
    demo = episode(SCENE_B, np.random.default_rng(7))
    out = adapt_grm(
        adapt(scene_a_grm, tmp_path / "adapted", anchor_weight=0.0, freeze="none", steps=60, check_every=10),
        demo_episode=demo,
        rehearse_episodes=rehearse,
    )
    record = entry(out)
    curve = record["self_check"]
    print([(c["step"], round(c["score"], 3), c["rehearsal"], c["guard_holds"]) for c in curve])
    assert record["method"]["guard_episodes"] == 4 and record["method"]["rehearse_episodes_used"] == 4
    assert not all(c["guard_holds"] for c in curve), "the mislabelled rehearsal never hurt the guard episodes"
    selected = next(c for c in curve if c["step"] == record["selected_step"])
    assert selected["guard_holds"]
    for key, value in selected["rehearsal"].items():
        assert value >= curve[0]["rehearsal"][key] - 0.02, (key, selected, curve[0])


def test_a_checkpoint_with_a_rehearsal_set_is_rehearsed_by_default(scene_a_grm, tmp_path, capsys):
    """A checkpoint that carries ``rehearsal/<dataset>`` (as the shipped ``grm`` does) is rehearsed and
    guarded with it when no --rehearse is given; --no-rehearse turns it off; both is an error."""
    import shutil

    from reward_models.adapt_grm import REHEARSAL_DIR
    from reward_models.cli import main

    base = tmp_path / "grm_with_set"
    shutil.copytree(scene_a_grm, base)
    rng = np.random.default_rng(21)
    write_dataset(base / REHEARSAL_DIR / "slide", [episode(SCENE_A, rng, success=i % 2 == 0) for i in range(6)])
    demo = episode(SCENE_B, np.random.default_rng(7))
    rehearsed = entry(adapt_grm(adapt(base, tmp_path / "default", steps=20, check_every=10), demo_episode=demo))
    assert rehearsed["method"]["rehearse_episodes_used"] == 3 and rehearsed["method"]["guard_episodes"] == 3
    assert any(REHEARSAL_DIR in r for r in rehearsed["method"]["rehearse"])
    plain = entry(
        adapt_grm(adapt(base, tmp_path / "plain", steps=20, check_every=10, no_rehearse=True), demo_episode=demo)
    )
    assert plain["method"]["rehearse_episodes_used"] == 0
    code = main(
        ["adapt", "--checkpoint", str(base), "--out", str(tmp_path / "x"), "--unlabelled", str(tmp_path)]
        + ["--no-rehearse", "--rehearse", str(base / REHEARSAL_DIR / "slide")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--no-rehearse and --rehearse" in err and len(err.strip().splitlines()) == 1


def test_unlabelled_videos_alone_adapt_by_time_order(scene_a_grm, scene_b_held_out, tmp_path):
    rng = np.random.default_rng(11)
    videos = [episode(SCENE_B, rng, labelled=False) for _ in range(3)]  # no progress, no outcome
    out = adapt_grm(
        adapt(scene_a_grm, tmp_path / "adapted", steps=100, eval=scene_b_held_out), unlabelled_episodes=videos
    )
    table = json.loads((tmp_path / "adapted.eval" / "before_after.json").read_text())["metrics"]
    print(table)
    assert table["voc_plus"]["adapted"] >= table["voc_plus"]["zero_shot"] - 0.02, table
    record = entry(out)
    curve = record["self_check"]
    print([(c["step"], round(c["score"], 3)) for c in curve])
    assert record["demo"] is None and record["method"]["unlabelled_videos"] == 3
    selected = next(c for c in curve if c["step"] == record["selected_step"])
    assert selected["score"] >= curve[0]["score"]
    assert max(c["score"] for c in curve[1:]) > curve[0]["score"] + 0.05, curve  # time order taught something


def test_cli_adapt_rejects_bad_input_in_one_line(scene_a_grm, tmp_path, capsys):
    from reward_models.cli import main

    assert main(["adapt", "--checkpoint", str(scene_a_grm), "--out", str(tmp_path / "x")]) == 2
    assert "nothing to adapt to" in capsys.readouterr().err
    assert (
        main(
            [
                "adapt",
                "--checkpoint",
                str(scene_a_grm),
                "--out",
                str(tmp_path / "x"),
                "--unlabelled",
                str(tmp_path),
                "--freeze",
                "most",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--freeze must be one of" in err and len(err.strip().splitlines()) == 1
    assert (
        main(
            [
                "adapt",
                "--checkpoint",
                str(scene_a_grm),
                "--out",
                str(tmp_path / "x"),
                "--unlabelled",
                str(tmp_path),
                "--anchor-weight",
                "-1",
            ]
        )
        == 2
    )
    assert "--anchor-weight" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
