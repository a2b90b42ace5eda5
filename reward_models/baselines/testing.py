"""Tiny random stand-ins for the real baseline weights, built fully offline.

Real weights cannot be downloaded here, so tests and benchmarks build *tiny random* models with
the real architectures and file layouts, save them, and load them back through the same code
paths a user's real checkpoint takes (``load_progress_model("clip:...")``, ``"vlm:<dir>"``...).
Their scores are meaningless; loading, batching, prompting and parsing are not.
"""

from __future__ import annotations

import json
from pathlib import Path

_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_CORPUS = (
    "The robot arm pushes the red block to the goal. Frame 1: 20% Frame 2: 85% complete. "
    "ANSWER: 3 <score>+35%</score> <score>-10%</score> <score>0%</score> percent task reach push pick place"
)


def build_tiny_clip(folder: str | Path) -> tuple[Path, Path]:
    """A tiny open_clip ViT (config JSON + random weights). Returns ``(config_json, weights)``;
    load with ``clip:<config_json>:<weights>``."""
    import open_clip  # open_clip and torch (learn extra): test fixtures build models only on demand
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    cfg_path = folder / "tiny-clip-vit.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-vit")
    weights = folder / "tiny-clip-vit.pt"
    torch.save(model.state_dict(), weights)
    return cfg_path, weights


def build_tiny_qwen_vl(folder: str | Path, version: str = "2.5", seed: int = 0) -> Path:
    """A tiny random Qwen2-VL / Qwen2.5-VL (``version`` ``"2"`` / ``"2.5"``) with its processor
    (a small byte-level BPE tokenizer trained here, image + video processors, chat template),
    saved as a transformers model directory."""
    import torch  # torch, tokenizers, transformers: optional and slow
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    folder = Path(folder)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56)
    video_processor = Qwen2VLVideoProcessor()
    text_cfg = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        bos_token_id=ids("<|im_start|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    common = dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    if version == "2.5":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

        vision = dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            fullatt_block_indexes=[0],
            window_size=56,
        )
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=text_cfg, vision_config=vision, **common)
        )
        processor = Qwen2_5_VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=_CHAT_TEMPLATE,
        )
    elif version == "2":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        vision = dict(
            depth=1,
            embed_dim=32,
            hidden_size=32,
            mlp_ratio=2,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text_cfg, vision_config=vision, **common))
        processor = Qwen2VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=_CHAT_TEMPLATE,
        )
    else:
        raise ValueError(f"version must be '2' or '2.5', got {version!r}")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
