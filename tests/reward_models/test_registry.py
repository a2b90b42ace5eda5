"""Model specs -> progress models; clear errors for everything else."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from episodes import Episode
from episodes.video_folder import write_episode_folder
from reward_models import registry
from reward_models.base import ProgressModel, hop_from_progress
from reward_models.cli import main as prism_reward
from reward_models.registry import (
    SPEC_FORMS,
    UnknownModelSpecError,
    load_progress_model,
    parse_spec,
    register_model,
    unregister_model,
)

REPO = Path(__file__).resolve().parents[2]


def test_parse_spec_forms(tmp_path):
    assert parse_spec("oracle") == ("oracle", None)
    assert parse_spec("vlm-grm:/m") == ("vlm-grm", "/m")
    assert parse_spec("vlm-rubric:/m") == ("vlm-rubric", "/m")
    assert parse_spec("vlm:/m") == ("vlm", "/m")
    assert parse_spec("clip:ViT-B-32:/w.pt") == ("clip", "ViT-B-32:/w.pt")
    assert parse_spec(str(tmp_path)) == ("grm", str(tmp_path))
    with pytest.raises(UnknownModelSpecError) as err:
        parse_spec("gpt5")
    for form in SPEC_FORMS:
        assert form in str(err.value)
    with pytest.raises(UnknownModelSpecError, match="needs an argument"):
        parse_spec("vlm:")


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="local weights"):
        load_progress_model("clip:ViT-B-32", device="cpu")
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        load_progress_model("clip:NoSuchNet:" + str(_touch(tmp_path / "w.pt")), device="cpu")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_progress_model(f"vlm:{tmp_path / 'missing'}", device="cpu")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_progress_model(f"vlm-grm:{tmp_path}", device="cpu")
    with pytest.raises(FileNotFoundError, match="GRM checkpoint"):
        load_progress_model(f"grm:{tmp_path / 'nope'}", device="cpu")


def _touch(p):
    p.write_bytes(b"")
    return p


def test_oracle_and_grm_checkpoint(tmp_path):
    oracle = load_progress_model("oracle")
    hop = oracle.hop({"progress": np.array([0.5])}, {"progress": np.array([0.75])}, ["t"])
    assert hop[0] == pytest.approx(0.5)

    from reward_models.configuration_grm import GRMConfig
    from reward_models.modeling_grm import GRM, save_grm

    cfg = GRMConfig(image_size=32, cameras=("front",), embed_dim=16, conv_channels=(8, 8), hidden_dim=32, text_dim=8)
    save_grm(GRM(cfg), tmp_path / "grm")
    for spec in (str(tmp_path / "grm"), f"grm:{tmp_path / 'grm'}"):
        model = load_progress_model(spec, device="cpu")
        assert model.model_id == spec
        frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
        h = model.hop({"front": frames[:1]}, {"front": frames[1:]}, ["reach"])
        assert h.shape == (1,) and -1 <= h[0] <= 1


# --------------------------------------------------------------------------------------------
# A model added from outside: register_model, no edit of the dispatcher
# --------------------------------------------------------------------------------------------

TOY_TASK = "push the red block to the right"


class RedBlockProgressModel(ProgressModel):
    """Φ read off the pixels: how far right the red block is in the camera named by the spec."""

    def __init__(self, camera: str, device: str) -> None:
        self.camera, self.device = camera, device

    def encode(self, obs):
        frames = np.asarray(obs[self.camera]).astype(np.int16)
        red = (frames[..., 0] > 150) & (frames[..., 1] < 100) & (frames[..., 2] < 100)
        red_columns = red.any(axis=1)  # (B, W)
        leftmost = np.where(red_columns.any(axis=1), red_columns.argmax(axis=1), 4)
        return np.clip((leftmost - 4) / 20.0, 0.0, 1.0)

    def hop_from_embeddings(self, before, after, tasks, start=None, goal=None):
        return hop_from_progress(before, after)


@pytest.fixture
def toy_kind():
    loaded = []

    def load_toy(arg, *, spec, device, **options):
        loaded.append((arg, spec, device))
        return RedBlockProgressModel(arg, device)

    register_model("toy", load_toy, "toy:CAMERA (red-block position in CAMERA)")
    try:
        yield loaded
    finally:
        unregister_model("toy")


def _red_block_episode(i: int, final: float, T: int = 12) -> Episode:
    progress = np.linspace(0, final, T).astype(np.float32)
    front = np.zeros((T, 32, 32, 3), np.uint8)
    for t in range(T):
        x = int(4 + 20 * progress[t])
        front[t, 12:20, x : x + 8] = (255, 0, 0)
    return Episode(
        task=TOY_TASK,
        frames={"front": front},
        fps=10,
        progress=progress,
        episode_index=i,
        outcome="success" if final >= 0.99 else "fail",
    )


def test_registered_kind_loads_like_a_builtin(toy_kind):
    assert parse_spec("toy:front") == ("toy", "front")
    assert "toy:CAMERA (red-block position in CAMERA)" in registry.SPEC_FORMS
    model = load_progress_model("toy:front", device="cpu")
    assert isinstance(model, RedBlockProgressModel) and model.model_id == "toy:front"
    assert toy_kind == [("front", "toy:front", "cpu")]
    frames = _red_block_episode(0, 1.0).frames["front"]
    assert model.hop({"front": frames[:1]}, {"front": frames[-1:]}, [TOY_TASK])[0] == pytest.approx(1.0)
    with pytest.raises(UnknownModelSpecError, match="needs an argument"):
        parse_spec("toy:")
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy", lambda arg, **_: None, "toy:X")
    with pytest.raises(ValueError, match="without ':'"):
        register_model("a:b", lambda arg, **_: None, "a:b")


def test_unregistered_kind_is_unknown_again(toy_kind):
    unregister_model("toy")
    try:
        with pytest.raises(UnknownModelSpecError) as err:
            load_progress_model("toy:front")
        assert "toy:CAMERA" not in str(err.value) and "oracle (ground-truth progress)" in str(err.value)
    finally:
        register_model("toy", lambda arg, **_: None, "toy:X")  # the fixture unregisters it


def test_registered_kind_through_prism_reward_eval(toy_kind, tmp_path):
    for i, final in enumerate((1.0, 0.3, 1.0)):
        write_episode_folder(tmp_path / "episodes" / f"ep{i}", _red_block_episode(i, final))
    out = tmp_path / "report"
    assert (
        prism_reward(
            [
                "eval",
                "--model",
                "toy:front",
                "--model",
                "oracle",
                "--data",
                str(tmp_path / "episodes"),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-progress-bar",
                "--videos",
                "0",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["spec"] for m in metrics["models"].values()] == ["toy:front", "oracle"]
    toy_label = next(label for label, m in metrics["models"].items() if m["spec"] == "toy:front")
    phi = pd.read_parquet(out / "progress.parquet")
    # The toy model saw the (video-compressed) frames: its Φ follows the oracle's.
    assert np.abs(phi[f"phi.{toy_label}"] - phi["phi.oracle"]).max() < 0.2
    ends = phi.groupby("episode_index")[f"phi.{toy_label}"].last()
    assert ends[0] > 0.8 and ends[1] < 0.5 and ends[2] > 0.8


def test_loading_a_kind_imports_only_its_own_dependencies():
    """Heavy optional dependencies stay unimported until a spec of their kind is loaded."""
    code = (
        "import sys; from reward_models.registry import load_progress_model, parse_spec; "
        "[parse_spec(s) for s in ('clip:A:w', 'vlm:/d', 'vlm-grm:/d', 'serve:x@auto', 'grm')]; "
        "load_progress_model('oracle'); "
        "print(sorted(m for m in ('open_clip', 'transformers', 'ray', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
