"""The pessimistic potential Φ − k·spread: never above Φ, Φ itself at k = 0, and it ranks states
the model over-rates with high spread below the truly good ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from policies.shaping import ModelPotential, RewardSpec, make_potential
from reward_models.base import ProgressModel, hop_from_progress
from reward_models.confidence import pessimistic_progress

# State id -> (what the model believes Φ is, the spread it claims, the true progress).
# States 3 and 4 are "traps": over-rated (0.8, 0.85 against a true 0.2, 0.3) and uncertain.
BELIEF = np.array([0.0, 0.6, 0.7, 0.8, 0.85])
HOP_STD = np.array([0.0, 0.02, 0.03, 0.35, 0.3])
TRUE = np.array([0.0, 0.6, 0.7, 0.2, 0.3])
GOOD, TRAPS = [1, 2], [3, 4]


class BeliefModel(ProgressModel):
    """Hops between believed progress values, with the claimed std of the state reached."""

    model_id = "belief"
    cameras = ("front",)

    def encode(self, obs):
        return np.asarray(obs["state"], dtype=np.int64).reshape(-1)

    def hop_from_embeddings(self, before, after, tasks: Sequence[str], start=None, goal=None):
        return hop_from_progress(BELIEF[np.asarray(before)], BELIEF[np.asarray(after)])

    def hop_and_std_from_embeddings(self, before, after, tasks, start=None, goal=None):
        return self.hop_from_embeddings(before, after, tasks), HOP_STD[np.asarray(after)]


def obs(states) -> dict[str, np.ndarray]:
    states = np.asarray(states)
    return {"front": np.zeros((len(states), 4, 4, 3), np.uint8), "state": states}


def potential_after_one_step(k: float) -> np.ndarray:
    """Φ_p of each state 1..4, reached in one step from the start state 0 (one env per state)."""
    pot = ModelPotential(BeliefModel(), n=4, cameras=("front",), pessimism=k)
    pot.reset(obs([0, 0, 0, 0]), ["t"] * 4)
    phi, _, _ = pot.step(obs([1, 2, 3, 4]), np.zeros(4, dtype=bool), None, None)
    return phi


def test_pessimistic_is_never_above_plain_and_equal_at_zero():
    rng = np.random.default_rng(0)
    phi, std = rng.uniform(0, 1, 1000), rng.uniform(0, 0.5, 1000)
    for k in (0.5, 1.0, 3.0):
        p = pessimistic_progress(phi, std, k)
        assert (p <= phi).all() and (p >= 0).all()
    np.testing.assert_array_equal(pessimistic_progress(phi, std, 0.0), phi)
    # Through the tracker: k = 0 is the plain potential bit for bit.
    np.testing.assert_array_equal(potential_after_one_step(0.0), potential_after_one_step(0.0))
    plain = ModelPotential(BeliefModel(), n=4, cameras=("front",))
    plain.reset(obs([0, 0, 0, 0]), ["t"] * 4)
    np.testing.assert_array_equal(
        plain.step(obs([1, 2, 3, 4]), np.zeros(4, dtype=bool), None, None)[0], potential_after_one_step(0.0)
    )
    assert (potential_after_one_step(1.0) <= potential_after_one_step(0.0)).all()


def test_pessimism_ranks_overrated_uncertain_states_below_truly_good_ones():
    plain, pessimistic = potential_after_one_step(0.0), potential_after_one_step(1.0)
    good, traps = [s - 1 for s in GOOD], [s - 1 for s in TRAPS]
    # The plain potential prefers the traps (what an RL policy learns to farm) ...
    assert plain[traps].min() > plain[good].max()
    # ... the pessimistic one ranks them as the true progress does.
    assert pessimistic[traps].max() < pessimistic[good].min()
    assert np.argsort(pessimistic).tolist()[-2:] == [0, 1]  # the two best are the truly good states
    assert np.allclose(pessimistic[good], plain[good], atol=0.1)  # confident states barely change


def test_reward_spec_suffix():
    spec = RewardSpec.parse("grm:ckpt/grm+pessimism=0.5")
    assert (spec.potential, spec.model_spec, spec.pessimism, spec.naive) == ("model", "grm:ckpt/grm", 0.5, False)
    assert RewardSpec.parse("grm").pessimism == 0.0
    assert RewardSpec.parse("naive-delta:grm+pessimism=2").naive
    for bad, what in (
        ("oracle+pessimism=1", "reward-model potentials"),
        ("grm+pessimism=-1", ">= 0"),
        ("grm+pessimism=lots", "number"),
        ("grm+pessimism=nan", "finite"),
    ):
        with pytest.raises(ValueError, match=what):
            RewardSpec.parse(bad)
    pot = make_potential(RewardSpec.parse("grm:x+pessimism=1.5"), n=2, model=BeliefModel())
    assert isinstance(pot, ModelPotential) and pot.pessimism == 1.5
