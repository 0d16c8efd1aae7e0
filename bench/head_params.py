"""Trainable parameters of the softmax-regression variant, counted without downloading weights.

    python bench/head_params.py [--rank 128]

Each model is instantiated on the meta device from its published dimensions (the released
config.json of Qwen2.5-VL-7B-Instruct and Qwen2-VL-7B-Instruct: text hidden 3584, 28 layers,
28 heads, 4 KV heads, MLP 18944, vocabulary 152064 rows; vision tower 32 blocks of width 1280),
then built exactly as training builds it: the head attached, LoRA on every linear layer of the
language model (LLaMA-Factory's `lora_target: all` with the vision tower frozen) and the head
modules in `modules_to_save`. The tiny test model is counted the same way.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEXT_7B = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, max_position_embeddings=128000, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
    tie_word_embeddings=False,
)


def qwen25_vl_7b():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                  fullatt_block_indexes=[7, 15, 23, 31], window_size=112, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    return Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig(text_config=TEXT_7B, vision_config=vision,
                                                                tie_word_embeddings=False)


def qwen2_vl_7b():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vision = dict(depth=32, embed_dim=1280, mlp_ratio=4, num_heads=16, hidden_size=3584, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    return Qwen2VLForConditionalGeneration, Qwen2VLConfig(text_config=TEXT_7B, vision_config=vision,
                                                          tie_word_embeddings=False)


def tiny():
    from transformers import AutoConfig, AutoModelForImageTextToText

    from iovqa_plugin.demo.tiny_model import build_tiny_model

    path = "work/tiny-qwen2.5-vl"
    if not os.path.isfile(os.path.join(path, "config.json")):
        build_tiny_model(path)
    return AutoModelForImageTextToText, AutoConfig.from_pretrained(path)


def count(model_class, config, rank: int) -> dict[str, int]:
    from types import SimpleNamespace

    import torch
    from llamafactory.model.model_utils.misc import find_all_linear_modules
    from llamafactory.model.model_utils.visual import patch_target_modules
    from peft import LoraConfig, get_peft_model

    from iovqa_plugin.train.head import EMBEDDING_MODULE, HEAD_MODULE, attach_head

    with torch.device("meta"):
        model = model_class._from_config(config) if hasattr(model_class, "_from_config") else model_class.from_config(config)
    attach_head(model)
    # as LLaMA-Factory builds `lora_target: all` with the vision tower and projector frozen (its defaults)
    frozen = SimpleNamespace(freeze_vision_tower=True, freeze_multi_modal_projector=True, freeze_language_model=False)
    targets = patch_target_modules(model, frozen, find_all_linear_modules(model, freeze_vision_tower=True))
    lora = LoraConfig(r=rank, lora_alpha=32, target_modules=targets, modules_to_save=[HEAD_MODULE, EMBEDDING_MODULE])
    peft_model = get_peft_model(model, lora)
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    return {
        "lora": sum(c for n, c in trainable.items() if "lora_" in n),
        "head": sum(c for n, c in trainable.items() if f".{HEAD_MODULE}." in n),
        "label_row": sum(c for n, c in trainable.items() if f".{EMBEDDING_MODULE}." in n),
        "trainable": sum(trainable.values()),
        "total_base": sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" not in n and "iovqa_" not in n),
        "embedding_matrix": model.get_input_embeddings().weight.numel(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, default=128)
    args = parser.parse_args()
    print(f"LoRA r{args.rank} on all linear layers of the language model; head MLP hidden -> hidden -> 5")
    print(f"{'model':22s} {'LoRA':>13s} {'head':>11s} {'<LABEL_1>':>10s} {'trainable':>13s} {'base':>15s}  (vs whole embedding matrix)")
    for name, build, rank in (("tiny Qwen2.5-VL (r8)", tiny, 8), ("Qwen2.5-VL-7B", qwen25_vl_7b, args.rank),
                              ("Qwen2-VL-7B", qwen2_vl_7b, args.rank)):
        model_class, config = build()
        c = count(model_class, config, rank)
        print(f"{name:22s} {c['lora']:13,d} {c['head']:11,d} {c['label_row']:10,d} {c['trainable']:13,d} "
              f"{c['total_base']:15,d}  ({c['embedding_matrix']:,d})")


if __name__ == "__main__":
    main()
