"""Model specs -> progress models; clear errors for everything else."""

import numpy as np
import pytest

from reward_models.registry import SPEC_FORMS, UnknownModelSpecError, load_progress_model, parse_spec


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
