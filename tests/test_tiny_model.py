"""The offline tiny Qwen2.5-VL: its rotary split, its output side and the wide-head variant."""

import pytest

from iovqa_plugin.demo.tiny_model import build_tiny_model, mrope_section


def test_mrope_section_matches_qwen():
    assert mrope_section(128) == [16, 24, 24]  # Qwen2.5-VL-7B's released config (head_dim 128)
    assert mrope_section(16) == [2, 3, 3]  # the default tiny model (hidden 64, 4 heads)
    assert sum(mrope_section(64)) == 32


@pytest.mark.slow
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


def test_the_default_model_has_an_untied_output_layer_behind_a_wide_final_norm(tiny_model, monkeypatch, tmp_path):
    """Untied 0.02-scale output rows behind a final norm of gain 8: logits wide enough for a trained answer to hold
    nearly all the probability (a unit gain caps them near +-1); an older tied build is rebuilt, not reused."""
    import json

    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from iovqa_plugin.demo import tiny_model as tiny
    from iovqa_plugin.demo.tiny_model import OUTPUT_GAIN, ensure_tiny_model

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model)
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert torch.all(model.model.language_model.norm.weight == OUTPUT_GAIN)
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert ensure_tiny_model(tiny_model) == tiny_model  # current: kept

    rebuilt = []
    monkeypatch.setattr(tiny, "build_tiny_model", lambda path: rebuilt.append(path) or path)
    older = str(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    assert ensure_tiny_model(older) == older and rebuilt == [older]


def test_the_default_language_layers_have_a_wide_attention_input(tiny_model, monkeypatch, tmp_path):
    """Language layers at 1/sqrt(64), q/k/v drawn ATTENTION_GAIN times smaller behind an attention input norm of
    that gain; an older untied build with unit gains is rebuilt, not reused."""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from iovqa_plugin.demo import tiny_model as tiny
    from iovqa_plugin.demo.tiny_model import ATTENTION_GAIN, attention_input_gain, ensure_tiny_model

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model)
    assert attention_input_gain(tiny_model) == ATTENTION_GAIN
    for layer in model.model.language_model.layers:
        assert torch.all(layer.input_layernorm.weight == ATTENTION_GAIN)
        assert layer.mlp.up_proj.weight.std().item() == pytest.approx(64 ** -0.5, rel=0.1)
        assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(64 ** -0.5 / ATTENTION_GAIN, rel=0.1)
    assert torch.all(model.model.language_model.norm.weight == tiny.OUTPUT_GAIN)  # the output side as it was

    rebuilt = []
    monkeypatch.setattr(tiny, "build_tiny_model", lambda path: rebuilt.append(path) or path)
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": False}))
    save_file({"model.layers.0.input_layernorm.weight": torch.ones(64)}, str(tmp_path / "model.safetensors"))
    assert ensure_tiny_model(str(tmp_path)) == str(tmp_path) and rebuilt == [str(tmp_path)]


def pooled_visual_features(vision: str, image):
    """Mean over visual tokens of the tiny vision tower's output for one image (what attention pooling sees)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2VLImageProcessor
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from iovqa_plugin.demo.tiny_model import MAX_PIXELS, MIN_PIXELS
    from iovqa_plugin.demo.vision_init import init_vision_like_pretrained

    vision_config = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                         fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2,
                         temporal_patch_size=2)
    config = Qwen2_5_VLConfig(text_config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                               num_key_value_heads=2, vocab_size=128), vision_config=vision_config)
    torch.manual_seed(0)
    visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(config.vision_config).eval()
    if vision == "pretrained_like":
        init_vision_like_pretrained(visual)
    inputs = Qwen2VLImageProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})(
        images=[image], return_tensors="pt")
    with torch.no_grad():
        out = visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
    return getattr(out, "last_hidden_state", out).mean(0)


def test_the_pretrained_like_tower_sees_blur_that_a_random_one_hides():
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:224, 0:224]
    scene = 128 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0) + rng.normal(0, 25, (224, 224))
    sharp = Image.fromarray(np.clip(np.stack([scene] * 3, -1), 0, 255).astype(np.uint8))
    blurred = sharp.filter(ImageFilter.GaussianBlur(2))
    change = {}
    for vision in ("random", "pretrained_like"):
        a, b = pooled_visual_features(vision, sharp), pooled_visual_features(vision, blurred)
        change[vision] = float((a - b).norm() / a.norm())
    assert change["pretrained_like"] > 0.2 and change["pretrained_like"] > 5 * change["random"], change


@pytest.mark.slow
def test_the_tiny_processor_keeps_frames_at_their_size(tiny_model):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    assert processor.video_processor.size == {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}
