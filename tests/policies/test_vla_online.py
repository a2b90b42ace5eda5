"""Reward-driven post-training of the VLA: grouped online rollouts through the shaping wrapper,
the PPO, DPO and RFT updates (what they learn from a fixed batch), and ``prism-vla rl`` / ``dpo`` /
``rft`` end to end on the sim with exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies.vla.cli import main as vla_main
from policies.vla.configuration_vla import VLAConfig
from policies.vla.modeling_vla import VLA, VLAPolicy, load_vla_module, token_log_probs
from policies.vla.online import (
    Decision,
    Episode,
    collect,
    group_relative_advantages,
    make_online_env,
    to_batch,
    token_kl,
)
from policies.vla.train_online import (
    DPOConfig,
    RFTConfig,
    RLConfig,
    dpo_update,
    kept_episodes,
    ppo_update,
    preference_pairs,
    rft_update,
)

SIZE = 32
TINY = dict(
    cameras=("front", "wrist"),
    image_size=SIZE,
    conv_channels=(8, 16),
    embed_dim=32,
    hidden_dim=64,
    chunk_size=4,
    execute_steps=2,
)
TASK = "reach the red ball"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_policy(seed: int = 0) -> VLAPolicy:
    torch.manual_seed(seed)
    return VLAPolicy(VLA(VLAConfig(**TINY)), device="cpu")


def synthetic_episode(group: int, rewards: list[list[float]], seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    ep = Episode(group=group, seed=group, task=TASK)
    for r in rewards:
        ep.decisions.append(
            Decision(
                images={c: rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for c in ("front", "wrist")},
                state=rng.normal(size=18).astype(np.float32),
                chunk=rng.uniform(-1, 1, (4, 4)).astype(np.float32),
                rewards=list(r),
            )
        )
    ep.shaped_return = float(sum(sum(r) for r in rewards))
    ep.length = sum(len(r) for r in rewards)
    return ep


def test_reward_to_go_is_discounted_per_step_and_the_baseline_is_the_group_mean():
    a = synthetic_episode(0, [[1.0, 0.0], [0.0, 2.0]])
    b = synthetic_episode(0, [[0.0, 0.0]], seed=1)  # ended after one decision: counts 0 later
    c = synthetic_episode(1, [[5.0, 5.0]], seed=2)  # alone in its group: advantage 0
    batch = to_batch([a, b, c], gamma=0.5, chunk_size=4)
    # a: decision 1 = 0 + 0.5*2 = 1; decision 0 = 1 + 0.5*0 + 0.25*1 = 1.25
    np.testing.assert_allclose(batch.returns, [1.25, 1.0, 0.0, 7.5])
    np.testing.assert_array_equal(batch.mask[:, :3], [[True, True, False]] * 4)
    raw = np.array([1.25 - 0.625, 1.0 - 0.5, 0.0 - 0.625, 0.0])
    np.testing.assert_allclose(group_relative_advantages(batch, [a, b, c]), raw / raw.std())


def test_ppo_update_raises_good_chunks_and_lowers_bad_ones_and_the_anchor_holds_it_back():
    episodes = [synthetic_episode(0, [[1.0, 1.0]] * 3, seed=s) for s in range(4)]
    batch = to_batch(episodes, gamma=0.99, chunk_size=4)
    advantages = np.where(batch.episode % 2 == 0, 1.0, -1.0)

    def logp(policy):
        with torch.no_grad():
            lp = token_log_probs(
                policy.logits(batch.obs(slice(None))), torch.as_tensor(batch.chunks), torch.as_tensor(batch.mask)
            )
        return lp.sum(dim=(1, 2)).numpy()

    kls = {}
    for kl_coef in (0.0, 5.0):
        policy, reference = tiny_policy(), tiny_policy()
        before = logp(policy)
        cfg = RLConfig(init=None, out=None, epochs=8, minibatch=6, kl_coef=kl_coef, lr=1e-3)
        optimizer = torch.optim.Adam(policy.model.parameters(), lr=cfg.lr)
        ppo_update(policy, reference, optimizer, batch, advantages, cfg, torch.Generator().manual_seed(0))
        change = logp(policy) - before
        assert change[advantages > 0].mean() > 0.5 and change[advantages < 0].mean() < -0.5
        with torch.no_grad():
            obs = batch.obs(slice(None))
            kls[kl_coef] = float(token_kl(policy.logits(obs), reference.logits(obs), torch.as_tensor(batch.mask)))
    assert 0 < kls[5.0] < kls[0.0]


def test_dpo_update_prefers_the_chosen_episode_against_the_reference():
    episodes = [
        synthetic_episode(0, [[0.5, 0.5]] * 3, seed=1),
        synthetic_episode(0, [[0.0, 0.0]] * 3, seed=2),
        synthetic_episode(1, [[0.2]] * 2, seed=3),
        synthetic_episode(1, [[0.9]] * 2, seed=4),
    ]
    pairs = preference_pairs(episodes, "reward", np.random.default_rng(0))
    assert pairs == [(0, 1), (3, 2)]
    batch = to_batch(episodes, gamma=0.99, chunk_size=4)
    policy, reference = tiny_policy(), tiny_policy()
    cfg = DPOConfig(init=None, out=None, dpo_steps=10, pairs_per_step=2, lr=1e-3)
    stats = dpo_update(
        policy,
        reference,
        torch.optim.Adam(policy.model.parameters(), lr=cfg.lr),
        batch,
        pairs,
        len(episodes),
        cfg,
        np.random.default_rng(0),
    )
    assert stats["pairs"] == 2 and stats["reward_margin"] > 0
    with torch.no_grad():
        lp = token_log_probs(
            policy.logits(batch.obs(slice(None))), torch.as_tensor(batch.chunks), torch.as_tensor(batch.mask)
        ).sum(dim=(1, 2))
        rp = token_log_probs(
            reference.logits(batch.obs(slice(None))), torch.as_tensor(batch.chunks), torch.as_tensor(batch.mask)
        ).sum(dim=(1, 2))
    gain = np.bincount(batch.episode, weights=(lp - rp).numpy())
    assert gain[0] > gain[1] and gain[3] > gain[2]


def test_ties_give_no_pair_and_the_random_control_pairs_within_a_group():
    tie = [synthetic_episode(0, [[0.3]]), synthetic_episode(0, [[0.3]], seed=1)]
    assert preference_pairs(tie, "reward", np.random.default_rng(0)) == []
    groups = [synthetic_episode(g, [[float(k)]], seed=3 * g + k) for g in range(3) for k in range(3)]
    pairs = preference_pairs(groups, "random", np.random.default_rng(0))
    assert len(pairs) == 3 and all(groups[a].group == groups[b].group and a != b for a, b in pairs)


def test_rft_keeps_the_best_episodes_that_beat_their_group_and_the_control_keeps_random_ones():
    groups = [
        synthetic_episode(0, [[0.1]], seed=1),
        synthetic_episode(0, [[0.9]], seed=2),
        synthetic_episode(0, [[0.5]], seed=3),
        synthetic_episode(1, [[0.0]], seed=4),  # a group of ties (all failures under sparse): none kept
        synthetic_episode(1, [[0.0]], seed=5),
    ]
    assert kept_episodes(groups, 1, "reward", np.random.default_rng(0)) == [1]
    assert kept_episodes(groups, 2, "reward", np.random.default_rng(0)) == [1]  # 0.5 is only the group mean
    random = kept_episodes(groups, 1, "random", np.random.default_rng(0))
    assert len(random) == 2 and {groups[i].group for i in random} == {0, 1}


def test_rft_update_imitates_the_kept_chunks_and_the_anchor_holds_it_back():
    episodes = [synthetic_episode(0, [[1.0, 1.0]] * 3, seed=s) for s in range(2)]
    buffer = to_batch(episodes, gamma=0.99, chunk_size=4)
    obs, chunks, mask = buffer.obs(slice(None)), torch.as_tensor(buffer.chunks), torch.as_tensor(buffer.mask)
    gains, kls = {}, {}
    for kl_coef in (0.0, 5.0):
        policy, reference = tiny_policy(), tiny_policy()
        before = token_log_probs(policy.logits(obs), chunks, mask).sum().item()
        cfg = RFTConfig(init=None, out=None, sft_steps=30, minibatch=4, kl_coef=kl_coef)
        stats = rft_update(
            policy,
            reference,
            torch.optim.Adam(policy.model.parameters(), lr=1e-3),
            buffer,
            cfg,
            torch.Generator().manual_seed(0),
        )
        assert stats["buffer_decisions"] == len(buffer) and np.isfinite(stats["nll"])
        with torch.no_grad():
            gains[kl_coef] = token_log_probs(policy.logits(obs), chunks, mask).sum().item() - before
            kls[kl_coef] = float(token_kl(policy.logits(obs), reference.logits(obs), mask))
    assert gains[0.0] > 0 and gains[5.0] > 0  # the kept chunks became likelier
    assert 0 < kls[5.0] < kls[0.0]
    empty = rft_update(policy, reference, None, None, RFTConfig(init=None, out=None), torch.Generator())
    assert empty["buffer_decisions"] == 0


def test_grouped_rollouts_share_their_start_state_through_the_shaping_wrapper():
    policy = tiny_policy()
    venv = make_online_env(policy, "reach", "oracle", n_envs=4, gamma=0.99)
    try:
        episodes = collect(venv, policy, [11, 12], group_size=2, temperature=1.0)
    finally:
        venv.close()
    first = [ep.decisions[0].state for ep in episodes]
    np.testing.assert_array_equal(first[0], first[1])
    np.testing.assert_array_equal(first[2], first[3])
    assert not np.array_equal(first[0], first[2])
    assert not np.array_equal(episodes[0].decisions[0].chunk, episodes[1].decisions[0].chunk)  # sampled
    for ep in episodes:
        assert ep.length == sum(len(d.rewards) for d in ep.decisions) and 1 <= ep.length <= 50
        assert all(1 <= len(d.rewards) <= TINY["execute_steps"] for d in ep.decisions)
        # oracle shaping telescopes: the undiscounted shaped return is near success + Φ_T - Φ_0 (γ = .99)
        assert abs(ep.shaped_return - (float(ep.success) + (0.0 if ep.success else ep.final_progress))) < 0.6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_policy().save_pretrained(tmp_path_factory.mktemp("vla_online") / "bc")


def run(argv, capsys):
    code = vla_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prism_vla_rl_runs_resumes_exactly_and_dpo_runs(checkpoint, tmp_path, capsys):
    common = [
        "--init",
        str(checkpoint),
        "--task",
        "reach",
        "--reward",
        "oracle",
        "--groups",
        "1",
        "--group-size",
        "2",
        "--eval-episodes",
        "2",
        "--eval-every",
        "1",
        "--device",
        "cpu",
        "--no-progress-bar",
    ]
    code, out, err = run(["rl", *common, "--out", str(tmp_path / "straight"), "--episodes", "4"], capsys)
    assert code == 0, err
    assert "4 online episodes on reach" in out
    curve = (tmp_path / "straight" / "curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 3 and curve[0].startswith("iteration,episodes")  # start + 2 iterations
    assert (tmp_path / "straight" / "curve.png").stat().st_size > 0
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["episodes"] == 4 and summary["iterations"] == 2

    assert run(["rl", *common, "--out", str(tmp_path / "resumed"), "--episodes", "2"], capsys)[0] == 0
    assert run(["rl", *common, "--out", str(tmp_path / "resumed"), "--episodes", "4", "--resume"], capsys)[0] == 0
    a, b = load_vla_module(tmp_path / "straight"), load_vla_module(tmp_path / "resumed")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    start = load_vla_module(checkpoint)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), start.state_dict().values(), strict=True))

    code, out, err = run(
        [
            "dpo",
            *common,
            "--out",
            str(tmp_path / "dpo"),
            "--episodes",
            "2",
            "--reward",
            "sparse",
            "--ranking",
            "random",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "dpo" / "summary.json").read_text())["algorithm"] == "dpo"


def test_prism_vla_rft_resumes_exactly_with_its_buffer(checkpoint, tmp_path, capsys):
    common = ["--init", str(checkpoint), "--task", "reach", "--reward", "oracle", "--groups", "1"]
    common += ["--group-size", "2", "--eval-episodes", "2", "--device", "cpu", "--no-progress-bar"]
    common += ["--sft-steps", "4", "--minibatch", "8", "--buffer-size", "10"]
    code, out, err = run(["rft", *common, "--out", str(tmp_path / "straight"), "--episodes", "6"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["algorithm"] == "rft" and summary["episodes"] == 6
    kept = [row["kept"] for row in summary["curve"][1:]]
    assert all(k in (0, 1) for k in kept) and sum(kept) >= 1  # oracle progress rarely ties exactly
    assert max(row["buffer_decisions"] for row in summary["curve"][1:]) <= 10  # the cap holds
    assert run(["rft", *common, "--out", str(tmp_path / "resumed"), "--episodes", "2"], capsys)[0] == 0
    code, _, err = run(["rft", *common, "--out", str(tmp_path / "resumed"), "--episodes", "6", "--resume"], capsys)
    assert code == 0, err
    a, b = load_vla_module(tmp_path / "straight"), load_vla_module(tmp_path / "resumed")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--group-size", "1"], "--group-size"),
        (["--reward", "bogus:thing"], "reward"),
        (["--task", "juggle"], "juggle"),
    ],
)
def test_bad_options_are_one_line_errors(checkpoint, tmp_path, capsys, extra, needle):
    code, _, err = run(["rl", "--init", str(checkpoint), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_init_must_be_a_vla_checkpoint(tmp_path, capsys):
    code, _, err = run(["dpo", "--init", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a VLA checkpoint" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_rl_dpo_and_rft_updates():
    """The VLA post-trains on a GPU: a PPO, a DPO and an RFT update on cuda."""
    episodes = [synthetic_episode(g, [[1.0, 0.0]] * 2, seed=g) for g in (0, 0)]
    batch = to_batch(episodes, gamma=0.99, chunk_size=4)
    torch.manual_seed(0)
    policy, reference = (VLAPolicy(VLA(VLAConfig(**TINY)), device="cuda") for _ in range(2))
    assert policy.device.type == "cuda"
    optimizer = torch.optim.Adam(policy.model.parameters(), lr=1e-3)
    stats = ppo_update(
        policy,
        reference,
        optimizer,
        batch,
        np.array([1.0, -1.0, 1.0, -1.0]),
        RLConfig(init=None, out=None, epochs=1),
        torch.Generator().manual_seed(0),
    )
    assert np.isfinite(stats["policy_loss"])
    out = dpo_update(
        policy,
        reference,
        optimizer,
        batch,
        [(0, 1)],
        2,
        DPOConfig(init=None, out=None, dpo_steps=1),
        np.random.default_rng(0),
    )
    assert np.isfinite(out["dpo_loss"])
    rft = rft_update(
        policy,
        reference,
        optimizer,
        batch,
        RFTConfig(init=None, out=None, sft_steps=1),
        torch.Generator().manual_seed(0),
    )
    assert np.isfinite(rft["nll"])
