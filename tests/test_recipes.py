"""Every recipe in examples/ parses with LLaMA-Factory's own parser and follows the paper."""

import glob
import json
import os

import pytest
import yaml

from conftest import REPO
from iovqa_plugin.recipe import split_recipe

def _is_training_recipe(path):
    with open(path, encoding="utf-8") as handle:
        return "stage" in yaml.safe_load(handle)


# examples/ also holds non-training files (the ensemble configuration)
RECIPES = sorted(p for p in glob.glob(os.path.join(REPO, "examples", "*.yaml")) if _is_training_recipe(p))
GPU_RECIPES = {
    # name: (model, lora rank, epoch the paper keeps) -- paper Table 1
    "iovqa_7b.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, 3),
    "iovqa_7b_r32.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 32, 2),
    "iovqa_32b.yaml": ("Qwen/Qwen2.5-VL-32B-Instruct", 128, 4),
    "iovqa_72b.yaml": ("Qwen/Qwen2.5-VL-72B-Instruct", 128, 5),
    "ablation_decimal_labels_7b.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, 3),
    "ablation_integer_nomask_7b.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, 3),
    # softmax regression: the paper gives no rank or epoch of its own; the 7B IOVQA settings are used
    "softmax_regression_qwen2vl_7b.yaml": ("Qwen/Qwen2-VL-7B-Instruct", 128, None),
    "softmax_regression_7b.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, None),
    # several quality dimensions: the paper trains the overall score only
    "iovqa_7b_multidim.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, None),
    # level words with soft targets: the 7B IOVQA settings, no paper epoch
    "qalign_levels_7b.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, None),
    # images first (then videos), and quality questions mixed in: the 7B IOVQA settings, no paper epoch
    "image_warmup_7b.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, None),
    "vqa2_mixed_7b.yaml": ("Qwen/Qwen2.5-VL-7B-Instruct", 128, None),
    # beyond the paper: newer model families with the 7B settings (no epoch of the paper's to keep)
    "iovqa_qwen3vl_8b.yaml": ("Qwen/Qwen3-VL-8B-Instruct", 128, None),
    "iovqa_qwen3_5_9b.yaml": ("Qwen/Qwen3.5-9B", 128, None),
}
EXTENSIONS = {"iovqa_qwen3vl_8b.yaml", "iovqa_qwen3_5_9b.yaml", "image_warmup_7b.yaml", "vqa2_mixed_7b.yaml"}
# recipe -> (tiny model fixture that stands in for its model, template); the others: tiny_model, qwen2_vl
FAMILY = {
    "iovqa_qwen3vl_8b.yaml": ("tiny_qwen3_vl", "qwen3_vl_nothink"),
    "iovqa_qwen3_5_9b.yaml": ("tiny_qwen3_5", "qwen3_5"),
    "iovqa_grpo_qwen3vl_8b.yaml": ("tiny_qwen3_vl", "qwen3_vl_nothink"),
}
PLUGIN = {
    "iovqa_7b.yaml": ("integer", "digits"),
    "iovqa_7b_r32.yaml": ("integer", "digits"),
    "iovqa_32b.yaml": ("integer", "digits"),
    "iovqa_72b.yaml": ("integer", "digits"),
    "ablation_decimal_labels_7b.yaml": ("decimal", "none"),
    "ablation_integer_nomask_7b.yaml": ("integer", "none"),
    "iovqa_demo_cpu.yaml": ("integer", "digits"),
    "iovqa_lora_cpu.yaml": ("integer", "digits"),
    "softmax_regression_qwen2vl_7b.yaml": ("integer", "digits"),
    "softmax_regression_7b.yaml": ("integer", "digits"),
    "softmax_regression_demo_cpu.yaml": ("integer", "digits"),
    "iovqa_7b_multidim.yaml": ("integer", "digits"),
    "qalign_levels_7b.yaml": ("level", "digits"),
    "iovqa_qwen3vl_8b.yaml": ("integer", "digits"),
    "iovqa_qwen3_5_9b.yaml": ("integer", "digits"),
    "deqa_fidelity_7b.yaml": ("level", "digits"),
    "deqa_fidelity_cpu.yaml": ("level", "digits"),
    "iovqa_pairs_cpu.yaml": ("integer", "digits"),
    "iovqa_grpo_cpu.yaml": ("integer", "digits"),
    "iovqa_grpo_demo_cpu.yaml": ("integer", "digits"),
    "iovqa_grpo_7b.yaml": ("integer", "digits"),
    "vqinsight_stage2_video_7b.yaml": ("integer", "digits"),
    "vqinsight_stage1_image_7b.yaml": ("integer", "digits"),
    "iovqa_grpo_qwen3vl_8b.yaml": ("integer", "digits"),
    "visualquality_r1_7b.yaml": ("integer", "digits"),
    "qinsight_7b.yaml": ("integer", "digits"),
    "image_warmup_7b.yaml": ("integer", "digits"),
    "image_warmup_cpu.yaml": ("integer", "digits"),
    "vqa2_mixed_7b.yaml": ("integer", "digits"),
    "vqa2_mixed_cpu.yaml": ("integer", "digits"),
}
# GRPO recipes: name -> (mode, rewards, group size, beta, learning rate, epochs) from the paper each cites
# (DESIGN.md section 9); None: a CPU recipe or the plugin's own choice, said in its header
GRPO_RECIPES = {
    "iovqa_grpo_cpu.yaml": ("answer_only", {"score_relative"}, 4, 0.04, None, None),
    "iovqa_grpo_demo_cpu.yaml": ("answer_only", {"score_relative"}, 4, 0.0, None, None),
    "iovqa_grpo_7b.yaml": ("answer_only", {"score_relative"}, 8, 0.001, None, None),
    "vqinsight_stage2_video_7b.yaml": ("thinking", {"format", "score_relative", "length"}, 8, 0.001, 1e-6, 3),
    "vqinsight_stage1_image_7b.yaml": ("thinking", {"format", "score_relative"}, 8, 0.001, 1e-6, 3),
    "iovqa_grpo_qwen3vl_8b.yaml": ("answer_only", {"score_relative"}, 8, 0.001, None, None),
    "visualquality_r1_7b.yaml": ("thinking", {"format", "fidelity_rank"}, 6, 0.04, 1e-6, 10),
    "qinsight_7b.yaml": ("thinking", {"format", "score_threshold"}, 8, 0.001, 1e-6, 10),
}
# DeQA-Score's recipe (its own optimiser settings, not the paper's) and its CPU-size version
DEQA_RECIPES = {"deqa_fidelity_7b.yaml", "deqa_fidelity_cpu.yaml"}
SOFT_TARGETS = {"qalign_levels_7b.yaml"} | DEQA_RECIPES
MULTIDIM_RECIPES = {"iovqa_7b_multidim.yaml": ("traditional", "alignment", "aesthetic", "temporal", "overall")}
LEARNABLE_DEMOS = {"iovqa_demo_cpu.yaml", "iovqa_pairs_cpu.yaml"}  # a random tiny model trained from scratch on CPU in minutes
HEAD_RECIPES = {"softmax_regression_qwen2vl_7b.yaml", "softmax_regression_7b.yaml", "softmax_regression_demo_cpu.yaml"}


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_every_recipe_is_known():
    names = {os.path.basename(p) for p in RECIPES}
    assert names == set(PLUGIN), "add new recipes to this test"


# the Qwen3-family recipes build their tiny models (slow); the others share the session's tiny Qwen2.5-VL
@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in FAMILY else p
                                  for p in RECIPES], ids=os.path.basename)
def test_recipe_parses_with_llamafactory(path, request, tmp_path, clean_plugin_state):
    from llamafactory.hparams import get_train_args

    recipe, iovqa_args = split_recipe(load(path))
    name = os.path.basename(path)
    fixture, template = FAMILY.get(name, ("tiny_model", "qwen2_vl"))
    tiny_model = request.getfixturevalue(fixture)
    assert (iovqa_args.label_format, iovqa_args.label_mask) == PLUGIN[name]
    assert iovqa_args.head == ("softmax_regression" if name in HEAD_RECIPES else "none")
    if name in MULTIDIM_RECIPES:  # TaobaoVD-GC's five dimensions in one joint answer
        assert iovqa_args.dimension_names == MULTIDIM_RECIPES[name] and iovqa_args.joint
    else:
        assert not iovqa_args.multi_dimension
    assert iovqa_args.level_targets == ("soft" if name in SOFT_TARGETS else "hard")
    assert iovqa_args.rank_on == (name in DEQA_RECIPES)
    assert iovqa_args.yes_no_mask == name.startswith("vqa2_mixed")
    # KonIQ's photographs have no text prompt
    assert iovqa_args.image_prompt_free == (name in ("image_warmup_7b.yaml", "vqinsight_stage1_image_7b.yaml"))
    recipe = load(path)  # with its plugin keys: the patched reader takes them out and checks the recipe
    # Only what a CPU test machine needs is swapped: the model path, the output folder, and CPU.
    recipe.update(model_name_or_path=tiny_model, output_dir=str(tmp_path / "out"), use_cpu=True)
    deepspeed = recipe.pop("deepspeed", None)  # LLaMA-Factory takes it only under torchrun: test_deepspeed.py
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(recipe)

    if name in DEQA_RECIPES:
        _check_deqa(name, path, iovqa_args, training_args, finetuning_args, deepspeed)
        return
    assert iovqa_args.rl_on == (name in GRPO_RECIPES)
    if name in GRPO_RECIPES:
        _check_grpo(name, path, iovqa_args, training_args, deepspeed)
        return
    # paper Table 2 (and Table 1's LoRA settings); the learnable CPU demo keeps the optimiser and documents
    # where it departs (learning rate, freeze tuning of a random tiny model)
    if name in LEARNABLE_DEMOS:
        text = open(path, encoding="utf-8").read()
        assert "Where it differs from the paper's 7B recipes, and why" in text
        assert training_args.learning_rate == 1e-3 and finetuning_args.finetuning_type == "freeze"
        assert not finetuning_args.freeze_vision_tower and finetuning_args.freeze_trainable_modules == ["all"]
        if name == "iovqa_demo_cpu.yaml":  # the untied output layer and the input embedding (see ATTENTION_GAIN)
            assert finetuning_args.freeze_extra_modules == ["lm_head", "embed_tokens"]
    else:
        assert training_args.learning_rate == 3e-4
    assert training_args.weight_decay == 1e-4
    assert training_args.get_warmup_steps(1000) == 100  # warmup ratio 0.1
    assert training_args.lr_scheduler_type.value == "cosine"
    assert training_args.optim.value == "adamw_torch"
    assert (training_args.adam_epsilon, training_args.adam_beta1, training_args.adam_beta2) == (1e-8, 0.9, 0.98)
    if name not in LEARNABLE_DEMOS:
        assert finetuning_args.finetuning_type == "lora"
        assert finetuning_args.lora_alpha == 32 and finetuning_args.lora_dropout == 0.1
    assert data_args.template == template
    if name in EXTENSIONS:
        assert "this recipe extends the paper" in open(path, encoding="utf-8").read()

    if name in GPU_RECIPES:
        model, rank, best_epoch = GPU_RECIPES[name]
        assert load(path)["model_name_or_path"] == model
        assert finetuning_args.lora_rank == rank
        assert training_args.num_train_epochs == 6
        assert training_args.save_strategy.value == "epoch"  # the paper's "used epoch" checkpoints
        if best_epoch is not None:
            assert f"epoch {best_epoch} of 6" in open(path, encoding="utf-8").read()
        assert training_args.bf16
        assert model_args.video_max_pixels <= 1024 * 28 * 28 and data_args.cutoff_len >= 1024
        assert deepspeed == "examples/deepspeed/ds_z3_config.json"
        assert iovqa_args.num_frames in (1, 2)


def _check_deqa(name, path, iovqa_args, training_args, finetuning_args, deepspeed):
    """DeQA-Score's scripts/train.sh: lr 2e-5, no weight decay, warmup 0.03, cosine; rank 1.0 : next-token 0.05."""
    assert training_args.learning_rate == 2e-5 and training_args.weight_decay == 0
    assert training_args.get_warmup_steps(1000) == 30
    assert training_args.lr_scheduler_type.value == "cosine" and training_args.optim.value == "adamw_torch"
    assert iovqa_args.rank_weight == 20.0 and iovqa_args.rank_sigma == 1.0
    if name == "deqa_fidelity_7b.yaml":
        text = open(path, encoding="utf-8").read()
        assert "DeQA-Score" in text and "scripts/train.sh" in text and "not mapped" in text
        assert load(path)["model_name_or_path"] == "Qwen/Qwen2.5-VL-7B-Instruct"
        assert training_args.num_train_epochs == 3 and training_args.per_device_train_batch_size == 16
        assert finetuning_args.finetuning_type == "full" and not finetuning_args.freeze_vision_tower
        assert training_args.bf16 and iovqa_args.rank_gather
        assert deepspeed == "examples/deepspeed/ds_z3_config.json"


def _check_grpo(name, path, iovqa_args, training_args, deepspeed):
    mode, rewards, group, beta, learning_rate, epochs = GRPO_RECIPES[name]
    assert (iovqa_args.grpo_mode, set(iovqa_args.grpo_rewards)) == (mode, rewards)
    assert (iovqa_args.grpo_num_generations, iovqa_args.grpo_beta) == (group, beta)
    assert training_args.per_device_train_batch_size % group == 0
    if learning_rate is not None:
        assert training_args.learning_rate == learning_rate and training_args.num_train_epochs == epochs
    text = open(path, encoding="utf-8").read()
    if not name.endswith("_cpu.yaml"):
        assert "Where the numbers come from" in text and "DESIGN.md section 9" in text
        model = "Qwen/Qwen3-VL-8B-Instruct" if name in FAMILY else "Qwen/Qwen2.5-VL-7B-Instruct"
        assert load(path)["model_name_or_path"] == model and training_args.bf16
        assert deepspeed == "examples/deepspeed/ds_z3_config.json"
    if mode == "thinking":  # the prompt asks for the form the format reward checks
        assert "<think>" in iovqa_args.prompt_template and "<answer>" in iovqa_args.prompt_template
        if iovqa_args.image_prompt_template:  # images are asked with their own prompt
            assert "<think>" in iovqa_args.image_prompt_template and "<answer>" in iovqa_args.image_prompt_template


def test_deepspeed_config_is_zero3():
    with open(os.path.join(REPO, "examples", "deepspeed", "ds_z3_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["zero_optimization"]["stage"] == 3
    assert config["bf16"]["enabled"] == "auto"
    # the LoRA adapter (and a merged export) must be gathered from the shards at save time
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_data_info_entries_use_the_formatter():
    with open(os.path.join(REPO, "data_info", "dataset_info.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    for split in ("train", "val", "test"):
        for prefix in ("taobaovd_gc", "iovqa_demo"):
            entry = info[f"{prefix}_{split}"]
            assert entry["formatting"] == "iovqa"
            assert entry["columns"] == {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}
    used = set()
    for path in RECIPES:
        recipe = load(path)
        used |= {name.strip() for key in ("dataset", "eval_dataset") for name in (recipe.get(key) or "").split(",")}
    used -= {""}
    assert used <= set(info)
