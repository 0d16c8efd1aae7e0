"""Labelled-position logits: the stock causal-LM loss and gradients, with the output layer run where the loss is."""

import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import base_recipe, train_in_process
from iovqa_plugin.train.mask import mask_labels, token_tables
from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.labelled_logits import LabelledLogitsError, compact_for_metrics, labelled_loss

PROMPTS = ("Rate this video.", "How good is the clip of a red car driving fast through the rain at night?", "Score it.")
RTOL = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from iovqa_plugin.demo.tiny_model import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("ll") / "tiny"), hidden_size=64, head_std=0.1)


def load(model_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)


def batch(tokenizer, answers, fmt="integer", mask=True, prompts=PROMPTS):
    """A right-padded SFT batch: chat prompt (IGNORE_INDEX) + answer + <|im_end|> + newline (labelled)."""
    rows = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer.encode(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
        answer_ids = tokenizer.encode(f"{answer}<|im_end|>\n")
        rows.append((prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [IGNORE_INDEX] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    if mask:
        labels = mask_labels(labels, *token_tables(tokenizer, fmt))
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def loss_and_grads(model, batches, path, num_items=None):
    model.zero_grad(set_to_none=True)
    total = 0.0
    for inputs in batches:
        if path == "stock":
            extra = {} if num_items is None else {"num_items_in_batch": num_items}
            loss = model(**inputs, **extra).loss
        else:
            loss, _ = labelled_loss(model, inputs, num_items)
        loss.backward()
        total += loss.item()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return total, grads


def assert_same(model, batches, num_items=None):
    stock_loss, stock_grads = loss_and_grads(model, batches, "stock", num_items)
    loss, grads = loss_and_grads(model, batches, "labelled", num_items)
    assert math.isfinite(stock_loss) and loss == pytest.approx(stock_loss, rel=RTOL)
    assert grads.keys() == stock_grads.keys() and len(grads) > 0
    nonzero = 0
    for name, ref in stock_grads.items():
        scale = ref.abs().max().item()
        assert (grads[name] - ref).abs().max().item() <= RTOL * max(scale, 1e-12), name
        nonzero += scale > 0
    assert nonzero >= len(stock_grads) // 2  # the comparison is not between zeros


@pytest.mark.slow
@pytest.mark.parametrize(
    "answers, fmt, mask, labelled_per_row",
    [
        (("37", "12", "50"), "integer", True, 2),
        (("37", "12", "50"), "integer", False, 4),  # digits, <|im_end|>, newline
        (("3.7", "1.2", "5.0"), "decimal", True, 3),
    ],
    ids=["integer-digit-mask", "integer-no-mask", "decimal"],
)
def test_full_fine_tuning_matches_stock(model_dir, qwen_tokenizer, answers, fmt, mask, labelled_per_row):
    inputs = batch(qwen_tokenizer, answers, fmt, mask)
    assert ((inputs["labels"] != IGNORE_INDEX).sum(1) == labelled_per_row).all()
    lengths = inputs["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == 3  # rows of different lengths, scores at different positions
    model = load(model_dir)
    assert_same(model, [inputs])
    _, outputs = labelled_loss(model, inputs)
    # the output layer ran on the union of labelled positions only, not on the whole sequence
    union = {t - 1 for row in inputs["labels"] for t in (row != IGNORE_INDEX).nonzero().flatten().tolist()}
    assert outputs["logits"].shape[1] == len(union) < inputs["input_ids"].shape[1] // 2


@pytest.mark.slow
def test_gradient_accumulation_with_num_items_in_batch(model_dir, qwen_tokenizer):
    first = batch(qwen_tokenizer, ("37", "12"), mask=False, prompts=PROMPTS[:2])
    second = batch(qwen_tokenizer, ("45", "20", "33"), mask=True, prompts=PROMPTS[::-1])
    num_items = sum((b["labels"] != IGNORE_INDEX).sum() for b in (first, second))
    model = load(model_dir)
    assert_same(model, [first, second], num_items)
    assert_same(model, [first, second])  # no count: per micro-batch means, as LLaMA-Factory's VLM runs


def test_lora_matches_stock(model_dir, qwen_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        load(model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    )
    assert_same(model, [batch(qwen_tokenizer, ("37", "12", "50"))])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_bf16_matches_stock_in_bf16(model_dir, qwen_tokenizer):
    model = load(model_dir).to(torch.bfloat16)
    inputs = batch(qwen_tokenizer, ("37", "12", "50"))
    with torch.no_grad():
        stock = model(**inputs).loss
        loss, outputs = labelled_loss(model, inputs)
    assert outputs["logits"].dtype == torch.bfloat16 and loss.dtype == torch.float32  # upcast like the stock loss
    assert loss.item() == pytest.approx(stock.item(), rel=1e-3)  # bf16 matmul blocking differs by shape


@pytest.mark.slow
def test_gradient_checkpointing_matches_stock(model_dir, qwen_tokenizer):
    model = load(model_dir)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    assert_same(model, [batch(qwen_tokenizer, ("37", "12", "50"))])


def test_packed_logits_give_the_stock_metrics(model_dir, qwen_tokenizer):
    from llamafactory.train.sft.metric import ComputeAccuracy, eval_logit_processor
    from transformers import EvalPrediction

    from iovqa_plugin.data.grid import ScoreGrid
    from iovqa_plugin.train.score_metrics import score_logits

    grid = ScoreGrid.from_tokenizer(qwen_tokenizer)
    model = load(model_dir)
    for mask in (True, False):
        inputs = batch(qwen_tokenizer, ("37", "12", "50"), mask=mask)
        with torch.no_grad():
            full = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
            _, outputs = labelled_loss(model, inputs)
        logits, labels = compact_for_metrics(outputs["logits"], outputs["targets"])
        assert logits.shape[1] == (2 if mask else 4) + 1
        # the plugin's score expectation (digit mask) and LLaMA-Factory's argmax accuracy
        if mask:
            assert torch.allclose(score_logits(logits, labels, grid), score_logits(full, inputs["labels"], grid), rtol=1e-5)
        accuracies = []
        for preds, labs in ((eval_logit_processor(logits, labels), labels), (eval_logit_processor(full, inputs["labels"]), inputs["labels"])):
            accuracies.append(ComputeAccuracy()(EvalPrediction(predictions=preds.numpy(), label_ids=labs.numpy())))
        assert accuracies[0] == accuracies[1]


def _trainer_log(out):
    with open(os.path.join(out, "trainer_log.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.slow
def test_training_is_the_same_with_the_key_on_and_off(tiny_model, demo_dir, tmp_path):
    results = {}
    for on in (True, False):
        out = str(tmp_path / f"run_{on}")
        recipe = base_recipe(
            tiny_model, demo_dir, out, max_steps=2, save_steps=2, gradient_accumulation_steps=2,
            per_device_train_batch_size=2, eval_dataset="demo_val", do_eval=True, eval_strategy="steps",
            eval_steps=2, iovqa_labelled_logits=on,
        )
        log = train_in_process(recipe)
        assert ("labelled-position logits" in log) == on
        with open(os.path.join(out, "eval_results.json"), encoding="utf-8") as handle:
            results[on] = (_trainer_log(out), json.load(handle))
    (log_on, eval_on), (log_off, eval_off) = results[True], results[False]
    losses_on = [e["loss"] for e in log_on if "loss" in e]
    losses_off = [e["loss"] for e in log_off if "loss" in e]
    assert len(losses_on) == 2 and np.allclose(losses_on, losses_off, rtol=1e-4)
    evals_on = [e["eval_loss"] for e in log_on if "eval_loss" in e]
    evals_off = [e["eval_loss"] for e in log_off if "eval_loss" in e]
    assert len(evals_on) == 1 and np.allclose(evals_on, evals_off, rtol=1e-4)
    for key in ("eval_loss", "eval_srcc", "eval_plcc", "eval_final"):
        assert eval_on[key] == pytest.approx(eval_off[key], rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_loss_settings_it_cannot_reproduce_are_refused(tiny_model, demo_dir, tmp_path):
    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "o"), max_steps=1, label_smoothing_factor=0.1)
    with pytest.raises(LabelledLogitsError) as refused:
        train_in_process(recipe)
    assert "label_smoothing_factor: 0.1" in str(refused.value) and "iovqa_labelled_logits: false" in str(refused.value)


def test_recipe_key():
    from iovqa_plugin.config import PluginConfigError
    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.recipe import split_recipe

    assert build_config({}).labelled_logits is True
    assert build_config({"iovqa_labelled_logits": False}).labelled_logits is False
    _, from_cli = split_recipe(["--iovqa_labelled_logits", "false", "--output_dir", "o"])
    assert from_cli.labelled_logits is False
    with pytest.raises(PluginConfigError, match="iovqa_labelled_logits must be true or false"):
        build_config({"iovqa_labelled_logits": "sometimes"})
