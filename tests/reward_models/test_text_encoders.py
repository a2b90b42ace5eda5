"""The GRM's pretrained sentence-encoder text side: resolution, checkpoints, and what it reads."""

import pytest
import torch

from reward_models.configuration_grm import GRMConfig
from reward_models.modeling_grm import GRM, load_grm, save_grm
from reward_models.text_encoders import load_sentence_encoder, resolve_sentence_encoder


def test_specs_resolve_or_fail_clearly(tmp_path):
    assert (resolve_sentence_encoder("sentence:minilm") / "config.json").is_file()
    with pytest.raises(ValueError, match="sentence:minilm"):
        resolve_sentence_encoder("minilm")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        resolve_sentence_encoder(f"sentence:{tmp_path}")
    with pytest.raises(ValueError, match="text_encoder"):
        GRMConfig(text_encoder="bert")


def test_paraphrases_land_near_each_other():
    enc = load_sentence_encoder("sentence:minilm")
    e = enc.encode(
        ["push the red block onto the green target", "slide the red cube onto the green goal pad", "open the drawer"]
    )
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2


def test_checkpoint_records_the_encoder_and_not_its_weights(tmp_path):
    cfg = GRMConfig(
        image_size=32,
        cameras=("front",),
        embed_dim=16,
        conv_channels=(8, 8),
        hidden_dim=32,
        text_dim=8,
        text_encoder="sentence:minilm",
        canonical_colors="red:blue",
    )
    model = GRM(cfg)
    assert not any("sentence_encoder" in k for k in model.state_dict())
    path = save_grm(model, tmp_path / "grm")
    assert (path / "model.safetensors").stat().st_size < 200_000  # the 90 MB encoder is not inside
    loaded = load_grm(path, device="cpu")
    assert loaded.grm_config.text_encoder == "sentence:minilm"
    texts = ["push the blue cube onto the pad", "slide the red block to the goal"]
    with torch.no_grad():
        torch.testing.assert_close(loaded._text(texts), model.eval().encode_text(texts))
    # colour-canonical encoding exchanges the colour word in the text as in the image
    assert cfg.canonical_text("push the Blue cube") == "push the red cube"
    assert model.extend_vocabulary(["a brand new instruction"]) == []
