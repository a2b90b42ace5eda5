"""The pretrained GRM shipped in the package: present, small, named ``grm`` everywhere, and it still
reproduces the figures on its model card (re-recorded from the same held-out-split seeds)."""

import json

import pytest

from policies.pretrain_grm import quick_check
from policies.shaping import RewardSpec
from reward_models.registry import PRETRAINED_GRM_DIR, load_progress_model, parse_spec, resolve_grm_checkpoint


def test_shipped_checkpoint_is_complete_and_small():
    for name in ("config.json", "model.safetensors", "MODEL_CARD.md", "model_card.json"):
        assert (PRETRAINED_GRM_DIR / name).is_file(), name
    assert (PRETRAINED_GRM_DIR / "model.safetensors").stat().st_size <= 5 * 2**20
    shipped = sum(f.stat().st_size for f in PRETRAINED_GRM_DIR.rglob("*") if f.is_file())
    assert shipped <= 5 * 2**20, f"{shipped / 2**20:.1f} MB"


def test_shipped_checkpoint_carries_a_labelled_rehearsal_set_of_every_task():
    """What ``prism-reward adapt --checkpoint grm`` rehearses by default: failure-mix episodes of each
    sim task (successes and failures, with progress labels) at the model's own views."""
    import sim
    from episodes import open_dataset
    from reward_models.adapt_grm import checkpoint_rehearsal_sets

    sets = checkpoint_rehearsal_sets(PRETRAINED_GRM_DIR)
    assert sorted(p.name for p in sets) == sorted(sim.TASKS)
    config = json.loads((PRETRAINED_GRM_DIR / "config.json").read_text())
    for path in sets:
        ds = open_dataset(path)
        outcomes = set(ds.episode_table["outcome"])
        assert ds.num_episodes >= 4 and "success" in outcomes and outcomes - {"success"}, (path, outcomes)
        assert {f"observation.images.{c}" for c in config["cameras"]} <= set(ds.video_keys), path
        episode = ds.load_episode(0)
        assert episode.progress is not None and 0.0 <= episode.progress.min() <= episode.progress.max() <= 1.0


def test_grm_names_the_shipped_model_everywhere():
    assert parse_spec("grm") == ("grm", str(PRETRAINED_GRM_DIR))
    assert resolve_grm_checkpoint("grm") == PRETRAINED_GRM_DIR
    assert RewardSpec.parse("grm").model_spec == "grm"
    model = load_progress_model("grm", device="cpu")
    assert set(model.cameras) == {"front", "side", "wrist"}


def test_shipped_model_reproduces_its_model_card():
    card = json.loads((PRETRAINED_GRM_DIR / "model_card.json").read_text())["quick_check"]
    fresh = quick_check("grm", episodes=card["episodes_per_task"], seed=card["seed"])
    for task, want in card["results"].items():
        got = fresh[task]
        assert got["outcomes"] == want["outcomes"], task  # the same episodes were recorded
        for key in ("voc_plus", "completion_accuracy", "success_auroc"):
            if want[key] is None:
                assert got[key] is None
            else:
                assert got[key] == pytest.approx(want[key], abs=0.05), (task, key)


def test_rehearsal_set_is_recorded_into_the_checkpoint_once(tmp_path):
    """``prism-pretrain-grm``'s rehearsal stage: one dataset per task under ``CKPT/rehearsal``, kept
    (not re-recorded) when the command is re-run, and found by ``prism-reward adapt``'s default."""
    from episodes import open_dataset
    from policies.pretrain_grm import record_rehearsal_set
    from reward_models.adapt_grm import checkpoint_rehearsal_sets

    ckpt = tmp_path / "grm"
    (path,) = record_rehearsal_set(ckpt, ["reach"], 2, "front", 32)
    assert checkpoint_rehearsal_sets(ckpt) == (path,)
    assert open_dataset(path).num_episodes == 2
    stamp = (path / "meta" / "info.json").stat().st_mtime_ns
    assert record_rehearsal_set(ckpt, ["reach"], 2, "front", 32) == [path]
    assert (path / "meta" / "info.json").stat().st_mtime_ns == stamp
