"""Vision-language-action policies: camera views + instruction + proprioception -> a chunk of
``ee_delta`` actions as discretised tokens with an exact log-likelihood (OpenVLA-style bins).

* :mod:`policies.vla.configuration_vla` -- :class:`VLAConfig`, the architecture in ``config.json``;
* :mod:`policies.vla.modeling_vla` -- the network, ``log_prob`` / ``sample`` / ``act``, checkpoints;
* :mod:`policies.vla.data` -- training samples from LeRobot v3 datasets, RA-BC progress weights;
* :mod:`policies.vla.train_bc` -- ``prism-vla bc`` / ``rabc`` (resumable, atomic checkpoints);
* :mod:`policies.vla.rollout` -- ``prism-eval`` on a VLA checkpoint.

Heavy modules (torch, transformers) load on first use of their names.
"""

from __future__ import annotations

from policies.vla.configuration_vla import POLICY_TYPE, VLAConfig, is_vla_checkpoint

__all__ = ["POLICY_TYPE", "VLAConfig", "is_vla_checkpoint"]
