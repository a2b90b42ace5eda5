"""GRM model: backbones (tiny, built and saved here), checkpoints, errors, view subsets, caching."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reward_models.configuration_grm import GRMConfig, build_vocabulary, tokenize  # noqa: E402
from reward_models.modeling_grm import (  # noqa: E402
    GRM,
    GRMProgressModel,
    load_grm,
    save_grm,
    two_hot,
)
from reward_models.tracker import ProgressTracker, track_episode  # noqa: E402

CAMS = ("front", "side", "wrist")
TASK = "push the red block onto the green square"


def tiny_config(**kw) -> GRMConfig:
    base = dict(
        image_size=16,
        cameras=CAMS,
        embed_dim=16,
        conv_channels=(4, 8),
        view_heads=2,
        text_dim=8,
        hidden_dim=16,
        num_bins=11,
        vocabulary=build_vocabulary([TASK]),
    )
    base.update(kw)
    return GRMConfig(**base)


def random_obs(b: int, size: int = 16, cams=CAMS, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8) for c in cams}


def assert_same_outputs(a: GRMProgressModel, b: GRMProgressModel, obs) -> None:
    ea, eb = a.encode(obs), b.encode(obs)
    torch.testing.assert_close(ea, eb)
    n = len(ea)
    ha = a.hop_from_embeddings(ea, ea.flip(0), [TASK] * n, ea, ea)
    hb = b.hop_from_embeddings(eb, eb.flip(0), [TASK] * n, eb, eb)
    np.testing.assert_allclose(ha, hb, atol=1e-6)


# -- maths -----------------------------------------------------------------------------------


def test_two_hot_targets_have_the_label_as_expectation():
    hops = torch.tensor([-1.0, -0.37, 0.0, 0.05, 0.999, 1.0])
    target = two_hot(hops, 11)
    centers = torch.linspace(-1, 1, 11)
    torch.testing.assert_close(target.sum(-1), torch.ones(6))
    torch.testing.assert_close((target * centers).sum(-1), hops)


def test_hops_are_bounded_and_context_is_optional():
    model = GRMProgressModel(GRM(tiny_config()), device="cpu")
    e = model.encode(random_obs(5))
    for start, goal in [(None, None), (e, None), (None, e), (e, e)]:
        h = model.hop_from_embeddings(e, e.flip(0), [TASK] * 5, start, goal)
        assert h.shape == (5,) and np.all(np.abs(h) <= 1.0)


# -- views -----------------------------------------------------------------------------------


def test_any_view_subset_works_and_unknown_cameras_are_ignored():
    model = GRMProgressModel(GRM(tiny_config()), device="cpu")
    obs = random_obs(3)
    for subset in [("front",), ("wrist",), ("front", "side"), CAMS]:
        e = model.encode({c: obs[c] for c in subset})
        assert e.shape == (3, 16) and torch.isfinite(e).all()
    torch.testing.assert_close(
        model.encode({"front": obs["front"], "top": obs["side"]}), model.encode({"front": obs["front"]})
    )
    # Different resolutions are resized to the model's input.
    big = {c: np.repeat(np.repeat(v, 2, axis=1), 2, axis=2) for c, v in obs.items()}
    assert model.encode(big).shape == (3, 16)


def test_mismatched_cameras_is_a_clear_error():
    model = GRMProgressModel(GRM(tiny_config()), device="cpu")
    with pytest.raises(ValueError, match=r"none of this model's cameras"):
        model.encode(random_obs(2, cams=("top", "left")))


# -- colour-canonical encoding ---------------------------------------------------------------


def test_canonical_colours_read_the_named_colour_as_the_canonical_one(tmp_path):
    blue = TASK.replace("red", "blue")
    model = GRMProgressModel(
        GRM(tiny_config(canonical_colors="red:blue", vocabulary=build_vocabulary([TASK, blue]))), device="cpu"
    )
    before, after = random_obs(3, seed=1), random_obs(3, seed=2)
    exchanged = {k: {c: v[..., ::-1].copy() for c, v in o.items()} for k, o in (("b", before), ("a", after))}
    e_b, e_a = model.encode(before), model.encode(after)
    x_b, x_a = model.encode(exchanged["b"]), model.encode(exchanged["a"])
    assert e_b.shape == (3, 2 * 16)  # [as rendered | red and blue exchanged]
    # "blue" on the red/blue-exchanged video is exactly "red" on the video: the named block always looks red.
    np.testing.assert_allclose(
        model.hop_from_embeddings(x_b, x_a, [blue] * 3, x_b, x_a),
        model.hop_from_embeddings(e_b, e_a, [TASK] * 3, e_b, e_a),
        atol=1e-6,
    )
    # ... and not "blue" on the same video (the weights would have to ignore colour for that).
    assert not np.allclose(
        model.hop_from_embeddings(e_b, e_a, [blue] * 3), model.hop_from_embeddings(e_b, e_a, [TASK] * 3)
    )
    cfg = model.grm_config
    assert [cfg.reads_exchanged(t) for t in (TASK, blue, "open the drawer", "put red on blue")] == [
        False,
        True,
        False,
        False,
    ]
    assert cfg.token_ids(blue) == cfg.token_ids(TASK)
    loaded = load_grm(model.save_pretrained(tmp_path / "ckpt"), device="cpu")
    assert loaded.grm_config.canonical_colors == "red:blue"
    np.testing.assert_allclose(
        loaded.hop_from_embeddings(loaded.encode(before), loaded.encode(after), [blue] * 3),
        model.hop_from_embeddings(e_b, e_a, [blue] * 3),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"canonical_colors": "red-blue"}, "canonical_colors"),
        ({"canonical_colors": "red:purple"}, "canonical_colors"),
        ({"canonical_colors": "red:red"}, "canonical_colors"),
        ({"canonical_colors": "red:blue", "conditioning": "spatial"}, "pooled"),
    ],
)
def test_bad_canonical_colours_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**kw)


# -- checkpoints -----------------------------------------------------------------------------


def test_conv_checkpoint_round_trip(tmp_path):
    model = GRMProgressModel(GRM(tiny_config()), device="cpu")
    path = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert not list(tmp_path.glob("*.tmp-*"))  # atomic: no leftovers
    loaded = load_grm(path, device="cpu")
    assert loaded.cameras == CAMS and loaded.grm_config.vocabulary == model.grm_config.vocabulary
    assert_same_outputs(model, loaded, random_obs(4))
    # Overwriting an existing checkpoint is atomic too.
    save_grm(model.model, path)
    assert_same_outputs(model, load_grm(path, device="cpu"), random_obs(2))


def _tiny_open_clip_cfg() -> dict:
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }


@pytest.mark.parametrize("how", ["registered", "local-dir"])
def test_open_clip_backbone_loads_local_weights_and_round_trips(tmp_path, how):
    open_clip = pytest.importorskip("open_clip")
    cfg_file = tmp_path / "tiny-clip-test.json"
    cfg_file.write_text(json.dumps(_tiny_open_clip_cfg()))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    clip = open_clip.create_model("tiny-clip-test", pretrained=None)
    weights = tmp_path / "tiny_clip.pt"
    torch.save(clip.state_dict(), weights)
    if how == "registered":
        backbone = "open_clip:tiny-clip-test"
    else:
        local = tmp_path / "clip_dir"
        local.mkdir()
        (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": _tiny_open_clip_cfg()}))
        backbone = f"open_clip:local-dir:{local}"

    grm = GRM(tiny_config(backbone=backbone, pretrained=str(weights)))
    # The CLIP weights really were loaded (not a random init).
    torch.testing.assert_close(grm.backbone.visual.conv1.weight, clip.visual.conv1.weight)
    model = GRMProgressModel(grm, device="cpu")
    path = model.save_pretrained(tmp_path / "ckpt")
    weights.unlink()  # the checkpoint alone must suffice
    cfg_file.unlink()
    loaded = load_grm(path, device="cpu")
    assert_same_outputs(model, loaded, random_obs(2, size=24))


def test_open_clip_missing_weights_is_a_clear_error(tmp_path):
    pytest.importorskip("open_clip")
    with pytest.raises(FileNotFoundError, match="local file path"):
        GRM(tiny_config(backbone="open_clip:ViT-B-32", pretrained=str(tmp_path / "nope.bin")))


@pytest.mark.parametrize("kind", ["clip_vision", "siglip_dual"])
def test_hf_backbone_loads_offline_and_round_trips(tmp_path, kind):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    if kind == "clip_vision":
        hf = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vision))
        ref = hf.state_dict()
    else:
        config = transformers.SiglipConfig(
            text_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                vocab_size=64,
                max_position_embeddings=16,
            ),
            vision_config=vision,
        )
        hf = transformers.SiglipModel(config)
        ref = hf.vision_model.state_dict()
    hf_dir = tmp_path / "hf_model"
    hf.save_pretrained(hf_dir)
    grm = GRM(tiny_config(backbone=f"hf:{hf_dir}"))
    # The saved weights really were loaded (not a random init).
    key = next(k for k in ref if k.endswith("patch_embedding.weight"))
    torch.testing.assert_close(grm.backbone.tower.state_dict()[key], ref[key])
    model = GRMProgressModel(grm, device="cpu")
    path = model.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(hf_dir)  # the checkpoint alone must suffice
    loaded = load_grm(path, device="cpu")
    assert_same_outputs(model, loaded, random_obs(2))


def test_hf_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="local directory"):
        GRM(tiny_config(backbone=f"hf:{tmp_path / 'absent'}"))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GRM checkpoint"):
        load_grm(tmp_path / "absent", device="cpu")
    path = save_grm(GRM(tiny_config()), tmp_path / "ckpt")

    broken = tmp_path / "no_weights"
    shutil.copytree(path, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_grm(broken, device="cpu")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(path, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        load_grm(corrupt, device="cpu")

    bad_json = tmp_path / "bad_json"
    shutil.copytree(path, bad_json)
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        load_grm(bad_json, device="cpu")

    unknown_field = tmp_path / "unknown_field"
    shutil.copytree(path, unknown_field)
    cfg = json.loads((unknown_field / "config.json").read_text())
    cfg["colour"] = "blue"
    (unknown_field / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="colour"):
        load_grm(unknown_field, device="cpu")

    mismatched = tmp_path / "mismatched"
    shutil.copytree(path, mismatched)
    cfg = json.loads((mismatched / "config.json").read_text())
    cfg["embed_dim"] = 32
    (mismatched / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match|corrupt or incompatible"):
        load_grm(mismatched, device="cpu")


def test_device_errors():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            GRMProgressModel(GRM(tiny_config()), device="cuda")
    with pytest.raises(ValueError, match="device"):
        GRMProgressModel(GRM(tiny_config()), device="tpu")


# -- vocabulary ------------------------------------------------------------------------------


def test_unknown_words_map_to_unk_and_vocabulary_extends():
    grm = GRM(tiny_config())
    cfg = grm.config
    assert cfg.token_ids("PUSH the red block!") == [cfg.vocabulary.index(w) for w in tokenize("push the red block")]
    assert cfg.token_ids("open drawer") == [1, 1]
    model = GRMProgressModel(grm, device="cpu")
    e = model.encode(random_obs(3))
    before_old = model.hop_from_embeddings(e, e.flip(0), [TASK] * 3)
    before_new = model.hop_from_embeddings(e, e.flip(0), ["open drawer"] * 3)
    added = grm.extend_vocabulary(["open the drawer"])
    assert added == ["open", "drawer"] and cfg.token_ids("open drawer") != [1, 1]
    model = GRMProgressModel(grm, device="cpu")  # fresh text cache
    # Known instructions are unchanged; new words start where <unk> was.
    np.testing.assert_allclose(model.hop_from_embeddings(e, e.flip(0), [TASK] * 3), before_old, atol=1e-6)
    np.testing.assert_allclose(model.hop_from_embeddings(e, e.flip(0), ["open drawer"] * 3), before_new, atol=1e-6)


# -- the tracker with the GRM: caching and one encoder pass per step ---------------------------


def test_tracker_encodes_each_frame_once_with_the_grm(monkeypatch):
    grm = GRM(tiny_config())
    model = GRMProgressModel(grm, device="cpu")
    calls = {"encode_states": 0, "rows": 0}
    real = grm.encode_states

    def counting(images, view_mask):
        calls["encode_states"] += 1
        calls["rows"] += images.shape[0]
        return real(images, view_mask)

    monkeypatch.setattr(grm, "encode_states", counting)
    n = 4
    tracker = ProgressTracker(model, n=n)
    tracker.reset(range(n), [TASK] * n, random_obs(n, seed=1), goal_obs=random_obs(n, seed=2))
    assert calls == {"encode_states": 1, "rows": 2 * n}
    for t in range(5):
        done = np.array([t == 2, False, t == 4, False])
        phi = tracker.step(random_obs(n, seed=10 + t), reset_mask=done, reset_obs=random_obs(n, seed=20 + t))
        assert phi.shape == (n,) and np.all((phi >= 0) & (phi <= 1))
    assert calls["encode_states"] == 6 and calls["rows"] == 2 * n + 5 * n + 2
    # Offline: every frame of a 20-frame video encoded exactly once.
    calls.update(encode_states=0, rows=0)
    trace = track_episode(model, random_obs(20, seed=3), task=TASK, batch_size=8)
    assert len(trace) == 20 and calls["rows"] == 20
