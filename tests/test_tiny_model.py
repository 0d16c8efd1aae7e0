"""The offline tiny Qwen2.5-VL: its rotary split and the wide-head variant the learning benchmark trains."""

import pytest

from iovqa_plugin.demo.tiny_model import build_tiny_model, mrope_section


def test_mrope_section_matches_qwen():
    assert mrope_section(128) == [16, 24, 24]  # Qwen2.5-VL-7B's released config (head_dim 128)
    assert mrope_section(16) == [2, 3, 3]  # the default tiny model (hidden 64, 4 heads)
    assert sum(mrope_section(64)) == 32


def test_wide_head_variant_loads_untied(tmp_path):
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    path = build_tiny_model(str(tmp_path / "wide"), hidden_size=128, head_std=0.5)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    assert model.config.tie_word_embeddings is False
    head = model.lm_head.weight
    embedding = model.get_input_embeddings().weight
    assert head.data_ptr() != embedding.data_ptr()
    assert head.std().item() == pytest.approx(0.5, rel=0.02)
    assert embedding.std().item() == pytest.approx(0.02, rel=0.05)
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    ids = tokenizer("Score: 37", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    # the wide head spreads logits far beyond the tied 0.02-scale embedding's range
    assert logits.shape[-1] == embedding.shape[0] and logits.std().item() > 2.0
