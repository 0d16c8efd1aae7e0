"""GRPO end to end on the tiny model: the stock `llamafactory-cli train`, then `iovqa score` on the adapter."""

import json
import os

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, base_recipe, run_cli, write_recipe


def grpo_recipe(model, dataset_dir, output_dir, **overrides):
    with open(os.path.join(REPO, "examples", "iovqa_grpo_cpu.yaml"), encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    recipe.update(model_name_or_path=model, dataset_dir=dataset_dir, dataset="demo_train", output_dir=output_dir,
                  iovqa_frame_cache_dir=os.path.join(dataset_dir, "frame_cache"), max_steps=2, save_steps=2)
    recipe.update(overrides)
    return {k: v for k, v in recipe.items() if v is not None}


def logged(output_dir):
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        return [entry for entry in json.load(handle)["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_answer_only_grpo_after_sft_through_the_stock_cli_then_score(tiny_model, demo_dir, tmp_path):
    sft = str(tmp_path / "sft")  # the usual path: an SFT adapter first, GRPO continues it
    sft_run = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "s.yaml", base_recipe(
        tiny_model, demo_dir, sft, max_steps=1, save_steps=1, lora_dropout=0.0))])
    assert sft_run.returncode == 0, (sft_run.stdout + sft_run.stderr)[-3000:]
    out = str(tmp_path / "grpo")
    # the untrained tiny model's answers are rarely integers, so score_relative is 0 for all: a user reward on the
    # answer's text length gives the groups something to rank (and runs a module:function reward end to end)
    (tmp_path / "text_rewards.py").write_text(
        "def text_length(answers, rows, scale=0.1):\n    return [scale * len(a.text) for a in answers]\n")
    rewards = {"score_relative": 1.0, "text_rewards:text_length": {"weight": 1.0, "scale": 0.1}}
    recipe = write_recipe(tmp_path / "g.yaml", grpo_recipe(tiny_model, demo_dir, out, adapter_name_or_path=sft,
                                                           iovqa_grpo_rewards=rewards))
    result = run_cli(["llamafactory-cli", "train", recipe], env={"PYTHONPATH": str(tmp_path)})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert f"Loaded adapter(s): {sft}" in log
    assert "GRPO (answer_only answers): 4 answers per prompt" in log
    steps = logged(out)
    assert len(steps) == 2
    for entry in steps:
        # answers are drawn from the policy's token distributions: an untrained model's mostly leave the answer
        # set (unparseable, reward 0); the reward is score_relative's, in [0, 1]
        assert 0 <= entry["parseable"] <= 1
        assert 0 <= entry["reward/score_relative"] <= 1 and entry["reward/text_rewards:text_length"] >= 0
        assert entry["reward"] == pytest.approx(entry["reward/score_relative"]
                                                + entry["reward/text_rewards:text_length"], abs=1e-5)
        assert entry["reward_std"] >= 0 and entry["kl"] >= 0 and 0 <= entry["clip_ratio"] <= 1
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    from safetensors.torch import load_file

    before, after = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (sft, out))
    assert before.keys() == after.keys() and any((before[k] != after[k]).any() for k in before)  # trained on
    with open(os.path.join(out, "iovqa_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["iovqa_rl"] == "grpo"
    preds = str(tmp_path / "preds.csv")
    score = run_cli(["iovqa", "score", "--recipe", recipe, "--data", "demo_val", "--out", preds, "--mode", "both"],
                    env={"PYTHONPATH": str(tmp_path)})
    assert score.returncode == 0, (score.stdout + score.stderr)[-3000:]
    table = pd.read_csv(preds)
    assert len(table) == len(pd.read_csv(os.path.join(demo_dir, "demo", "val.csv")))
    assert table["expected_mos"].between(1, 5).all()


@pytest.mark.slow
def test_thinking_grpo_with_freeze_tuning_generates_its_rollouts(tiny_model, demo_dir, tmp_path):
    out = str(tmp_path / "think")
    recipe = grpo_recipe(
        tiny_model, demo_dir, out, finetuning_type="freeze", freeze_trainable_layers=1, lora_rank=None,
        lora_alpha=None, lora_dropout=None, lora_target=None, iovqa_grpo_mode="thinking", iovqa_grpo_beta=0.0,
        iovqa_grpo_rewards={"format": 1.0, "score_gaussian": 1.0, "length": {"weight": 0.5, "min_words": 1}},
        iovqa_grpo_num_generations=2, per_device_train_batch_size=4, iovqa_grpo_max_completion_length=6,
        iovqa_prompt_template="{video}Rate the video made from: {prompt}. Reason in <think> </think>, then answer "
                              "{answer_format} in <answer> </answer>.", max_steps=1, save_steps=1)
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "t.yaml", recipe)])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "GRPO (thinking answers): 2 answers per prompt" in log
    (entry,) = logged(out)
    # an untrained tiny model writes no tags in 6 tokens: every reward is 0, and nothing was parseable
    assert entry["parseable"] == 0.0 and entry["reward/format"] == 0.0 and entry["reward"] == 0.0
    assert "kl" not in entry  # beta 0: no reference pass
    assert os.path.isfile(os.path.join(out, "model.safetensors"))  # freeze tuning saves the whole model


@pytest.mark.slow
def test_answer_only_grpo_on_comparison_rows_next_to_score_rows(tiny_model, demo_dir, tmp_path):
    """Drawn pairs (A/B) next to scores in one run: each group's answers are drawn from its own answer set (the
    choice words' distribution for a pair, the score grid's for a video), `choice` rewards the pairs and
    `score_relative` the scores, each logged over its own rows."""
    from conftest import train_in_process
    from test_pairs import pair_dataset_dir

    data = pair_dataset_dir(demo_dir, tmp_path)
    out = str(tmp_path / "pairs")
    recipe = grpo_recipe(tiny_model, data, out, dataset="scores,train_pairs", media_dir=demo_dir,
                         iovqa_pairs_per_row=1, iovqa_grpo_rewards={"score_relative": 1.0, "choice": 1.0},
                         iovqa_grpo_num_generations=2, per_device_train_batch_size=8, max_steps=2, save_steps=2)
    log = train_in_process(recipe)
    assert "GRPO (answer_only answers): 2 answers per prompt" in log
    steps = logged(out)
    assert len(steps) == 2
    # every step logs both rewards, each over its own rows (a pair's answer is never read as a score); the
    # untrained model's answers mostly leave both answer sets (which answers are drawn: test_grpo_rollouts)
    for entry in steps:
        assert 0 <= entry["reward/choice"] <= 1 and 0 <= entry["reward/score_relative"] <= 1


TEXT_REWARD = "def text_length(answers, rows, scale=0.1):\n    return [scale * len(a.text) for a in answers]\n"


def varied_recipe(tiny_model, demo_dir, out, **overrides):
    """Answer-only GRPO whose rewards differ within groups even on the untrained model (the answers' text length:
    score_relative is 0 for its mostly unreadable answers), so every step moves the adapter; the `grpo` loss
    (each answer's token mean, then the mean over answers) averages alike over one or several processes."""
    settings = dict(iovqa_grpo_rewards={"text_rewards:text_length": 1.0}, iovqa_grpo_loss_type="grpo",
                    learning_rate=5e-3, iovqa_grpo_num_generations=2, iovqa_grpo_beta=0.0)
    return grpo_recipe(tiny_model, demo_dir, out, **{**settings, **overrides})


def adapter_weights(out):
    from safetensors.torch import load_file

    return load_file(os.path.join(out, "adapter_model.safetensors"))


@pytest.mark.slow
def test_grpo_resumed_from_a_checkpoint_equals_the_uninterrupted_run(tiny_model, demo_dir, tmp_path, monkeypatch):
    """Exact equality, not only a restored step: each group's answers are drawn from a generator seeded by the
    run's seed, the optimizer step and the group's place in the batch (not from a random state carried through
    the run), and the sampler, optimizer and scheduler come back from the checkpoint, so steps 3-4 of the resumed
    run sample and train exactly as the uninterrupted run's."""
    from conftest import train_in_process

    (tmp_path / "text_rewards.py").write_text(TEXT_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    common = dict(max_steps=3, save_steps=2, per_device_train_batch_size=4)  # 2 prompts x 2 answers a step
    train_in_process(varied_recipe(tiny_model, demo_dir, full, **common))
    log = train_in_process(varied_recipe(tiny_model, demo_dir, resumed, **common,
                                         resume_from_checkpoint=os.path.join(full, "checkpoint-2")))
    assert "Resuming training from checkpoint with epoch 0 and global step 2" in log
    assert [e["step"] for e in logged(resumed)] == [1, 2, 3]  # steps 1-2: the checkpoint's log history
    for before, after in zip(logged(full)[2:], logged(resumed)[2:]):
        for key in ("loss", "reward", "reward_std", "grad_norm"):
            assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-7), key
    expected, final = adapter_weights(full), adapter_weights(resumed)
    assert set(final) == set(expected)
    # step 3 moved the adapter (Adam's moments from steps 1-2 move it even where step 3's group rewards tie), so
    # equal final weights need the optimizer state back from the checkpoint, not only the weights
    checkpoint = adapter_weights(os.path.join(full, "checkpoint-2"))
    assert max(float((expected[k] - checkpoint[k]).abs().max()) for k in expected) > 1e-6
    for key in expected:
        assert torch.allclose(final[key], expected[key], atol=1e-6), key


@pytest.mark.slow
def test_two_process_zero3_grpo_equals_one_process(tiny_model, demo_dir, tmp_path, monkeypatch):
    """2 ZeRO-3 processes x 2 answers (one prompt each) train as 1 process x 4 answers (both prompts): the same
    prompts (TRL's RepeatSampler, sharded by accelerate), the same answers (each group's generator is seeded by
    its place in the global batch, not by the process), the same loss and the same adapter."""
    from conftest import train_in_process
    from test_deepspeed import Z3_CONFIG

    (tmp_path / "text_rewards.py").write_text(TEXT_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    single, zero3 = str(tmp_path / "single"), str(tmp_path / "zero3")
    # plain SGD: the weights move by the gradients themselves (Adam's first steps move every weight by about
    # the learning rate, whatever the gradient's size: float noise on a near-zero gradient flips its sign)
    common = dict(optim="sgd", learning_rate=0.05, max_grad_norm=0.0)
    train_in_process(varied_recipe(tiny_model, demo_dir, single, per_device_train_batch_size=4, **common))
    recipe = varied_recipe(tiny_model, demo_dir, zero3, per_device_train_batch_size=2, deepspeed=Z3_CONFIG,
                           use_cpu=False, **common)  # use_cpu off for DeepSpeed to start (tests/test_deepspeed.py)
    env = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(tmp_path)}
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "z3.yaml", recipe)], env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "Detected DeepSpeed ZeRO-3" in log
    one, two = logged(single), logged(zero3)
    assert [e["step"] for e in one] == [e["step"] for e in two] == [1, 2]
    # float32 sums in another order (ZeRO-3's partitions, gloo's all-reduce) leave step 1 equal to float noise
    # (5e-6 of the gradient norm measured) and, after step 1's SGD step, step 2 within about 5e-5; another
    # answer or prompt would change the rewards, and these by far more
    for a, b, rel in zip(one, two, (1e-4, 1e-3)):  # the logged loss is the mean over the processes
        assert b["loss"] == pytest.approx(a["loss"], rel=rel, abs=1e-6)
        assert a["reward_std"] > 0 and a["grad_norm"] > 0  # the steps did move the adapter
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=rel)
    expected, final = adapter_weights(single), adapter_weights(zero3)
    assert set(final) == set(expected)
    moved = max(float(expected[k].abs().max()) for k in expected if "lora_B" in k)  # lora_B starts at 0
    worst = max((float((final[k] - expected[k]).abs().max()), k) for k in expected)
    # float noise: 0.7e-4-1.3e-4 of the movement measured in repeated runs (the gradients' norm is ~47, so a
    # relative difference of 5e-5 in step 2's gradient moves a weight by that much); one other answer would move
    # the weights by a share of a whole step
    assert moved > 1e-4 and worst[0] < 1e-3 * moved, (worst, moved)


@pytest.mark.slow
def test_answer_only_grpo_on_joint_dimension_answers(tiny_model, demo_dir, tmp_path, monkeypatch):
    """A joint recipe (one answer "traditional 37, temporal 20, overall 41" per video): its answers drawn score by
    score, the dimensions reward and each dimension's score reward logged every step, and the adapter trained."""
    import math

    from conftest import train_in_process

    (tmp_path / "text_rewards.py").write_text(TEXT_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = str(tmp_path / "joint")
    names = ("traditional", "temporal", "overall")
    rewards = {"dimensions": {"weight": 1.0, "weights": {"overall": 2.0}}, "text_rewards:text_length": 1.0}
    log = train_in_process(varied_recipe(tiny_model, demo_dir, out, per_device_train_batch_size=4, max_steps=1,
                                         save_steps=1,
                                         iovqa_dimensions=",".join(names), iovqa_dimension_layout="joint",
                                         iovqa_grpo_rewards=rewards))
    assert "GRPO (answer_only answers): 2 answers per prompt, rewards {'dimensions'" in log
    steps = logged(out)
    assert len(steps) == 1
    for entry in steps:
        values = [entry[f"reward/dimensions/{name}"] for name in names] + [entry["reward/dimensions"]]
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in values)
        assert entry["reward"] == pytest.approx(entry["reward/dimensions"] + entry["reward/text_rewards:text_length"],
                                                abs=1e-5)
        assert 0 <= entry["parseable"] <= 1 and entry["reward_std"] > 0
    moved = max(float(v.abs().max()) for k, v in adapter_weights(out).items() if "lora_B" in k)  # lora_B starts at 0
    assert moved > 0
