"""DeepSpeed ZeRO-3 (examples/deepspeed/ds_z3_config.json, used by every GPU recipe).

The config is filled the way the Trainer fills it (transformers' HfTrainerDeepSpeedConfig from the recipe's
TrainingArguments) and parsed by DeepSpeed's own DeepSpeedConfig. ZeRO-3 also really runs here: DeepSpeed's CPU
accelerator with gloo trains the tiny model under 2 torchrun processes. That needs `use_cpu: false`: with
`use_cpu: true` accelerate's PartialState(cpu=True) never calls deepspeed.init_distributed, so zero.Init sees
world size 1 while the Trainer filled train_batch_size for 2, and DeepSpeed's batch assertion stops the run.
The first CPU run on a machine JIT-compiles DeepSpeed's shared-memory comm op (about 1.5 min on 2 cores, cached
in ~/.cache/torch_extensions). bench/zero3_gpu.sh runs the same recipe on GPUs with bf16.
"""

import glob
import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors import safe_open

from conftest import REPO, base_recipe, run_cli, write_recipe
from test_e2e_train import assert_adapter_saved, first_batches, train_labels

Z3_CONFIG = "examples/deepspeed/ds_z3_config.json"
# text hidden size of the released checkpoints: it sizes the bucket "auto" values
HIDDEN_SIZE = {
    "Qwen/Qwen2.5-VL-7B-Instruct": 3584,
    "Qwen/Qwen2-VL-7B-Instruct": 3584,
    "Qwen/Qwen2.5-VL-32B-Instruct": 5120,
    "Qwen/Qwen2.5-VL-72B-Instruct": 8192,
    # transformers' Qwen3VLTextConfig / Qwen3_5TextConfig defaults (the 8B / 9B style configurations)
    "Qwen/Qwen3-VL-8B-Instruct": 4096,
    "Qwen/Qwen3.5-9B": 4096,
}


def _load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


DEEPSPEED_RECIPES = sorted(p for p in glob.glob(os.path.join(REPO, "examples", "*.yaml")) if "deepspeed" in _load(p))


class OnNodes:
    """TrainingArguments as a run on `world_size` processes sees them (a test process is always world 1)."""

    def __init__(self, args, world_size):
        self._args = args
        self.world_size = world_size

    def __getattr__(self, name):
        return getattr(self._args, name)


@pytest.fixture
def hf_ds_config():
    """HfTrainerDeepSpeedConfig registers itself in a transformers global (is_deepspeed_zero3_enabled() then
    says True to every later from_pretrained in this process): unregister it after the test."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    yield lambda path: HfTrainerDeepSpeedConfig(os.path.join(REPO, path))
    unset_hf_deepspeed_config()


@pytest.fixture
def world(monkeypatch):
    """Make DeepSpeed's config parser see `n` processes, as it does inside a launched run."""
    import deepspeed.runtime.config as ds_config

    def set_world(n):
        monkeypatch.setattr(ds_config.dist, "get_rank", lambda *a, **k: 0)
        monkeypatch.setattr(ds_config.dist, "get_world_size", lambda *a, **k: n)

    return set_world


def recipe_training_args(path, tiny_model, tmp_path):
    """The recipe's TrainingArguments through LLaMA-Factory's parser (model and output swapped for the test;
    `deepspeed` left out: LLaMA-Factory refuses it outside a torchrun launch)."""
    from llamafactory.hparams import get_train_args

    recipe = dict(_load(path), model_name_or_path=tiny_model, output_dir=str(tmp_path / "out"), use_cpu=True)
    recipe.pop("deepspeed")
    return get_train_args(recipe)[2]


def filled(ds, args, model_name):
    """Fill the "auto" values as the Trainer does: at TrainingArguments creation, then once the model is built."""
    from transformers import Qwen2_5_VLConfig

    ds.trainer_config_process(args)
    model = SimpleNamespace(config=Qwen2_5_VLConfig(text_config={"hidden_size": HIDDEN_SIZE[model_name]}))
    ds.trainer_config_finalize(args, model, num_training_steps=1000)
    return ds.config


@pytest.mark.parametrize("world_size", [1, 8])
@pytest.mark.parametrize("path", DEEPSPEED_RECIPES, ids=os.path.basename)
def test_recipe_fills_and_parses_with_deepspeed(path, world_size, tiny_model, tmp_path, hf_ds_config, world, clean_plugin_state):
    from deepspeed.runtime.config import DeepSpeedConfig

    recipe = _load(path)
    assert recipe["deepspeed"] == Z3_CONFIG and os.path.isfile(os.path.join(REPO, Z3_CONFIG))
    args = OnNodes(recipe_training_args(path, tiny_model, tmp_path), world_size)
    config = filled(hf_ds_config(recipe["deepspeed"]), args, recipe["model_name_or_path"])
    assert '"auto"' not in json.dumps(config)  # DeepSpeed itself takes no "auto"

    micro, accum = recipe["per_device_train_batch_size"], recipe["gradient_accumulation_steps"]
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (micro, accum)
    assert config["train_batch_size"] == micro * accum * world_size
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    assert config["gradient_clipping"] == args.max_grad_norm
    hidden = HIDDEN_SIZE[recipe["model_name_or_path"]]
    assert config["zero_optimization"]["reduce_bucket_size"] == hidden * hidden

    world(world_size)
    parsed = DeepSpeedConfig(config)
    assert parsed.zero_optimization_stage == 3
    assert parsed.zero_config.gather_16bit_weights_on_model_save  # the LoRA adapter is gathered from the shards
    assert parsed.zero_allow_untested_optimizer  # the recipes' adamw_torch is a client optimizer under ZeRO
    assert parsed.bfloat16_config.enabled and not parsed.float16_config.enabled
    assert parsed.train_batch_size == micro * accum * world_size


def test_batch_sizes_filled_for_one_world_are_refused_in_another(tiny_model, tmp_path, hf_ds_config, world, clean_plugin_state):
    """What stops a `use_cpu: true` run: the Trainer filled the batch for 2 processes, DeepSpeed sees 1."""
    from deepspeed.runtime.config import DeepSpeedConfig

    path = os.path.join(REPO, "examples", "iovqa_7b.yaml")
    args = OnNodes(recipe_training_args(path, tiny_model, tmp_path), 2)
    config = filled(hf_ds_config(Z3_CONFIG), args, "Qwen/Qwen2.5-VL-7B-Instruct")
    world(1)
    with pytest.raises(AssertionError, match="train_batch_size is not equal to"):
        DeepSpeedConfig(config)


def zero3_checkpoint_states(checkpoint):
    """{rank: (zero stage, partition count)} from DeepSpeed's per-rank optimizer shards."""
    states = {}
    for rank in (0, 1):
        path = os.path.join(checkpoint, "global_step2", f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
        state = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        states[rank] = (int(state["zero_stage"]), state["partition_count"])
    return states


@pytest.mark.slow
def test_zero3_trains_on_two_cpu_processes(tiny_model, demo_dir, tmp_path):
    out = str(tmp_path / "z3")
    # use_cpu must be off for DeepSpeed to start (see the module docstring); with no GPU the run is on CPU anyway
    recipe = base_recipe(tiny_model, demo_dir, out, max_steps=2, save_steps=2, deepspeed=Z3_CONFIG, use_cpu=False)
    env = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "r.yaml", recipe)], env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "Detected DeepSpeed ZeRO-3" in log

    batches = first_batches(log)
    assert set(batches) == {0, 1}, "the digit mask must be active on both ranks"
    assert all(set(targets) <= train_labels(demo_dir) for targets in batches.values())
    for rank in (0, 1):  # the output layer runs at labelled positions only, under ZeRO-3's parameter gathering
        assert f"[iovqa rank {rank}] INFO labelled-position logits" in log
    assert_adapter_saved(out)
    with safe_open(os.path.join(out, "adapter_model.safetensors"), "pt") as adapter:
        # a ZeRO-3 shard not gathered at save time would be written as an empty tensor
        assert all(0 not in adapter.get_slice(key).get_shape() for key in adapter.keys())
    assert zero3_checkpoint_states(os.path.join(out, "checkpoint-2")) == {0: (3, 2), 1: (3, 2)}
    with open(os.path.join(out, "trainer_log.jsonl"), encoding="utf-8") as handle:
        losses = [json.loads(line)["loss"] for line in handle if '"loss"' in line]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
