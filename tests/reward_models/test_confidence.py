"""Post-hoc confidence of progress models: the spread of Φ, out-of-distribution flags from
`prism-reward calibrate`, and the calibrated success probability with its ECE.

A tiny GRM is trained briefly (a few seconds) on a red square sliding across a grey 32×32 frame;
out-of-distribution frames show the same scene on another background with noise. The GRM uses
``conditioning="spatial"``: a ``pooled`` GRM's embedding ends in a LayerNorm that makes it nearly
blind to such a photometric shift (measured: 7–31 % of shifted frames flagged against 78–100 %
for ``spatial``), see the report of this change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from episodes import Episode
from reward_models.base import hop_from_progress
from reward_models.cli import main as reward_cli
from reward_models.confidence import (
    CONFIDENCE_NAME,
    MahalanobisOOD,
    PlattScaling,
    load_confidence,
)
from reward_models.metrics import expected_calibration_error
from reward_models.oracle import OracleProgressModel
from reward_models.tracker import FusionConfig, ProgressTracker, track_episode

TASK = "slide the red square to the right"


def square_episode(
    rng: np.random.Generator, success: bool, background=(150, 150, 150), noise: int = 4, T: int = 12, index: int = 0
) -> Episode:
    t = np.linspace(0.0, 1.0, T)
    progress = t if success else rng.uniform(0.3, 0.6) * np.sin(np.pi * t)
    row = int(rng.integers(8, 24))
    frames = np.empty((T, 32, 32, 3), np.uint8)
    for i, p in enumerate(progress):
        img = np.clip(np.asarray(background, np.int16) + rng.integers(-noise, noise + 1, (32, 32, 3)), 0, 255)
        x = int(2 + 24 * p)
        img[row - 3 : row + 3, x : x + 6] = (220, 30, 30)
        frames[i] = img.astype(np.uint8)
    return Episode(
        task=TASK,
        frames={"front": frames},
        progress=progress.astype(np.float32),
        fps=10.0,
        episode_index=index,
        outcome="success" if success else "fail",
    )


def episodes(seed: int, n: int, **kw) -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [square_episode(rng, success=i % 3 != 2, index=i, **kw) for i in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A briefly trained GRM checkpoint and its (LeRobot v3) training data."""
    from episodes.lerobot import write_dataset
    from reward_models.train_grm import GRMTrainConfig, train_grm

    root = tmp_path_factory.mktemp("confidence")
    train = episodes(0, 15)
    cfg = GRMTrainConfig(
        out=root / "grm",
        steps=40,
        image_size=32,
        batch_episodes=6,
        frames_per_episode=4,
        embed_dim=32,
        warmup_steps=5,
        device="cpu",
        num_threads=1,
        progress_bar=False,
        save_every=0,
        seed=0,
        canonical_colors=None,
        swap_words=(),
        conditioning="spatial",
    )
    ckpt = train_grm(cfg, train)
    return ckpt, write_dataset(root / "data", train)


def test_calibrate_flags_frames_unlike_the_training_data(trained, tmp_path, capsys):
    ckpt, data = trained
    weights_before = (ckpt / "model.safetensors").read_bytes()
    assert reward_cli(["calibrate", "--model", str(ckpt), "--data", str(data), "--device", "cpu"]) == 0
    assert "OOD threshold" in capsys.readouterr().out
    assert (ckpt / "model.safetensors").read_bytes() == weights_before  # post hoc: weights untouched

    from reward_models.registry import load_progress_model

    model = load_progress_model(str(ckpt), device="cpu")
    assert model.confidence is not None and model.confidence.ood is not None  # loaded with the checkpoint
    held_in = [track_episode(model, ep) for ep in episodes(1, 6)]
    shifted = [track_episode(model, ep) for ep in episodes(2, 6, background=(60, 170, 200), noise=30)]
    d_in = np.concatenate([t.ood_distance for t in held_in])
    d_out = np.concatenate([t.ood_distance for t in shifted])
    assert np.median(d_out) > np.percentile(d_in, 95)
    assert np.mean([t.ood.mean() for t in shifted]) > 0.9
    assert np.mean([t.ood.mean() for t in held_in]) < 0.2
    # The online tracker flags the same frames as the offline trace.
    ep = episodes(2, 1, background=(60, 170, 200), noise=30)[0]
    tracker = ProgressTracker(model, n=1)
    tracker.reset([0], [TASK], start_obs={"front": ep.frames["front"][:1]})
    tracker.step({"front": ep.frames["front"][1:2]})
    assert tracker.ood[0] and tracker.ood_distance[0] == pytest.approx(
        track_episode(model, ep).ood_distance[1], rel=1e-4
    )


def test_calibration_is_bound_to_its_weights_and_never_replaces_a_foreign_file(trained, tmp_path, capsys):
    import shutil

    from reward_models.configuration_grm import GRMConfig
    from reward_models.modeling_grm import GRM, load_grm_module, save_grm

    ckpt, data = trained
    copy = tmp_path / "grm"
    shutil.copytree(ckpt, copy)
    (copy / CONFIDENCE_NAME).unlink(missing_ok=True)
    out = tmp_path / "cal.safetensors"
    assert (
        reward_cli(["calibrate", "--model", str(copy), "--data", str(data), "--device", "cpu", "--out", str(out)]) == 0
    )
    assert not (copy / CONFIDENCE_NAME).exists()  # --out writes only where it is told
    shutil.copy(out, copy / CONFIDENCE_NAME)
    assert load_confidence(copy) is not None
    # New weights in the same folder: the stale calibration is ignored, with a warning.
    cfg: GRMConfig = load_grm_module(copy).config
    torch.manual_seed(1)
    save_grm(GRM(cfg), copy, overwrite=True)
    shutil.copy(out, copy / CONFIDENCE_NAME)
    capsys.readouterr()
    assert load_confidence(copy) is None
    assert "other weights" in capsys.readouterr().err
    # A file prism-rl did not write is refused (exit 2, one line naming it) and left as it was.
    foreign = tmp_path / "notes.safetensors"
    foreign.write_bytes(b"my own notes")
    assert (
        reward_cli(["calibrate", "--model", str(copy), "--data", str(data), "--device", "cpu", "--out", str(foreign)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert str(foreign) in err and len(err.splitlines()) == 1
    assert foreign.read_bytes() == b"my own notes"


def test_eval_reports_confidence(trained, tmp_path):
    from episodes.lerobot import write_dataset
    from reward_models.evaluate import EvalConfig, run_eval

    ckpt, data = trained
    if not (ckpt / CONFIDENCE_NAME).exists():
        assert reward_cli(["calibrate", "--model", str(ckpt), "--data", str(data), "--device", "cpu"]) == 0
    test = write_dataset(tmp_path / "test", episodes(3, 6))
    result = run_eval(
        EvalConfig(
            model=[str(ckpt)], data=str(test), out=str(tmp_path / "report"), videos=0, device="cpu", progress_bar=False
        )
    )
    metrics = next(iter(result["models"].values()))["metrics"]
    for key in ("success_ece", "raw_phi_ece", "spread_error_corr", "mean_phi_std", "ood_fraction"):
        assert metrics[key]["value"] is not None, key
    assert 0.0 <= metrics["success_ece"]["value"] <= 1.0
    assert all(
        e["mean_phi_std"] is not None and e["ood_fraction"] is not None and 0 <= e["success_probability"] <= 1
        for e in metrics["episodes"]
    )
    html = (tmp_path / "report" / "report.html").read_text()
    assert "ECE of calibrated P(success)" in html and "OOD frames" in html
    import pyarrow.parquet as pq

    assert any(c.startswith("phi_std.") for c in pq.read_table(tmp_path / "report" / "progress.parquet").column_names)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["models"]


# -------------------------------------------------------------------------------------- maths


def test_expected_calibration_error_by_hand():
    # bin [0.2, 0.3): accuracy 0.5 vs confidence 0.2; bin [0.8, 0.9): 1.0 vs 0.8; half the samples each.
    assert expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1]) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)


def test_platt_scaling_lowers_the_ece_of_a_miscalibrated_phi():
    rng = np.random.default_rng(0)
    phi = rng.uniform(0.02, 0.98, 4000)
    # Raw Φ is over-optimistic: the true success odds are far lower than Φ says.
    p_true = 1.0 / (1.0 + np.exp(-(2.5 * np.log(phi / (1 - phi)) - 1.5)))
    y = rng.random(phi.size) < p_true
    fit, test = slice(0, 2000), slice(2000, None)
    platt = PlattScaling.fit(phi[fit], y[fit])
    raw_ece = expected_calibration_error(phi[test], y[test])
    cal_ece = expected_calibration_error(platt(phi[test]), y[test])
    assert raw_ece > 0.08 and cal_ece < raw_ece / 3
    assert platt.a == pytest.approx(2.5, abs=0.4) and platt.b == pytest.approx(-1.5, abs=0.4)
    # Little data stays near "Φ is the probability" rather than an over-confident fit.
    small = PlattScaling.fit([0.9, 0.1], [True, False])
    assert abs(small.b) < 1.0 and 0.5 < small.a < 5.0


def test_mahalanobis_threshold_flags_about_the_chosen_share_of_new_reference_data():
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.1, 4.0, 20))
    ref, held, new = (rng.multivariate_normal(np.zeros(20), cov, 3000) for _ in range(3))
    ood = MahalanobisOOD.fit(ref, held, percentile=95.0)
    assert 0.03 < ood.is_out(ood.distance(new)).mean() < 0.07
    shifted = new + 3.0 * np.sqrt(np.diag(cov))
    assert ood.is_out(ood.distance(shifted)).mean() > 0.95


class NoisyOracle(OracleProgressModel):
    """Exact hops, each claimed with a fixed std: the spread must follow the propagation rule."""

    def __init__(self, hop_std: float) -> None:
        self.hop_std = hop_std

    def hop_and_std_from_embeddings(self, before, after, tasks, start=None, goal=None):
        hops = self.hop_from_embeddings(before, after, tasks, start, goal)
        return hops, np.full_like(hops, self.hop_std)


def test_spread_propagates_hop_std_and_disagreement_online_as_offline():
    flat = {"front": np.zeros((6, 4, 4, 3), np.uint8), "progress": np.zeros(6)}
    # Zero hops with std σ: the chain's variance adds, Φ_I stays 0, so spread_t = √t·σ.
    trace = track_episode(NoisyOracle(0.1), flat, task="t", fusion=FusionConfig(mode="incremental"))
    np.testing.assert_allclose(trace.phi_std, 0.1 * np.sqrt(np.arange(6)), atol=1e-12)
    assert trace.ood_distance is None and not trace.ood.any()  # no calibration: nothing flagged
    # Exact hops, no std: the spread is the disagreement of the estimates, 0 where they agree.
    ramp = {"front": np.zeros((6, 4, 4, 3), np.uint8), "progress": np.linspace(0, 1, 6)}
    assert np.allclose(track_episode(OracleProgressModel(), ramp, task="t").phi_std, 0.0)
    # Online and offline give the same spread, frame by frame.
    progress = np.array([0.0, 0.3, 0.2, 0.6, 0.9, 1.0])
    obs = {"front": np.zeros((6, 4, 4, 3), np.uint8), "progress": progress}
    model = NoisyOracle(0.05)
    offline = track_episode(model, obs, task="t")
    tracker = ProgressTracker(model, n=1)
    tracker.reset([0], ["t"], start_obs={k: v[:1] for k, v in obs.items()})
    online = [0.0]
    for t in range(1, 6):
        tracker.step({k: v[t : t + 1] for k, v in obs.items()})
        online.append(float(tracker.phi_std[0]))
    np.testing.assert_allclose(online, offline.phi_std, atol=1e-12)
    assert (offline.phi_std[1:] > 0).all() and (offline.phi_std <= 0.5).all()


def test_forward_and_incremental_disagreement_widens_the_spread():
    """A model whose anchored hop says less than its chain: the spread grows with the gap."""

    class Disagreeing(OracleProgressModel):
        def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
            exact = hop_from_progress(np.asarray(before), np.asarray(after))
            return np.where(np.asarray(before) == 0.0, 0.5 * exact, exact)  # from the start: half

    obs = {"front": np.zeros((5, 4, 4, 3), np.uint8), "progress": np.linspace(0, 0.8, 5)}
    trace = track_episode(Disagreeing(), obs, task="t", fusion=FusionConfig(mode="mean"))
    gap = np.abs(trace.incremental - trace.forward)
    np.testing.assert_allclose(trace.phi_std, gap / 2, atol=1e-12)  # two estimates, equal weights
    assert gap[-1] > 0.2
