"""Tiny Qwen3-VL and Qwen3.5 models with the real Qwen vocabulary, built offline.

The later Qwen families, built like ``tiny_model.build_tiny_model`` builds a
Qwen2.5-VL: Qwen's byte-level BPE (one token per digit) with the family's
added tokens, a randomly initialised model (2 text layers, hidden size 64),
and a processor whose limits keep the CPU recipes' 224x224 frames at their
size; saved with ``save_pretrained`` and loaded back through the ordinary
``from_pretrained`` path.

* Qwen3-VL (``Qwen3VLForConditionalGeneration``): Qwen3's added tokens
  (``<think>``/``</think>`` at 151667/151668, as in the released tokenizer,
  ordinary added tokens, not special), a vision tower with 16-px patches,
  temporal patch 2 and one deepstack layer, interleaved mrope.
* Qwen3.5 (``Qwen3_5ForConditionalGeneration``): one linear-attention
  (gated delta net) and one full-attention layer, partial rotary, no
  deepstack. The released Qwen3.5 tokenizer has a newer 248k vocabulary that
  is not available offline; the tiny model keeps Qwen3's (same pre-tokenizer:
  one token per digit, the same chat markers and think tags) and sets the
  config's media token ids to where those tokens are.

Their vision towers stay as initialised (``vision_init`` targets Qwen2.5-VL's
14-px patches): these models are for checking the pipeline, not for learning.
"""

from __future__ import annotations

from .tiny_model import NOT_SPECIAL, SPECIAL_TOKENS, build_tokenizer, mrope_section, save_tiny

# Qwen3's added tokens after Qwen2.5-VL's (ids 151665..151668), all ordinary added tokens.
QWEN3_EXTRA_TOKENS = ("<tool_response>", "</tool_response>", "<think>", "</think>")
QWEN3_SPECIAL_TOKENS = SPECIAL_TOKENS + QWEN3_EXTRA_TOKENS
QWEN3_NOT_SPECIAL = frozenset(NOT_SPECIAL | set(QWEN3_EXTRA_TOKENS))

# Qwen3-VL's patches are 16 px, merged 2x2: sizes are multiples of 32. At least 2x2 merged patches, at most a
# 224x224 frame (49 visual tokens per 2-frame temporal patch), the size of the demo and benchmark clips.
MIN_PIXELS = 64 * 64
MAX_PIXELS = 224 * 224
VOCAB_ROWS = 151936  # the released Qwen3-VL checkpoints' padded embedding rows


def build_qwen3_tokenizer():
    """Qwen3's tokenizer (Qwen2.5-VL's plus ``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>``)."""
    tokenizer = build_tokenizer(QWEN3_SPECIAL_TOKENS, QWEN3_NOT_SPECIAL)
    if tokenizer.convert_tokens_to_ids("</think>") != 151668:
        raise ValueError("Qwen3's think tags did not land at their released ids")
    return tokenizer


def _token_ids(tokenizer) -> dict[str, int]:
    return {name: tokenizer.convert_tokens_to_ids(name) for name in QWEN3_SPECIAL_TOKENS}


def _vision(hidden_size: int, **extra) -> dict:
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
                patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, **extra)


def _media_ids(ids: dict[str, int]) -> dict:
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def _special_ids(ids: dict[str, int]) -> dict:
    return dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])


def _save(model, tokenizer, output_dir: str, min_pixels: int, max_pixels: int) -> str:
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    from .tiny_model import CHAT_TEMPLATE

    # Qwen3-VL's video processor bounds the pixels of a whole temporal patch (2 frames), its image processor one image
    frames = 2
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                                              patch_size=16, merge_size=2, temporal_patch_size=2,
                                              image_mean=[0.5] * 3, image_std=[0.5] * 3),
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": min_pixels * frames,
                                                    "longest_edge": max_pixels * frames}),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return save_tiny(output_dir, model, processor, tokenizer)


def build_tiny_qwen3_vl(output_dir: str, seed: int = 0, hidden_size: int = 64, min_pixels: int = MIN_PIXELS,
                        max_pixels: int = MAX_PIXELS) -> str:
    """Save a tiny Qwen3-VL (model, tokenizer, processor) to ``output_dir``."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer = build_qwen3_tokenizer()
    ids = _token_ids(tokenizer)
    head_dim = hidden_size // 4
    text_config = dict(
        vocab_size=VOCAB_ROWS, hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                         "mrope_section": mrope_section(head_dim)},
        tie_word_embeddings=True, **_special_ids(ids),
    )
    # deepstack: the first block's features are also added to the first text layer's input
    config = Qwen3VLConfig(text_config=text_config, vision_config=_vision(hidden_size, deepstack_visual_indexes=[0]),
                           tie_word_embeddings=True, **_media_ids(ids))
    torch.manual_seed(seed)
    return _save(Qwen3VLForConditionalGeneration(config), tokenizer, output_dir, min_pixels, max_pixels)


def build_tiny_qwen3_5(output_dir: str, seed: int = 0, hidden_size: int = 64, min_pixels: int = MIN_PIXELS,
                       max_pixels: int = MAX_PIXELS) -> str:
    """Save a tiny Qwen3.5 (model, tokenizer, processor) to ``output_dir``."""
    import torch
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    tokenizer = build_qwen3_tokenizer()
    ids = _token_ids(tokenizer)
    head_dim = hidden_size // 2
    partial = 0.25  # Qwen3.5 rotates a quarter of each head
    text_config = dict(
        vocab_size=VOCAB_ROWS, hidden_size=hidden_size, intermediate_size=hidden_size * 2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=4096,
        layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4, linear_key_head_dim=16,
        linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
        rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": partial,
                         "mrope_interleaved": True, "mrope_section": mrope_section(int(head_dim * partial))},
        tie_word_embeddings=True, **_special_ids(ids),
    )
    config = Qwen3_5Config(text_config=text_config, vision_config=_vision(hidden_size), tie_word_embeddings=True,
                           **_media_ids(ids))
    torch.manual_seed(seed)
    return _save(Qwen3_5ForConditionalGeneration(config), tokenizer, output_dir, min_pixels, max_pixels)


# model family -> (builder, its LLaMA-Factory templates: reasoning, non-reasoning)
TINY_QWEN3 = {
    "qwen3_vl": (build_tiny_qwen3_vl, ("qwen3_vl", "qwen3_vl_nothink")),
    "qwen3_5": (build_tiny_qwen3_5, ("qwen3_5", "qwen3_5_nothink")),
}
