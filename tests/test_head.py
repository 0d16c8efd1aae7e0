"""The softmax-regression head: loss, trainable parameters, saving, resuming, scoring, bad configurations."""

import json
import os

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from conftest import base_recipe, run_cli, write_recipe
from iovqa_plugin import config, config_parser
from iovqa_plugin.train.head import head_loss, label_positions, soft_target

HEAD_KEYS = {"iovqa_head": "softmax_regression"}


def test_soft_target_and_losses():
    mos = torch.tensor([1.0, 3.0, 3.7, 5.0])
    target = soft_target(mos, 0.5)
    assert torch.allclose(target.sum(-1), torch.ones(4))
    grades = torch.arange(1.0, 6.0)
    assert (target @ grades)[1] == pytest.approx(3.0)  # symmetric around an interior grade
    assert target[2].argmax() == 3  # 3.7 is closest to grade 4
    assert head_loss(torch.log(target), mos, "soft_ce", 0.5) < head_loss(torch.zeros(4, 5), mos, "soft_ce", 0.5)
    exact = torch.full((1, 5), -30.0)
    exact[0, 2] = 30.0  # all mass on grade 3
    assert head_loss(exact, torch.tensor([3.0]), "mse") == pytest.approx(0.0, abs=1e-6)
    assert head_loss(exact, torch.tensor([4.0]), "mse") == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError):
        head_loss(exact, torch.tensor([3.0]), "hinge")


def test_label_token_must_be_there_once():
    ids = torch.tensor([[1, 2, 9, 3], [9, 1, 2, 3]])
    assert label_positions(ids, 9).tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"row\(s\) \[1\].*cutoff_len"):
        label_positions(torch.tensor([[1, 9], [1, 2]]), 9)
    with pytest.raises(ValueError, match="expected 1"):
        label_positions(torch.tensor([[9, 9]]), 9)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"iovqa_label_format": "decimal"}, "needs iovqa_label_format: integer"),
        ({"iovqa_label_mask": "none"}, "needs iovqa_label_format: integer and iovqa_label_mask: digits"),
        ({"iovqa_prompt_template": "Rate {prompt}."}, r"needs \{label_token\}"),
        ({"iovqa_head_sigma": 0}, "iovqa_head_sigma"),
        ({"iovqa_head_loss": "hinge"}, "iovqa_head_loss"),
    ],
)
def test_bad_head_configurations(keys, message):
    with pytest.raises(config.PluginConfigError, match=message):
        config_parser.build_config({**HEAD_KEYS, **keys})


def test_label_token_only_with_the_head():
    with pytest.raises(config.PluginConfigError, match="only for iovqa_head"):
        config_parser.build_config({"iovqa_prompt_template": "{prompt}{label_token}"})
    assert config_parser.build_config({**HEAD_KEYS, "iovqa_prompt_template": "Rate {prompt}{label_token}"}).head != "none"


def test_trainable_parameters_are_lora_head_and_one_row(tiny_model, demo_dir, tmp_path, clean_plugin_state):
    import iovqa_plugin
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model
    from llamafactory.train.sft import workflow

    iovqa_plugin.apply()
    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "o"), use_cpu=True, **HEAD_KEYS)
    model_args, _, _, finetuning_args, _ = get_train_args(recipe)  # patched reader: activates the plugin
    tokenizer = workflow.load_tokenizer(model_args)["tokenizer"]
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    lora = {n: c for n, c in trainable.items() if "lora_" in n}
    head = {n: c for n, c in trainable.items() if ".iovqa_head." in n}
    row = {n: c for n, c in trainable.items() if ".iovqa_label_embedding." in n}
    assert set(trainable) == set(lora) | set(head) | set(row)
    hidden = 64
    assert list(row.values()) == [hidden]  # exactly one embedding row
    assert sum(head.values()) == hidden * hidden + hidden + 5 * hidden + 5
    assert not any("embed_tokens" in n or "lm_head" in n for n in trainable)  # the matrix itself stays frozen
    assert tokenizer.convert_tokens_to_ids("<LABEL_1>") < model.get_input_embeddings().weight.shape[0]


def head_tensors(path):
    with safe_open(os.path.join(path, "adapter_model.safetensors"), framework="pt") as handle:
        return {k[k.index("iovqa_"):]: handle.get_tensor(k) for k in handle.keys() if "iovqa_" in k}


@pytest.fixture(scope="module")
def head_run(tiny_model, demo_dir, tmp_path_factory):
    """4 head steps with a checkpoint every 2 and a final evaluation on the validation split."""
    tmp = tmp_path_factory.mktemp("head")
    out = tmp / "a"
    recipe = base_recipe(tiny_model, demo_dir, str(out), max_steps=4, save_steps=2, do_eval=True,
                         eval_dataset="demo_val", learning_rate=5e-3, **HEAD_KEYS)
    path = write_recipe(tmp / "a.yaml", recipe)
    result = run_cli(["llamafactory-cli", "train", path])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return {"out": out, "recipe": recipe, "tmp": tmp, "log": result.stdout + result.stderr}


def test_head_trains_and_is_saved_with_the_adapter(head_run):
    out = head_run["out"]
    final, early = head_tensors(out), head_tensors(out / "checkpoint-2")
    assert set(final) == {"iovqa_head.w_in", "iovqa_head.b_in", "iovqa_head.w_out", "iovqa_head.b_out",
                          "iovqa_label_embedding.weight"}
    assert all(not torch.equal(final[k], early[k]) for k in final)  # every head tensor moved
    with open(out / "adapter_config.json", encoding="utf-8") as handle:
        assert json.load(handle)["modules_to_save"] == ["iovqa_head", "iovqa_label_embedding"]
    with open(out / "eval_results.json", encoding="utf-8") as handle:
        results = json.load(handle)
    assert {"eval_srcc", "eval_plcc", "eval_final"} <= set(results)


def test_resumed_run_ends_with_the_same_head(head_run, tiny_model):
    tmp = head_run["tmp"]
    recipe = dict(head_run["recipe"], output_dir=str(tmp / "b"), resume_from_checkpoint=str(head_run["out"] / "checkpoint-2"),
                  do_eval=False, eval_dataset=None)
    recipe = {k: v for k, v in recipe.items() if v is not None}
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp / "b.yaml", recipe)])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    resumed, uninterrupted = head_tensors(tmp / "b"), head_tensors(head_run["out"])
    for key in uninterrupted:
        assert torch.allclose(resumed[key], uninterrupted[key], atol=1e-5), key


def test_scorer_head_mode_reproduces_training_eval(head_run, demo_dir):
    from iovqa_plugin.eval.metrics import compute_metrics
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    settings = ScorerSettings.from_recipe(write_recipe(head_run["tmp"] / "s.yaml", head_run["recipe"]))
    assert settings.iovqa_args.head == "softmax_regression" and settings.adapter == str(head_run["out"])
    scorer = Scorer(settings)
    val = pd.read_csv(os.path.join(demo_dir, "demo", "val.csv"))
    rows = [(v, os.path.join(demo_dir, v), p) for v, p in zip(val["video_name"], val["Prompt"])]
    results = list(scorer.score_rows(rows, mode="head", batch_size=3))
    assert all(r.error is None and abs(sum(r.grades) - 1) < 1e-5 for r in results)
    mos = [float(m) for m in (val["Overall_MOS"] * 10).round() / 10]  # training reads the MOS from the label
    metrics = compute_metrics([r.head_mos for r in results], mos)
    with open(head_run["out"] / "eval_results.json", encoding="utf-8") as handle:
        trained = json.load(handle)
    assert metrics["srcc"] == pytest.approx(trained["eval_srcc"], abs=1e-4)
    assert metrics["plcc"] == pytest.approx(trained["eval_plcc"], abs=1e-4)

    from iovqa_plugin.score.scoring_loop import score_file

    out = head_run["tmp"] / "head_preds.csv"
    stats = score_file(scorer, os.path.join(demo_dir, "demo", "val.csv"), str(out), demo_dir, mode="head", progress=False)
    assert stats["scored"] == len(val)
    table = pd.read_csv(out)  # the prediction file carries the head's score and its five grade probabilities
    grades = table[["p_bad", "p_poor", "p_fair", "p_good", "p_excellent"]]
    assert (grades.sum(axis=1) - 1).abs().max() < 1e-5
    assert table["pred_mos"].tolist() == pytest.approx([r.head_mos for r in results], abs=1e-5)


def test_plain_recipe_refuses_a_head_adapter(head_run, clean_plugin_state):
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    recipe = {k: v for k, v in head_run["recipe"].items() if k != "iovqa_head"}
    settings = ScorerSettings.from_recipe(write_recipe(head_run["tmp"] / "plain.yaml", recipe))
    settings.iovqa_args = config.IOVQAArguments(frame_cache_dir=recipe["iovqa_frame_cache_dir"])
    with pytest.raises(ValueError, match="trained with the softmax-regression head"):
        Scorer(settings)


def test_cutoff_len_cutting_the_label_token_is_an_error(tiny_model, demo_dir, tmp_path):
    # 200 tokens would keep the start of the prompt but cut its end, where <LABEL_1> is: refused before training
    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "o"), cutoff_len=200, max_steps=1, **HEAD_KEYS)
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "r.yaml", recipe)])
    log = result.stdout + result.stderr
    assert result.returncode == 2 and "IOVQA sample(s) longer than cutoff_len 200" in log


def test_head_under_torchrun(tiny_model, demo_dir, tmp_path):
    recipe = base_recipe(tiny_model, demo_dir, str(tmp_path / "ddp"), max_steps=2, save_steps=2, **HEAD_KEYS)
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "r.yaml", recipe)],
                     env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "[iovqa rank 0]" in log and "[iovqa rank 1]" in log
    assert set(head_tensors(tmp_path / "ddp")) >= {"iovqa_head.w_in", "iovqa_label_embedding.weight"}


def test_merged_export_keeps_the_head(head_run, tiny_model, demo_dir, clean_plugin_state):
    from iovqa_plugin.train.head import checkpoint_head_keys
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    tmp = head_run["tmp"]
    export = tmp / "merged"
    recipe = {"model_name_or_path": tiny_model, "adapter_name_or_path": str(head_run["out"]), "template": "qwen2_vl",
              "finetuning_type": "lora", "export_dir": str(export), **HEAD_KEYS}
    result = run_cli(["llamafactory-cli", "export", write_recipe(tmp / "export.yaml", recipe)])
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert len(checkpoint_head_keys(str(export))) == 5

    val = pd.read_csv(os.path.join(demo_dir, "demo", "val.csv")).head(4)
    rows = [(v, os.path.join(demo_dir, v), p) for v, p in zip(val["video_name"], val["Prompt"])]
    train_recipe = write_recipe(tmp / "s2.yaml", head_run["recipe"])
    with_adapter = Scorer(ScorerSettings.from_recipe(train_recipe))
    expected = [r.head_mos for r in with_adapter.score_rows(rows, mode="head")]
    merged = Scorer(ScorerSettings.from_recipe(train_recipe, model=str(export), adapter=""))
    assert [r.head_mos for r in merged.score_rows(rows, mode="head")] == pytest.approx(expected, abs=1e-4)

    plain = ScorerSettings.from_recipe(train_recipe, model=str(export), adapter="")
    plain.iovqa_args = config.IOVQAArguments(frame_cache_dir=head_run["recipe"]["iovqa_frame_cache_dir"])
    with pytest.raises(ValueError, match="would drop the head"):
        Scorer(plain)
