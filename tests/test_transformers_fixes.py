"""The pinned transformers' known bugs on the GPU path, checked on CPU (see README "Known transformers 5.6.0 bugs").

* ``flash_attn: fa2`` crashes on every model without attention sinks (transformers #45588): the flash kernel is
  replaced by a recorder, since flash-attn needs a GPU; what is checked is the call transformers makes to it.
* Qwen2.5-VL's 3-D position ids of a multi-frame video (transformers #48669 and the text after the video): built by
  LLaMA-Factory's own plugin and collator for the tiny model, compared with Qwen's formula.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import pytest
import torch

import iovqa_plugin


def _constraints_pin(package: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "constraints.txt"), encoding="utf-8") as handle:
        pins = dict(line.strip().split("==") for line in handle if "==" in line)
    return pins[package]


def test_the_fixes_target_the_pinned_transformers():
    """Bumping transformers in constraints.txt must revisit the fixes (each is gated to the version it was read on)."""
    import transformers
    from iovqa_plugin.patches.transformers_fixes import FIXED_TRANSFORMERS

    assert _constraints_pin("transformers") == FIXED_TRANSFORMERS == transformers.__version__


@pytest.mark.slow
def test_the_fixes_come_with_a_plugin_model_load_and_stock_recipes_stay_stock():
    """What `llamafactory-cli train` imports (every torchrun rank too) leaves transformers alone; the patched
    init_adapter, which a plugin run's model load (training and the scorer) passes through, applies the fixes."""
    import subprocess
    import sys
    import textwrap

    probe = textwrap.dedent("""
        import types
        import llamafactory.train.tuner
        from llamafactory.model import loader
        from transformers.modeling_utils import AttentionInterface
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel
        from iovqa_plugin.config import IOVQAArguments
        from iovqa_plugin.patches.model_loader import _with_head
        from iovqa_plugin.patches.run import run_scope

        def show():
            functions = (AttentionInterface._global_mapping["flash_attention_2"], Qwen2_5_VLModel.get_rope_index,
                         Qwen2VLModel.get_rope_index)
            print([hasattr(f, "__iovqa_original__") for f in functions])

        assert hasattr(loader.init_adapter, "__iovqa_original__")
        init_adapter = _with_head(lambda *args: None)  # the patched init_adapter around a stand-in for the stock one
        model_args = types.SimpleNamespace(adapter_name_or_path=None, model_name_or_path="not-a-folder")
        show()
        init_adapter(None, None, model_args, None, False)  # a stock recipe's model load
        show()
        with run_scope(IOVQAArguments()):  # a plugin run's
            init_adapter(None, None, model_args, None, False)
        show()
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-3:] == ["[False, False, False]"] * 2 + ["[True, True, True]"]


# ---------------------------------------------------------------------------------------------- flash attention


class _Attention(torch.nn.Module):
    """What transformers' attention layers hand to the attention function: a config, causality, a layer index."""

    def __init__(self, implementation: str):
        super().__init__()
        self.config = type("Config", (), {"_attn_implementation": implementation})()
        self.is_causal = True
        self.layer_idx = 0


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_runs_without_sinks(monkeypatch, implementation):
    import transformers.integrations.flash_attention as flash
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from iovqa_plugin.patches.transformers_fixes import apply_transformers_fixes

    apply_transformers_fixes()
    calls = []
    monkeypatch.setattr(flash, "_flash_attention_forward", lambda *a, **kw: calls.append(kw) or a[0])
    query = key = value = torch.zeros(1, 2, 5, 4, dtype=torch.float16)  # (batch, heads, length, head dim)
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, None)

    output, _ = attention(_Attention(implementation), query, key, value, None, dropout=0.0, scaling=0.5)

    assert output.shape == (1, 5, 2, 4) and calls[-1]["s_aux"] is None and calls[-1]["softmax_scale"] == 0.5
    lengths = torch.tensor([0, 5])  # as Qwen2.5-VL's vision tower calls it: keywords, variable-length extras
    attention(_Attention(implementation), query, key, value, attention_mask=None, is_causal=False,
              cu_seq_lens_q=lengths, cu_seq_lens_k=lengths)
    assert calls[-1]["s_aux"] is None and calls[-1]["is_causal"] is False and calls[-1]["cu_seq_lens_q"] is lengths
    sinks = torch.ones(2, dtype=torch.float32)  # a model with sinks (gpt-oss) still gets them, in the query's dtype
    attention(_Attention(implementation), query, key, value, None, s_aux=sinks)
    assert calls[-1]["s_aux"].dtype == torch.float16 and calls[-1]["s_aux"].tolist() == [1.0, 1.0]


def test_fixes_are_idempotent_and_keep_their_own_originals():
    import transformers.integrations.flash_attention as flash
    from transformers.modeling_utils import AttentionInterface
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    from iovqa_plugin.patches.transformers_fixes import apply_transformers_fixes

    apply_transformers_fixes()
    first = [AttentionInterface._global_mapping["flash_attention_2"], Qwen2_5_VLModel.get_rope_index,
             Qwen2VLModel.get_rope_index]
    apply_transformers_fixes()
    assert first == [flash.flash_attention_forward, Qwen2_5_VLModel.get_rope_index, Qwen2VLModel.get_rope_index]
    assert first[0] is AttentionInterface._global_mapping["flash_attention_2"]
    originals = [function.__iovqa_original__ for function in first]
    assert [o.__qualname__ for o in originals] == [
        "flash_attention_forward", "Qwen2_5_VLModel.get_rope_index", "Qwen2VLModel.get_rope_index"]
    assert not any(hasattr(o, "__iovqa_original__") for o in originals)


# ----------------------------------------------------------------------------------- Qwen2.5-VL video positions


@pytest.fixture(scope="module")
def loaded(tiny_model):
    """The tiny Qwen2.5-VL loaded by LLaMA-Factory for inference (its template, mm plugin and collator)."""
    from iovqa_plugin.patches.inference import InferenceModel

    from iovqa_plugin.config import IOVQAArguments

    iovqa_plugin.apply()
    return InferenceModel(tiny_model, None, "qwen2_vl", {"video_max_pixels": 224 * 224, "video_min_pixels": 56 * 56},
                          IOVQAArguments())


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """8 frames of 112x168: a 8x12 patch grid, 4x6 after the 2x2 merge, so time outgrows space with 8 frames."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for index in range(8):
        pixels = np.random.default_rng(index).integers(0, 255, (112, 168, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        paths.append(str(folder / f"{index}.png"))
    return paths


def _positions(loaded, frames, video_fps):
    loaded.processor.video_fps = video_fps  # what LLaMA-Factory's plugin reads (the recipe's video_fps)
    batch = loaded.batch([loaded.encode("<video>Rate the quality of this video.", frames)])
    # LLaMA-Factory prepends the temporal row as the text row: rows 1..3 are (time, height, width)
    return batch["input_ids"][0], batch["position_ids"][1:, 0], batch["video_grid_thw"][0].tolist()


def _expected(input_ids, video_token, grid, merge, seconds_per_grid, tokens_per_second):
    """Qwen's 3-D positions: text counts on; a video at s gets (s + floor(g x seconds/grid x tokens/s), s + row,
    s + column) for temporal grid g; the text after it starts one past the largest position of the video."""
    video = (input_ids == video_token).nonzero().flatten().tolist()
    first, last = video[0], video[-1]
    t, h, w = grid[0], grid[1] // merge, grid[2] // merge
    assert last - first + 1 == t * h * w
    rows = [list(range(first)) for _ in range(3)]
    for g in range(t):
        for row in range(h):
            for column in range(w):
                rows[0].append(first + math.floor(g * seconds_per_grid * tokens_per_second))
                rows[1].append(first + row)
                rows[2].append(first + column)
    after = max(max(r) for r in rows) + 1
    for index in range(len(input_ids) - last - 1):
        for r in rows:
            r.append(after + index)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("num_frames", [4, 8])
@pytest.mark.parametrize("video_fps", ["2", "3", "1.5", "4", "0.5"])
def test_qwen2_5_vl_video_positions_follow_the_formula(loaded, frames, num_frames, video_fps):
    """fps 3 / 4: 0.67 / 0.5 s per temporal grid (every frame at one temporal position when truncated); 1.5: 1.33 s
    (1 s when truncated); 8 frames at fps 2 or below: the video's temporal positions outgrow its 4x6 grid, so text
    that starts max(height, width) after the video collides with them."""
    input_ids, positions, grid = _positions(loaded, frames[:num_frames], float(video_fps))
    config = loaded.model.config
    # LLaMA-Factory, frame lists: the video plays at video_fps, a temporal grid spans temporal_patch_size frames
    seconds_per_grid = Fraction(loaded.processor.image_processor.temporal_patch_size) / Fraction(video_fps)
    expected = _expected(input_ids, config.video_token_id, grid, config.vision_config.spatial_merge_size,
                         seconds_per_grid, config.vision_config.tokens_per_second)
    assert grid[0] == num_frames // 2
    assert positions.tolist() == expected


@pytest.mark.slow
def test_two_frames_keep_transformers_positions(loaded, frames):
    """The paper's 2 frames are one temporal grid: the fix changes nothing there (nor for text or images)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    loaded.processor.video_fps = 3.0
    batch = loaded.batch([loaded.encode("<video>Rate the quality of this video.", frames[:2])])
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "video_grid_thw", "second_per_grid_ts")}
    types = loaded.mm_token_type_ids(batch["input_ids"])
    stock = Qwen2_5_VLModel.get_rope_index.__iovqa_original__(loaded.model.model, mm_token_type_ids=types, **inputs)
    fixed = loaded.model.model.get_rope_index(mm_token_type_ids=types, **inputs)
    assert torch.equal(stock[0], fixed[0]) and torch.equal(stock[1], fixed[1])
    assert torch.equal(fixed[0], batch["position_ids"][1:])


@pytest.mark.slow
def test_padded_batch_rows_and_generation_offsets(loaded, frames):
    """The scorer's left-padded batch: each row's positions as alone; its delta puts the first generated token one
    past the row's largest position (generation counts unpadded tokens)."""
    loaded.processor.video_fps = 3.0
    features = [loaded.encode("<video>Rate it.", frames[:4]), loaded.encode("<video>Rate the quality.", frames)]
    batch = loaded.batch(features)
    types = loaded.mm_token_type_ids(batch["input_ids"])
    positions, deltas = loaded.model.model.get_rope_index(
        batch["input_ids"], types, video_grid_thw=batch["video_grid_thw"],
        second_per_grid_ts=batch["second_per_grid_ts"], attention_mask=batch["attention_mask"])
    for row, feature in enumerate(features):
        alone = loaded.batch([feature])
        kept = batch["attention_mask"][row].bool()
        assert torch.equal(positions[:, row, kept], alone["position_ids"][1:, 0])
        assert int(kept.sum()) + int(deltas[row]) == int(positions[:, row, kept].max()) + 1


def test_qwen2_vl_text_follows_the_whole_video():
    """Qwen2-VL has no seconds per grid: temporal grid g is at s + g; text after starts past the largest position."""
    from types import SimpleNamespace

    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    from iovqa_plugin.patches.transformers_fixes import apply_transformers_fixes

    apply_transformers_fixes()
    model = SimpleNamespace(config=Qwen2VLConfig(vision_config={"spatial_merge_size": 2}))
    t, h, w = 8, 4, 6  # 8 temporal grids (16 frames) of 2x3 merged tokens: time outgrows space
    types = torch.tensor([[0] * 3 + [2] * (t * h * w // 4) + [0] * 2])
    positions, deltas = Qwen2VLModel.get_rope_index(model, torch.zeros_like(types), types,
                                                    video_grid_thw=torch.tensor([[t, h, w]]))
    video = positions[:, 0, 3:-2]
    assert sorted(set(video[0].tolist())) == [3 + g for g in range(t)]
    assert sorted(set(video[1].tolist())) == [3, 4] and sorted(set(video[2].tolist())) == [3, 4, 5]
    assert positions[:, 0, -2:].tolist() == [[11, 12]] * 3 and deltas.tolist() == [[13 - types.shape[1]]]


def test_releases_that_misplace_video_frames_are_refused(monkeypatch, clean_plugin_state):
    """5.3.0-5.5.x (which LLaMA-Factory 0.9.5 accepts) put every frame at one temporal position (#45381): an IOVQA
    recipe on a Qwen2-VL/2.5-VL template stops when it is read, with the install command; Qwen3-VL is unaffected."""
    from iovqa_plugin.patches import transformers_fixes
    from llamafactory.train import tuner

    from iovqa_plugin.config import PluginConfigError

    iovqa_plugin.apply()
    monkeypatch.setattr(transformers_fixes, "version", lambda name: "5.5.4")
    refusal = r"transformers 5.5.4 .* #45381.*-c constraints.txt transformers==5.6.0"
    with pytest.raises(PluginConfigError, match=refusal):
        tuner.read_args({"stage": "sft", "template": "qwen2_vl", "iovqa_num_frames": 2})
    assert tuner.read_args({"stage": "sft", "template": "qwen3_vl_nothink", "iovqa_num_frames": 2})
    monkeypatch.setattr(transformers_fixes, "version", lambda name: "5.6.0")
    assert tuner.read_args({"stage": "sft", "template": "qwen2_vl", "iovqa_num_frames": 2})
