"""GRM training: it learns (held-out ranking), resumes exactly, and the CLI train/adapt paths work.

The learning tests use small procedurally rendered two-view scenes (a block moving towards a
marker), so they run in about a minute on 2 CPU cores; the sim-data figures are in
``bench/grm_report.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from episodes import Episode  # noqa: E402
from reward_models.adapt_grm import AdaptConfig, adapt_grm  # noqa: E402
from reward_models.metrics import spearman  # noqa: E402
from reward_models.modeling_grm import load_grm, load_grm_module  # noqa: E402
from reward_models.tracker import track_episode  # noqa: E402
from reward_models.train_grm import (  # noqa: E402
    GRMTrainConfig,
    PairSampler,
    parse_swap_pairs,
    swap_instruction,
    to_train_episode,
    train_grm,
)

INSTRUCTIONS = {"slide": "slide the red block to the green marker", "lift": "lift the blue block to the top shelf"}


def render(task: str, p: float, anchor: float, size: int, view: str, rng: np.random.Generator) -> np.ndarray:
    img = np.full((size, size, 3), (190, 185, 170), np.uint8)
    img += rng.integers(0, 6, img.shape, dtype=np.uint8)  # sensor noise
    if task == "slide":
        x, y, colour = 0.15 + 0.7 * p, anchor, (210, 40, 40)
        marker = (0.85, anchor)
    else:
        x, y, colour = anchor, 0.85 - 0.7 * p, (40, 60, 210)
        marker = (anchor, 0.15)
    if view == "side":  # a second camera: squashed vertically, shifted
        y = 0.55 + 0.35 * (y - 0.5)
        marker = (marker[0], 0.55 + 0.35 * (marker[1] - 0.5))
    r = max(2, size // 12)

    def box(cx, cy, col, rad):
        cx, cy = int(cx * (size - 1)), int(cy * (size - 1))
        img[max(0, cy - rad) : cy + rad, max(0, cx - rad) : cx + rad] = col

    box(*marker, (40, 170, 60), r + 1)
    box(x, y, colour, r)
    return img


def make_episode(task: str, rng: np.random.Generator, success: bool = True, size: int = 32, T: int = 24) -> Episode:
    anchor = rng.uniform(0.25, 0.75)
    t = np.linspace(0, 1, T)
    if success:
        progress = np.clip(t + rng.normal(0, 0.02, T), 0, 1)
        progress[0], progress[-1] = 0.0, 1.0
        progress = np.maximum.accumulate(progress)
    else:  # goes part of the way and comes back
        progress = rng.uniform(0.3, 0.6) * np.sin(np.pi * t)
    frames = {v: np.stack([render(task, p, anchor, size, v, rng) for p in progress]) for v in ("front", "side")}
    state = np.stack([progress, np.full(T, anchor)], axis=1).astype(np.float32)  # probe targets (state_weight)
    return Episode(
        task=INSTRUCTIONS[task],
        frames=frames,
        progress=progress.astype(np.float32),
        task_name=task,
        state=state,
        outcome="success" if success else "fail",
        fps=10.0,
    )


def dataset(seed: int, n_success: int, n_fail: int, tasks=("slide", "lift"), size: int = 32) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [make_episode(t, rng, s, size) for t in tasks for s in [True] * n_success + [False] * n_fail]


def quick_config(tmp_path: Path, **kw) -> GRMTrainConfig:
    base = dict(
        out=tmp_path / "grm",
        steps=200,
        image_size=32,
        batch_episodes=6,
        frames_per_episode=5,
        embed_dim=64,
        warmup_steps=20,
        device="cpu",
        num_threads=1,
        progress_bar=False,
        save_every=0,
        seed=0,
    )
    base.update(kw)
    return GRMTrainConfig(**base)


def held_out_voc(model, episodes: list[Episode], instruction: str | None = None) -> float:
    vocs = [
        spearman(np.arange(ep.length), track_episode(model, ep, task=instruction or ep.task).phi)
        for ep in episodes
        if ep.outcome == "success"
    ]
    return float(np.mean(np.nan_to_num(vocs)))  # a constant Φ ranks nothing: 0


def test_sampler_builds_stratified_labelled_pairs(tmp_path):
    eps = [to_train_episode(ep, ("front", "side"), 32) for ep in dataset(0, 3, 1)]
    cfg = quick_config(tmp_path, counterfactual=1.0)
    batch = PairSampler(eps, cfg, np.random.default_rng(0)).sample()
    assert batch.weight.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (batch.hop.abs() <= 1).all() and (batch.hop < -0.05).any() and (batch.hop > 0.05).any()
    assert batch.images.shape[0] == batch.view_mask.shape[0] and batch.view_mask.any(1).all()
    assert int(max(batch.before.max(), batch.after.max(), batch.goal.max())) < batch.images.shape[0]
    # Counterfactual instructions: pairs whose instruction belongs to the other task, labelled 0,
    # carrying the configured share of the loss.
    images_task = {}
    for b, t in zip(batch.before.tolist(), batch.text):
        images_task.setdefault(b, set()).add(t)
    mixed = [i for i, (b, t) in enumerate(zip(batch.before.tolist(), batch.text)) if len(images_task[b]) > 1]
    assert mixed
    cf_share = sum(float(batch.weight[i]) for i in mixed if float(batch.hop[i]) == 0.0)
    assert cf_share >= cfg.counterfactual_weight - 1e-5
    # Zero-hop pairs exist (a frame with itself) and context dropout masks some references.
    assert bool((batch.before == batch.after).any())
    assert 0 < int(batch.start_keep.sum()) < len(batch.start_keep)


def test_swap_instruction_names_the_other_object():
    pairs = parse_swap_pairs(["red:blue"])
    assert (
        swap_instruction("Push the red block onto the green target", pairs)
        == "Push the blue block onto the green target"
    )
    assert swap_instruction("put the BLUE cube on the green circle", pairs) == "put the red cube on the green circle"
    assert swap_instruction("open the drawer", pairs) is None  # names no object of a pair
    assert swap_instruction("put the red block on the blue one", pairs) is None  # names both: ambiguous
    assert swap_instruction("the reddish block", pairs) is None  # whole words only
    with pytest.raises(ValueError, match="swap_words"):
        GRMTrainConfig(swap_words=("red-blue",))


@pytest.mark.parametrize("shares", [{"anchor_weight": 0.7}, {"zero_hop_weight": -0.1}])
def test_loss_shares_must_leave_room_for_the_regular_pairs(shares):
    with pytest.raises(ValueError, match="loss shares"):
        GRMTrainConfig(**shares).validate()


def test_anchored_pairs_get_their_own_share(tmp_path):
    eps = [to_train_episode(ep, ("front", "side"), 32) for ep in dataset(4, 3, 1)]
    cfg = quick_config(tmp_path, anchor_weight=0.3, counterfactual=0.0)
    batch = PairSampler(eps, cfg, np.random.default_rng(0)).sample()
    anchored = (batch.before == batch.start) | (batch.before == batch.goal)  # start/goal -> frame
    assert anchored.any() and float(batch.weight[anchored].sum()) == pytest.approx(0.3, abs=1e-5)


def test_colour_swap_counterfactuals_label_successes_zero_and_skip_failures(tmp_path):
    raw = dataset(0, 2, 2)
    eps = [to_train_episode(ep, ("front", "side"), 32) for ep in raw]
    cfg = quick_config(tmp_path, counterfactual=0.0, swap_counterfactual=1.0, swap_weight=0.2)
    sampler = PairSampler(eps, cfg, np.random.default_rng(0))
    # Only successful episodes are swapped: a failure may have moved the other object.
    assert [s is not None for s in sampler.swapped] == [ep.outcome == "success" for ep in raw]
    swapped_texts = {swap_instruction(t, [("red", "blue")]) for t in INSTRUCTIONS.values()}
    seen_whole_episode = False
    for seed in range(4):
        sampler.rng = np.random.default_rng(seed)
        batch = sampler.sample()
        rows = [i for i, t in enumerate(batch.text) if t in swapped_texts]
        if not rows:
            continue
        # The same video under the other colour: no progress, whatever the real instruction's hop.
        assert all(float(batch.hop[i]) == 0.0 for i in rows)
        assert sum(float(batch.weight[i]) for i in rows) == pytest.approx(0.2, abs=1e-5)
        real = {
            (int(batch.before[i]), int(batch.after[i])): float(batch.hop[i])
            for i, t in enumerate(batch.text)
            if t not in swapped_texts
        }
        seen_whole_episode |= any(real.get((int(batch.before[i]), int(batch.after[i])), 0.0) > 0.5 for i in rows)
    assert seen_whole_episode, "expected swapped pairs over frames that are clear progress for the real instruction"


def two_block_episode(named: str, moved: str, rng: np.random.Generator, size: int = 32, T: int = 16) -> Episode:
    """A red and a blue block side by side (rows drawn at random); the ``moved`` one slides to a
    green bar that spans both rows, so only the instruction's colour word says which block counts."""
    rows = {"red": 0.3, "blue": 0.7} if rng.random() < 0.5 else {"red": 0.7, "blue": 0.3}
    colours = {"red": (210, 40, 40), "blue": (40, 60, 210)}
    progress = np.linspace(0.0, 1.0, T) if moved == named else np.zeros(T)
    other = "blue" if named == "red" else "red"
    frames, states = [], []
    for x in np.linspace(0.15, 0.8, T):
        img = np.full((size, size, 3), (190, 185, 170), np.uint8) + rng.integers(0, 6, (size, size, 3), dtype=np.uint8)
        img[:, int(0.88 * size) :] = (40, 170, 60)
        xy = {colour: (x if colour == moved else 0.15, row) for colour, row in rows.items()}
        for colour, (bx, row) in xy.items():
            cx, cy, r = int(bx * size), int(row * size), size // 10
            img[cy - r : cy + r, max(0, cx - r) : cx + r] = colours[colour]
        frames.append(img)
        states.append([*xy[named], *xy[other]])  # like the sim's block tasks: the *named* block first
    return Episode(
        task=f"slide the {named} block to the green bar",
        frames={"front": np.stack(frames)},
        progress=progress.astype(np.float32),
        task_name="slide",
        state=np.asarray(states, np.float32),
        outcome="success" if moved == named else "fail",
        fps=10.0,
    )


def test_canonical_colours_make_swap_counterfactuals_teach_which_block_counts(tmp_path):
    """Training shows only successes (the named block moves); the held-out wrong-object episodes move
    the *other* block, which a colour-blind model calls success. With colour-canonical encoding (the
    default) a "blue" instruction reads the video with red and blue exchanged, so the named block
    always looks red and a swapped instruction on a success shows a *blue-looking* block moving --
    labelled no progress. Nothing has to bind a word to a colour. (Without it, swapped instructions
    alone did not teach the colour word: right and wrong finals both ~0.6 at 250 and at 2000 steps.)
    Measured: right 0.98-0.99, wrong 0.00 over three seeds."""
    rng = np.random.default_rng(0)
    train = [two_block_episode(c, c, rng) for c in ("red", "blue") for _ in range(10)]
    rng = np.random.default_rng(99)
    right = [two_block_episode(c, c, rng) for c in ("red", "blue") for _ in range(3)]
    wrong = [two_block_episode(c, o, rng) for c, o in (("red", "blue"), ("blue", "red")) for _ in range(3)]
    cfg = quick_config(
        tmp_path, steps=250, swap_counterfactual=0.7, swap_weight=0.3, view_dropout=0.0, canonical_colors="red:blue"
    )
    model = load_grm(train_grm(cfg, episodes=train), device="cpu")
    final_right = np.mean([track_episode(model, ep).final for ep in right])
    final_wrong = np.mean([track_episode(model, ep).final for ep in wrong])
    assert final_right > 0.7 and final_wrong < 0.35, (final_right, final_wrong)


def test_wrong_object_episodes_with_the_state_probe_teach_which_block_counts(tmp_path):
    """Binding the colour word to the block that moved, colour-canonical encoding off. Trained on true wrong-object episodes (the
    other block slides, progress 0) beside successes, the model escapes a colour-blind hedge only
    slowly: measured here without the probe, right / wrong-object finals 0.86 / 0.81 at 1000 steps,
    0.90 / 0.56 at 1200, 1.00 / 0.02 at 2000. The instruction-conditioned state probe
    (``state_weight``: "where is the block the instruction names", on every frame) gets there
    by 500-1000 steps: 0.95 / 0.27 at 500, 1.00 / 0.01 at 1000."""
    rng = np.random.default_rng(0)
    train = [two_block_episode(c, c, rng) for c in ("red", "blue") for _ in range(10)]
    train += [two_block_episode(c, o, rng) for c, o in (("red", "blue"), ("blue", "red")) for _ in range(10)]
    rng = np.random.default_rng(99)
    right = [two_block_episode(c, c, rng) for c in ("red", "blue") for _ in range(3)]
    wrong = [two_block_episode(c, o, rng) for c, o in (("red", "blue"), ("blue", "red")) for _ in range(3)]
    cfg = quick_config(tmp_path, steps=1000, view_dropout=0.0, state_weight=1.0, canonical_colors=None)
    model = load_grm(train_grm(cfg, episodes=train), device="cpu")
    final_right = np.mean([track_episode(model, ep).final for ep in right])
    final_wrong = np.mean([track_episode(model, ep).final for ep in wrong])
    assert final_right > 0.8 and final_wrong < 0.3, (final_right, final_wrong)
    # The probe is training-only: the checkpoint is the plain GRM.
    assert not any("probe" in k for k in load_grm_module(cfg.out).state_dict())


def test_state_probe_rows_are_standardised_per_task(tmp_path):
    eps = [to_train_episode(ep, ("front", "side"), 32) for ep in dataset(0, 3, 1)]
    eps[0].state = np.concatenate([eps[0].state, eps[0].state], axis=1)  # one "slide" episode of another width
    assert quick_config(tmp_path).state_weight == 0.0
    assert PairSampler(eps, quick_config(tmp_path), np.random.default_rng(0)).sample().state_rows is None
    sampler = PairSampler(eps, quick_config(tmp_path, state_weight=1.0), np.random.default_rng(0))
    assert set(sampler.state_stats) == {"lift"}  # "slide" disagrees on the state width: no probe rows
    batch = sampler.sample()
    assert batch.state_rows is not None and len(batch.state_rows) == len(batch.state_text)
    assert set(batch.state_text) == {INSTRUCTIONS["lift"]}
    assert batch.state_target.shape == batch.state_mask.shape == (len(batch.state_rows), 2)
    assert int(batch.state_rows.max()) < batch.images.shape[0]
    mean, std = sampler.state_stats["lift"]
    lift = np.concatenate([ep.state for ep in eps if ep.task_key == "lift"])
    np.testing.assert_allclose(((lift - mean) / std).mean(0), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="state-weight"):
        GRMTrainConfig(state_weight=-1.0).validate()


def test_training_learns_to_rank_held_out_progress(tmp_path):
    train = dataset(seed=0, n_success=10, n_fail=4)
    held_out = dataset(seed=123, n_success=4, n_fail=2)
    path = train_grm(quick_config(tmp_path, steps=250), episodes=train)
    model = load_grm(path, device="cpu")
    info = json.loads((path / "config.json").read_text())["training"]
    assert info["episodes"] == len(train) and set(info["tasks"]) == {"slide", "lift"}
    assert list((tmp_path / "grm.run" / "tensorboard").glob("events.*"))

    voc = held_out_voc(model, held_out)
    assert voc > 0.6, f"held-out VOC {voc:.2f}"  # chance is 0
    finals = {o: [track_episode(model, ep).final for ep in held_out if ep.outcome == o] for o in ("success", "fail")}
    assert np.mean(finals["success"]) > np.mean(finals["fail"]) + 0.3, finals
    # Identical frames read as no progress: the incremental chain multiplies one hop per step, so
    # a bias here compounds. (Measured on this data: mean |H(s, s)| 0.013 with the default 20 %
    # zero-hop share, 0.042 with 5 %.)
    self_hops = []
    for ep in held_out:
        emb = model.encode(ep.frames)
        self_hops.append(model.hop_from_embeddings(emb, emb, [ep.task] * len(emb), emb[:1].expand(len(emb), -1)))
    assert np.abs(np.concatenate(self_hops)).mean() < 0.03


@pytest.mark.parametrize("state_weight", [0.0, 1.0])
def test_resume_continues_exactly(tmp_path, monkeypatch, state_weight):
    eps = dataset(seed=1, n_success=2, n_fail=1, size=16)
    common = dict(
        steps=6,
        image_size=16,
        batch_episodes=2,
        frames_per_episode=3,
        embed_dim=16,
        warmup_steps=2,
        state_weight=state_weight,
    )
    straight = train_grm(quick_config(tmp_path / "a", **common), episodes=eps)

    calls = {"n": 0}
    real_sample = PairSampler.sample

    def crashing(self):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated crash")
        return real_sample(self)

    monkeypatch.setattr(PairSampler, "sample", crashing)
    cfg = quick_config(tmp_path / "b", save_every=2, **common)
    with pytest.raises(KeyboardInterrupt):
        train_grm(cfg, episodes=eps)
    assert not cfg.out.exists() and (cfg.resolved_run_dir() / "last").is_dir()
    monkeypatch.setattr(PairSampler, "sample", real_sample)
    resumed = train_grm(quick_config(tmp_path / "b", resume=True, **common), episodes=eps)

    a, b = load_grm_module(straight).state_dict(), load_grm_module(resumed).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=f"parameter {k} differs after resume")

    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_grm(quick_config(tmp_path / "c", resume=True, **common), episodes=eps)


def test_one_shot_adaptation_learns_a_new_task(tmp_path):
    base = train_grm(
        quick_config(tmp_path, steps=200), episodes=dataset(seed=2, n_success=10, n_fail=4, tasks=("slide",))
    )
    rng = np.random.default_rng(77)
    demo = make_episode("lift", rng, success=True)
    held_out = [make_episode("lift", rng, success=True) for _ in range(4)]
    before = held_out_voc(load_grm(base, device="cpu"), held_out)
    adapted = adapt_grm(
        AdaptConfig(
            checkpoint=base,
            demo=tmp_path / "unused",
            out=tmp_path / "adapted",
            steps=120,
            lr=1e-3,
            device="cpu",
            num_threads=1,
            progress_bar=False,
        ),
        demo_episode=demo,
    )
    model = load_grm(adapted, device="cpu")
    assert {"lift", "blue", "top", "shelf"} <= set(model.grm_config.vocabulary)
    assert model.grm_config.training["adaptations"][-1]["task"] == INSTRUCTIONS["lift"]
    after = held_out_voc(model, held_out)
    assert after > 0.6 and after > before + 0.1, (before, after)


def test_cli_train_and_adapt_on_a_lerobot_dataset(tmp_path):
    from episodes import LeRobotWriter
    from reward_models.cli import main

    def write(root: Path, eps: list[Episode]) -> Path:
        with LeRobotWriter(root, fps=10.0, cameras=["front", "side"], image_size=(32, 32)) as w:
            for ep in eps:
                w.add_episode(ep)
        return root

    data = write(tmp_path / "data", dataset(seed=3, n_success=2, n_fail=1, tasks=("slide",)))
    demo = write(tmp_path / "demo", [make_episode("lift", np.random.default_rng(5))])
    out = tmp_path / "ckpt"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(out),
                "--steps",
                "3",
                "--image-size",
                "16",
                "--cameras",
                "front,side",
                "--num-threads",
                "1",
                "--no-progress-bar",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    model = load_grm(out, device="cpu")
    assert model.cameras == ("front", "side") and model.grm_config.training["episodes"] == 3
    assert (
        main(
            [
                "adapt",
                "--checkpoint",
                str(out),
                "--demo",
                str(demo),
                "--episode",
                "0",
                "--out",
                str(tmp_path / "adapted"),
                "--steps",
                "2",
                "--num-threads",
                "1",
                "--no-progress-bar",
            ]
        )
        == 0
    )
    assert "lift" in load_grm(tmp_path / "adapted", device="cpu").grm_config.vocabulary
    assert main(["--help"]) == 0 and main(["nope"]) == 2
    with pytest.raises(IndexError, match="out of range"):
        adapt_grm(AdaptConfig(checkpoint=out, demo=demo, episode=5, out=tmp_path / "x", steps=1, progress_bar=False))


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from reward_models.cli import main

    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prism-reward train: error:") and "missing" in err and "Traceback" not in err
    assert main(["eval", "--model", "no-such-model-spec", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "prism-reward eval: error:" in capsys.readouterr().err


def test_training_can_start_from_another_checkpoint(tmp_path):
    """--init: the starting model's architecture, cameras and weights are kept; new words are added."""
    from dataclasses import replace

    eps = dataset(0, 2, 1, tasks=("lift",))
    first = train_grm(quick_config(tmp_path / "a", steps=3, cameras=("front",), embed_dim=16), episodes=eps)
    renamed = [replace(ep, task="raise the cube up high") for ep in eps]
    second = train_grm(
        quick_config(tmp_path / "b", steps=2, init=str(first), image_size=48, cameras=("side",)), episodes=renamed
    )
    a, b = load_grm_module(first), load_grm_module(second)
    assert b.config.cameras == a.config.cameras == ("front",) and b.config.image_size == 32
    assert b.config.embed_dim == 16
    assert {"raise", "cube", "high"} <= set(b.config.vocabulary)
    assert b.config.training["init"] == str(first)
