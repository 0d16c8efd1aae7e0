"""Qwen3-VL and Qwen3.5: the tiny offline models, the think block, frames, and training and scoring end to end.

One training run (LLaMA-Factory's, in this process) per case, shared by its assertions: Qwen3-VL with the reasoning template (``qwen3_vl``),
Qwen3.5 with the non-reasoning one (``qwen3_5_nothink``), and the softmax-regression head on Qwen3.5 with
its reasoning template (``qwen3_5``). Scoring is checked against references on the untrained models.
"""

import json
import os
import re

import pandas as pd
import pytest
import torch

from conftest import base_recipe, train_in_process, write_recipe
from test_e2e_train import first_batches, train_labels
from test_scoring import brute_force, demo_rows, manual_greedy

THINK = "<think>\n\n</think>\n\n"
# tiny Qwen3-family processors bound a 2-frame temporal patch; 224x224 frames stay at their size
QWEN3_PIXELS = dict(video_max_pixels=224 * 224, video_min_pixels=64 * 64)


@pytest.mark.slow
def test_tiny_models_are_valid_for_their_families(tiny_qwen3_vl, tiny_qwen3_5):
    from transformers import AutoConfig, AutoProcessor

    for path, model_type in ((tiny_qwen3_vl, "qwen3_vl"), (tiny_qwen3_5, "qwen3_5")):
        config = AutoConfig.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
        tokenizer = processor.tokenizer
        assert config.model_type == model_type and type(processor).__name__ == "Qwen3VLProcessor"
        assert config.text_config.num_hidden_layers == 2 and config.text_config.hidden_size == 64
        vision = config.vision_config
        assert vision.temporal_patch_size == 2 and vision.patch_size == 16
        assert processor.video_processor.temporal_patch_size == 2 and processor.video_processor.patch_size == 16
        assert all(0 <= i < vision.depth for i in getattr(vision, "deepstack_visual_indexes", []))
        assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
        assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert tokenizer.tokenize(THINK + "37") == ["<think>", "ĊĊ", "</think>", "ĊĊ", "3", "7"]
        assert tokenizer.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    assert AutoConfig.from_pretrained(tiny_qwen3_vl).vision_config.deepstack_visual_indexes == [0]
    assert AutoConfig.from_pretrained(tiny_qwen3_5).text_config.layer_types == ["linear_attention", "full_attention"]


def test_greedy_answers_are_read_after_a_think_block():
    from iovqa_plugin.score.decoding import answer_text

    assert answer_text("<think>\nmaybe 12 or 20\n</think>\n\n37") == "37"
    assert answer_text("<think>\n12") == ""  # a think block still open holds no answer
    assert answer_text(" 45") == "45"
    assert answer_text("[[x 1]] 33", ("[[", "]]")) == "33"


def _scorer(model, demo_dir, tmp_path, template, frames):
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    recipe = base_recipe(model, demo_dir, str(tmp_path / "none"), template=template, iovqa_num_frames=frames,
                         **QWEN3_PIXELS)
    return Scorer(ScorerSettings.from_recipe(write_recipe(tmp_path / f"{template}.yaml", recipe), adapter=""))


@pytest.mark.slow
@pytest.mark.parametrize("family,template,frames", [("qwen3_vl", "qwen3_vl", 1), ("qwen3_5", "qwen3_5_nothink", 2)])
def test_scoring_asks_where_the_score_starts(family, template, frames, tiny_qwen3_vl, tiny_qwen3_5, demo_dir, tmp_path):
    model = tiny_qwen3_vl if family == "qwen3_vl" else tiny_qwen3_5
    scorer = _scorer(model, demo_dir, tmp_path, template, frames)
    tokenizer = scorer.loaded.tokenizer
    rows = demo_rows(demo_dir, n=2)
    features = [scorer.encode(p, scorer.cache.get(path)) for _, path, p in rows]
    text = tokenizer.decode(features[0]["input_ids"])
    # the reasoning template's empty think block ends the prompt, as it precedes the score in training
    assert text.endswith("<|im_start|>assistant\n" + (THINK if template == "qwen3_vl" else ""))
    # Qwen3-VL's video prompt: one timestamp per temporal patch; 1 frame is padded to a full patch of 2
    batch = scorer.batch(features)
    assert batch["video_grid_thw"][:, 0].tolist() == [1, 1]
    assert len(re.findall(r"<\d+\.\d seconds><\|vision_start\|>", text)) == 1
    # expected decoding (one prefill + one cached step) equals scoring every integer separately, checked on the
    # left-padded row (padding is where a hybrid model's linear-attention states could go wrong)
    probabilities, _ = scorer.distribution(batch)
    lengths = [len(f["input_ids"]) for f in features]
    assert lengths[0] != lengths[1]
    padded = lengths.index(min(lengths))
    _, path, prompt = rows[padded]
    assert torch.allclose(probabilities[padded].double(), brute_force(scorer, path, prompt), atol=1e-5)
    # greedy decoding with generate equals an argmax loop
    assert scorer.greedy(batch) == [manual_greedy(scorer, f) for f in features]


CASES = {
    # id: (family, template, plugin keys, scoring mode)
    "qwen3_vl-reasoning": ("qwen3_vl", "qwen3_vl", {}, "both"),
    "qwen3_5-nothink": ("qwen3_5", "qwen3_5_nothink", {}, "both"),
    "qwen3_5-reasoning-head": ("qwen3_5", "qwen3_5", {"iovqa_head": "softmax_regression"}, "head"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request, tiny_qwen3_vl, tiny_qwen3_5, demo_dir, tmp_path_factory):
    """One training run (2 steps, with in-training evaluation) per case."""
    family, template, keys, mode = CASES[request.param]
    model = tiny_qwen3_vl if family == "qwen3_vl" else tiny_qwen3_5
    tmp = tmp_path_factory.mktemp(request.param)
    out = str(tmp / "run")
    recipe = base_recipe(model, demo_dir, out, template=template, max_steps=2, save_steps=2, eval_dataset="demo_val",
                         do_eval=True, eval_strategy="steps", eval_steps=2, **QWEN3_PIXELS, **keys)
    path = write_recipe(tmp / "r.yaml", recipe)
    return dict(name=request.param, template=template, mode=mode, out=out, recipe=path, tmp=tmp,
                log=train_in_process(recipe))


@pytest.mark.slow
def test_training_trains_only_the_score_digits(trained, demo_dir):
    log = trained["log"]
    targets = first_batches(log)[0]
    # the empty think block of the reasoning templates is in the labels and masked: only the two digits train
    assert len(targets) == 4 and all(re.fullmatch(r"[1-5]\d", t) for t in targets)
    assert set(targets) <= train_labels(demo_dir)
    assert os.path.isfile(os.path.join(trained["out"], "adapter_model.safetensors"))
    with open(os.path.join(trained["out"], "eval_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    assert -1 <= results["eval_srcc"] <= 1 and -1 <= results["eval_plcc"] <= 1


@pytest.mark.slow
def test_iovqa_score_on_the_trained_adapter(trained, demo_dir, capsys):
    from iovqa_plugin.cli import main

    preds = str(trained["tmp"] / "preds.csv")
    assert main(["score", "--recipe", trained["recipe"], "--data", "demo_test", "--out", preds,
                 "--mode", trained["mode"], "--batch-size", "5"]) == 0
    assert "10 scored, 0 failed" in capsys.readouterr().out
    table = pd.read_csv(preds)
    assert len(table) == 10 and table["pred_mos"].between(1, 5).all() and (table["mode"] == trained["mode"]).all()
    if trained["mode"] == "head":
        assert table["head_mos"].between(1, 5).all()
    else:
        assert table["expected_mos"].between(1, 5).all() and "greedy_text" in table


@pytest.mark.slow  # loads the tiny Qwen3.5
def test_level_answers_after_a_shared_prefix_of_several_tokens_on_a_hybrid_model(tiny_qwen3_5):
    """Level answers that all start with the same few tokens are scored one step per token: Qwen3.5's
    linear-attention layers keep their state only through one-token steps (a longer step runs as a fresh
    prefill), so the level logits still equal a full forward's, from left-padded prompts."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from iovqa_plugin.data.levels import LevelTokens
    from iovqa_plugin.score.decoding import level_answer_logits

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_5, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_5)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    shared = encode("The quality is")
    assert len(shared) >= 3
    words = [encode(" " + word)[0] for word in ("bad", "poor", "fair", "good", "excellent")]
    levels = LevelTokens(tuple(tuple(shared) + (w,) for w in words), len(shared), ())
    prompts = [encode("Rate the quality of this video"), encode("Rate it")]
    width = max(map(len, prompts))
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batch = {"input_ids": torch.tensor([[0] * (width - len(p)) + p for p in prompts]), "attention_mask": mask,
             "position_ids": (mask.cumsum(1) - 1).clamp(min=0).unsqueeze(0).repeat(3, 1, 1)}
    with torch.no_grad():
        stepped = level_answer_logits(model, batch, levels)
        for m, prompt in enumerate(prompts):
            ids = torch.tensor([prompt + shared])
            full = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1,
                         position_ids=torch.arange(ids.shape[1]).view(1, 1, -1).repeat(3, 1, 1)).logits[0, -1]
            assert torch.allclose(stepped[m], full, atol=1e-5), (m, (stepped[m] - full).abs().max())
