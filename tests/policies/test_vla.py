"""The VLA policy: exact action-token likelihoods, checkpoints, BC / RA-BC training, and running a
VLA checkpoint everywhere a policy runs (prism-record, prism-eval, the ROS 2 bridge's loader)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

import sim
from episodes import Episode, write_dataset
from policies.vla.configuration_vla import PROPRIO_NAMES, VLAConfig, is_vla_checkpoint
from policies.vla.data import load_bc_data, progress_gain_weights
from policies.vla.modeling_vla import (
    VLA,
    VLAPolicy,
    action_to_tokens,
    load_vla,
    token_log_prob,
    tokens_to_action,
)
from policies.vla.train_bc import BCConfig, train_bc

SIZE = 32
STATE_NAMES = (
    [f"joint{i + 1}_pos" for i in range(7)]
    + [f"joint{i + 1}_vel" for i in range(7)]
    + ["gripper_width", "ee_x", "ee_y", "ee_z", "obj_x"]
)
INSTRUCTIONS = ("push the red block onto the green target", "reach the red ball")
TINY = dict(image_size=SIZE, conv_channels=(8, 16), embed_dim=32, hidden_dim=64, chunk_size=2, execute_steps=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def demo_action(instruction: int, t: int) -> np.ndarray:
    """What the synthetic demonstrator does: depends on the instruction and on the image (t)."""
    sign = 1.0 if instruction == 0 else -1.0
    return np.array([sign * 0.5, -0.75 + 0.25 * (t % 4), 0.0, sign], dtype=np.float32)


def synthetic_episode(instruction: int, seed: int, length: int = 9, progress: np.ndarray | None = None) -> Episode:
    """A white square whose position encodes the step t; actions follow :func:`demo_action`."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((length, SIZE, SIZE, 3), dtype=np.uint8)
    for t in range(length):
        x = 2 + 7 * (t % 4)
        frames[t, 8:20, x : x + 6] = 255
    state = rng.normal(size=(length, len(STATE_NAMES))).astype(np.float32)
    action = np.stack([demo_action(instruction, t) for t in range(length)])
    action[-1] = 0.0
    if progress is None:
        progress = np.linspace(0.0, 1.0, length, dtype=np.float32)
    return Episode(
        task=INSTRUCTIONS[instruction],
        frames={"front": frames},
        fps=20.0,
        state=state,
        action=action,
        progress=np.asarray(progress, dtype=np.float32),
        task_name=("push", "reach")[instruction],
    )


def write_synthetic(path, episodes):
    return write_dataset(
        path, episodes, progress=False, state_names=STATE_NAMES, action_names=["ee_dx", "ee_dy", "ee_dz", "gripper"]
    )


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vla_data")
    return write_synthetic(root / "demo", [synthetic_episode(i % 2, i) for i in range(4)])


def tiny_policy(**kw) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(VLA(VLAConfig(cameras=("front", "wrist"), **{**TINY, **kw})), device="cpu")


def random_obs(batch: int | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shape = () if batch is None else (batch,)
    return {
        "state": rng.normal(size=shape + (18,)).astype(np.float32),
        "pixels": {"front": rng.integers(0, 255, shape + (SIZE, SIZE, 3), dtype=np.uint8)},
        "task": INSTRUCTIONS[0] if batch is None else [INSTRUCTIONS[i % 2] for i in range(batch)],
    }


# -- the likelihood ---------------------------------------------------------------------------


def test_log_prob_is_the_sum_of_token_log_probs_by_hand():
    # One action dimension, two steps, four bins: a hand-computed categorical log-likelihood.
    logits = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]], [[2.0, 0.0, 0.0, 0.0]]]])  # (B=1, H=2, A=1, K=4)
    actions = torch.tensor([[[0.9], [-0.9]]])  # bins 3 and 0
    assert action_to_tokens(actions, 4).flatten().tolist() == [3, 0]
    norm1 = math.log(sum(math.exp(v) for v in (0, 1, 2, 3)))
    norm2 = math.log(math.exp(2) + 3)
    expected = (3 - norm1) + (2 - norm2)
    assert token_log_prob(logits, actions).item() == pytest.approx(expected, abs=1e-6)
    # A masked step does not count.
    only_first = token_log_prob(logits, actions, torch.tensor([[True, False]])).item()
    assert only_first == pytest.approx(3 - norm1, abs=1e-6)


def test_tokens_cover_the_action_range():
    k = 256
    edges = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 1.5, -3.0])
    tokens = action_to_tokens(edges, k)
    assert tokens.tolist() == [0, 0, 128, 255, 255, 255, 0]
    values = torch.linspace(-1, 1, 1001)
    assert (tokens_to_action(action_to_tokens(values, k), k) - values).abs().max() <= 1.0 / k + 1e-6


def test_greedy_chunk_is_at_least_as_likely_as_random_chunks():
    policy = tiny_policy()
    obs = random_obs(batch=3)
    greedy = policy.sample(obs, temperature=0.0)
    assert greedy.shape == (3, 2, 4) and np.all(np.abs(greedy) <= 1)
    lp_greedy = policy.log_prob(obs, greedy)
    rng = np.random.default_rng(1)
    for _ in range(5):
        lp_random = policy.log_prob(obs, rng.uniform(-1, 1, size=greedy.shape))
        assert torch.all(lp_greedy >= lp_random)
    # The log-prob is differentiable (policy gradients, DPO) and a single observation works too.
    lp_greedy.sum().backward()
    assert policy.model.trunk[-1].weight.grad is not None
    single = policy.log_prob(random_obs(), greedy[0])
    assert single.dim() == 0 and torch.isfinite(single)
    sampled = policy.sample(obs, temperature=1.0)
    assert sampled.shape == greedy.shape and np.all(np.abs(sampled) <= 1)


def test_act_executes_chunks_with_a_receding_horizon():
    policy = tiny_policy(chunk_size=4, execute_steps=2)
    calls = []
    original = policy.predict_chunk
    policy.predict_chunk = lambda obs: calls.append(1) or original(obs)
    policy.start_episode(INSTRUCTIONS[0])
    obs = random_obs()
    obs.pop("task")
    actions = [policy.act(obs) for _ in range(5)]
    assert len(calls) == 3 and all(a.shape == (4,) for a in actions)  # steps 0, 2, 4 re-plan
    policy.start_episode(INSTRUCTIONS[1])  # a new episode forgets the chunk in flight
    policy.act(obs)
    assert len(calls) == 4


def test_proprioception_is_what_a_real_arm_reports():
    from robot_bridge.policy_sources import PROPRIO_DIM

    env = sim.make("push", cameras=())
    try:
        names = env.unwrapped.state_names
    finally:
        env.close()
    config = VLAConfig()
    assert [names[i] for i in config.proprio_indices] == list(PROPRIO_NAMES)
    assert config.state_dim <= PROPRIO_DIM


# -- checkpoints ------------------------------------------------------------------------------


def assert_same_outputs(a: VLAPolicy, b: VLAPolicy) -> None:
    obs = random_obs(batch=2, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(a.logits(obs), b.logits(obs), rtol=0, atol=0)
    np.testing.assert_array_equal(a.predict_chunk(obs), b.predict_chunk(obs))


def test_save_load_gives_identical_outputs(tmp_path):
    policy = tiny_policy()
    path = policy.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert is_vla_checkpoint(path) and not list(tmp_path.glob("ckpt.tmp-*"))
    assert_same_outputs(policy, load_vla(path, device="cpu"))


def test_hf_backbone_checkpoint_needs_no_backbone_files(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    hf_dir = tmp_path / "hf_model"
    hf.save_pretrained(hf_dir)
    policy = tiny_policy(backbone=f"hf:{hf_dir}")
    key = next(k for k in hf.state_dict() if k.endswith("patch_embedding.weight"))
    torch.testing.assert_close(policy.model.backbone.tower.state_dict()[key], hf.state_dict()[key])
    path = policy.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(hf_dir)  # the checkpoint alone must suffice
    assert_same_outputs(policy, load_vla(path, device="cpu"))


# -- training ---------------------------------------------------------------------------------


def bc_config(data, out, **kw) -> BCConfig:
    base = dict(
        data=tuple(str(d) for d in data),
        out=out,
        cameras="front,wrist",
        image_size=SIZE,
        chunk_size=2,
        execute_steps=1,
        embed_dim=32,
        hidden_dim=64,
        batch_size=16,
        steps=150,
        lr=3e-3,
        augment_shift=0,
        save_every=50,
        log_every=10,
        device="cpu",
        progress_bar=False,
    )
    base.update(kw)
    return BCConfig(**base)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bc_trains_on_cuda_and_the_checkpoint_loads_on_cpu(synthetic_data, tmp_path):
    summary = train_bc(bc_config([synthetic_data], tmp_path / "bc", steps=20, device="cuda"))
    assert summary["final_loss"] < summary["first_loss"]
    assert load_vla(tmp_path / "bc", device="cpu").device.type == "cpu"


def test_bc_learns_the_demonstrated_actions(synthetic_data, tmp_path):
    summary = train_bc(bc_config([synthetic_data], tmp_path / "bc"))
    assert summary["final_loss"] < 0.35 * summary["first_loss"], summary
    policy = load_vla(tmp_path / "bc", device="cpu")
    data = load_bc_data([synthetic_data], ("front", "wrist"), SIZE, 2, progress_bar=False)
    obs = {"state": np.zeros((len(data), 18), np.float32), "task": [data.instructions[i] for i in data.text_index]}
    obs["state"][:, list(data.proprio_indices)] = data.proprio.numpy()
    obs["pixels"] = {"front": data.images[:, 0].permute(0, 2, 3, 1).numpy()}
    greedy = policy.predict_chunk(obs)[:, 0]
    demo = data.actions[:, 0].numpy()
    # Right to within a few of the 256 bins on (nearly) every training state, gripper sign included.
    close = np.all(np.abs(greedy - demo) <= 4 * 2 / 256, axis=1)
    assert close.mean() >= 0.9, (close.mean(), greedy[~close][:3], demo[~close][:3])
    untrained = tiny_policy(chunk_size=2, execute_steps=1, embed_dim=32, hidden_dim=64, conv_channels=(16, 32, 64, 64))
    assert np.all(np.abs(untrained.predict_chunk(obs)[:, 0] - demo) <= 4 * 2 / 256, axis=1).mean() < 0.2


def test_ctrl_c_checkpoints_and_resume_gives_the_weights_of_an_uninterrupted_run(synthetic_data, tmp_path, monkeypatch):
    import policies.vla.train_bc as train_module

    straight = tmp_path / "straight"
    train_bc(bc_config([synthetic_data], straight, steps=6, save_every=4, augment_shift=2))
    split = tmp_path / "split"
    real_loss, calls = train_module.batch_loss, []

    def interrupted_after_three_steps(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "batch_loss", interrupted_after_three_steps)
    with pytest.raises(KeyboardInterrupt):
        train_bc(bc_config([synthetic_data], split, steps=6, save_every=4, augment_shift=2))
    assert [p.name for p in (split / "checkpoints").iterdir()] == ["step_00000003"]  # saved on Ctrl-C
    monkeypatch.setattr(train_module, "batch_loss", real_loss)
    train_bc(bc_config([synthetic_data], split, steps=6, save_every=4, augment_shift=2, resume=True))
    assert (straight / "model.safetensors").read_bytes() == (split / "model.safetensors").read_bytes()
    assert sorted(p.name for p in (split / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]
    assert (split / "tb").is_dir()


def test_rabc_weights_follow_progress_gains(tmp_path):
    rising = np.linspace(0, 1, 9)
    regressing = np.array([0.0, 0.2, 0.4, 0.6, 0.5, 0.3, 0.1, 0.0, 0.0])
    w_rise, w_fail = progress_gain_weights([rising, regressing], chunk_size=2)
    assert len(w_rise) == len(w_fail) == 8
    assert np.all(w_fail[3:] == 0), "chunks that undo progress get weight 0"
    assert np.all(w_fail[:3] > 0) and np.all(w_rise > 0)
    # Proportional to the gain, mean 1 over all samples.
    assert np.mean(np.concatenate([w_rise, w_fail])) == pytest.approx(1.0)
    assert w_fail[0] / w_rise[0] == pytest.approx(0.4 / 0.25)
    with pytest.raises(ValueError, match="no chunk"):
        progress_gain_weights([np.zeros(5)], chunk_size=2)

    # From a dataset's ground-truth progress and from a reward model's sidecar: the same weights.
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_synthetic(
        tmp_path / "mixed", [synthetic_episode(0, 0, progress=rising), synthetic_episode(0, 1, progress=regressing)]
    )
    oracle = load_bc_data([root], ("front",), SIZE, 2, weighting="progress", progress_bar=False)
    np.testing.assert_allclose(oracle.weights.numpy(), np.concatenate([w_rise, w_fail]), rtol=1e-5)
    frames = np.arange(9)
    # The sidecar scores every other frame only; Φ in between is interpolated.
    keep = frames % 2 == 0
    table = pa.table(
        {
            "index": np.concatenate([frames, frames + 9])[np.tile(keep, 2)],
            "episode_index": np.repeat([0, 1], 9)[np.tile(keep, 2)],
            "frame_index": np.tile(frames, 2)[np.tile(keep, 2)],
            "phi.grm": np.concatenate([rising, regressing])[np.tile(keep, 2)].astype(np.float32),
        }
    )
    pq.write_table(table, tmp_path / "progress.parquet")
    model = load_bc_data(
        [root], ("front",), SIZE, 2, weighting="progress", progress=[tmp_path / "progress.parquet"], progress_bar=False
    )
    assert np.all(model.weights.numpy()[8 + 3 :] == 0)
    assert np.all(model.weights.numpy()[:8] > 0)


# -- running a checkpoint everywhere ------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = VLA(VLAConfig(cameras=("front", "wrist"), **{**TINY, "chunk_size": 4, "execute_steps": 2}))
    return VLAPolicy(model, device="cpu").save_pretrained(tmp_path_factory.mktemp("vla") / "ckpt")


def test_prism_record_and_prism_eval_run_a_vla_checkpoint(checkpoint, tmp_path, capsys):
    from episodes import open_dataset
    from policies.evaluate import main as eval_main
    from policies.record import main as record_main

    out = tmp_path / "rollouts"
    assert (
        record_main(
            [
                "--policy",
                f"vla:{checkpoint}",
                "--task",
                "reach",
                "--episodes",
                "1",
                "--cameras",
                "front",
                "--size",
                "32",
                "--max-steps",
                "12",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ds = open_dataset(out)
    assert ds.num_episodes == 1 and set(ds.cameras) == {"front", "wrist"}  # the policy's views are rendered
    ep = ds.load_episode(0)
    assert ep.meta["policy"] == "vla" and ep.length == 13 and np.all(np.abs(ep.action) <= 1)

    assert eval_main(["--run", str(checkpoint), "--task", "reach", "--episodes", "1", "--seed", "7"]) == 0
    report = json.loads((checkpoint / "eval" / "eval_reach.json").read_text())
    assert report["episodes"] == 1 and report["task"] == "reach" and report["mean_length"] == 50
    assert "eval_reach.json" in capsys.readouterr().out
    assert is_vla_checkpoint(checkpoint)  # the report sits beside the weights, the checkpoint still loads
    load_vla(checkpoint, device="cpu")


def test_ros_bridge_loads_a_vla_checkpoint(checkpoint):
    from robot_bridge.policy_sources import PROPRIO_DIM, load_bridge_policy, proprio_state

    for spec in (str(checkpoint), f"vla:{checkpoint}"):
        bridge = load_bridge_policy(spec, device="cpu")
        assert bridge.cameras == ("front", "wrist") and bridge.action_mode == "ee_delta"
        assert 0 < bridge.state_dim <= PROPRIO_DIM and not bridge.needs_privileged
    bridge.reset({"instruction": "reach the red ball", "seed": 0})
    assert bridge.extra["vla"].instruction == "reach the red ball"
    rng = np.random.default_rng(0)
    # What the policy node builds: camera frames, the proprioceptive prefix, the instruction.
    state = proprio_state(rng.normal(size=7), rng.normal(size=7), 0.04, [0.5, 0.0, 0.3])[: bridge.state_dim]
    obs = {
        "pixels": {c: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for c in bridge.cameras},
        "state": state,
        "task": "reach the red ball",
    }
    action = bridge.act(obs)
    assert action.shape == (4,) and np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1)


# -- bad input --------------------------------------------------------------------------------


def run_vla_cli(argv, capsys):
    from policies.vla.cli import main

    code = main([*argv, "--no-progress-bar"] if len(argv) > 1 else argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--chunk-size", "0"], "--chunk-size"),
        (["--execute-steps", "9"], "--execute-steps"),
        (["--lr", "nan"], "--lr"),
        (["--backbone", "resnet"], "backbone"),
    ],
)
def test_bad_options_are_one_line_errors(synthetic_data, tmp_path, capsys, extra, needle):
    code, err = run_vla_cli(["bc", "--data", str(synthetic_data), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0] and err[0].startswith("prism-vla bc: error:")
    assert not (tmp_path / "o").exists()


def test_bad_inputs_are_one_line_errors(synthetic_data, checkpoint, tmp_path, capsys):
    code, err = run_vla_cli(["bc", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(err) == 1 and "missing" in err[0]
    code, err = run_vla_cli(["bc", "--data", str(synthetic_data), "--out", str(synthetic_data / "inside")], capsys)
    assert code == 2 and len(err) == 1 and "--out" in err[0]
    code, err = run_vla_cli(
        [
            "rabc",
            "--data",
            str(synthetic_data),
            "--out",
            str(tmp_path / "o"),
            "--progress",
            str(tmp_path / "nope.parquet"),
        ],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "nope.parquet" in err[0]
    code, err = run_vla_cli(["ppo"], capsys)
    assert code == 2 and len(err) == 1 and "unknown command" in err[0]
    assert not (tmp_path / "o").exists()

    from policies.evaluate import main as eval_main

    assert eval_main(["--run", str(checkpoint), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--task" in err[0]

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    assert eval_main(["--run", str(broken), "--task", "reach", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors" in err[0]


def test_resume_refuses_changed_options(synthetic_data, tmp_path, capsys):
    out = tmp_path / "run"
    train_bc(bc_config([synthetic_data], out, steps=2, save_every=2))
    code, err = run_vla_cli(
        [
            "bc",
            "--data",
            str(synthetic_data),
            "--out",
            str(out),
            "--resume",
            "--chunk-size",
            "3",
            "--cameras",
            "front,wrist",
            "--image-size",
            str(SIZE),
        ],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "--chunk-size" in err[0]
    code, err = run_vla_cli(["bc", "--data", str(synthetic_data), "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1 and "--resume" in err[0]
