"""The GRPO recipe keys: defaults, TRL's names, and the errors a bad recipe gets when it is read."""

import pytest

from iovqa_plugin.config import PluginConfigError
from iovqa_plugin.config_parser import build_config, help_text
from iovqa_plugin.recipe import split_recipe

GRPO = {"iovqa_rl": "grpo", "per_device_train_batch_size": 8}
JOINT = {"iovqa_dimensions": "traditional,overall", "iovqa_dimension_layout": "joint"}


def test_grpo_keys_carry_trl_names_and_defaults():
    from trl import GRPOConfig

    config = build_config({"iovqa_rl": "grpo"})
    trl = GRPOConfig(output_dir="unused", use_cpu=True, bf16=False)
    for name in ("num_generations", "beta", "epsilon", "loss_type", "num_iterations", "temperature", "top_p",
                 "max_completion_length", "scale_rewards"):
        assert getattr(config, f"grpo_{name}") == getattr(trl, name), name
    assert config.grpo_rewards == {"score_relative": {"weight": 1.0}}
    assert "iovqa_grpo_num_generations" in help_text()


def test_a_recipe_without_the_entry_key_is_unchanged_and_grpo_keys_need_it():
    assert not build_config({}).rl_on
    with pytest.raises(PluginConfigError, match="iovqa_grpo_beta: read with iovqa_rl: grpo only"):
        build_config({"iovqa_grpo_beta": 0.04})


@pytest.mark.parametrize("keys, message", [
    ({"iovqa_grpo_rewards": {"score_relativ": 1}}, "unknown reward 'score_relativ'; did you mean score_relative"),
    ({"iovqa_grpo_rewards": {"score_relative": -0.5}}, r"weight must be a number >= 0, got -0.5"),
    ({"iovqa_grpo_rewards": {"score_gaussian": {"weight": 1, "sigmaa": 1}}}, r"unknown argument\(s\) \['sigmaa'\]"),
    ({"iovqa_grpo_rewards": {"format": 1}}, "'format' rewards the reasoning of a thinking answer"),
    ({"iovqa_grpo_rewards": {"length": 1}}, "'length' rewards the reasoning"),
    ({"iovqa_grpo_rewards": {"nosuchmodule_xyz:f": 1}}, "cannot load the user reward"),
    ({"iovqa_grpo_rewards": {"temporal": 1}, "iovqa_num_frames": 2}, "temporal shuffles the frames"),
    ({"iovqa_grpo_rewards": {"dimensions": 1}}, "'dimensions' rewards each score of a joint answer; this recipe's"),
    ({"iovqa_grpo_rewards": {"score_relative": 1}, **JOINT}, "'score_relative' reads one score .* use dimensions"),
    ({"iovqa_grpo_rewards": {"dimensions": {"weight": 1, "weights": {"overal": 2}}}, **JOINT},
     r"weights must map this recipe's dimensions \['traditional', 'overall'\]"),
    ({"iovqa_grpo_rewards": {"dimensions": {"weight": 1, "weights": {"overall": -1}}}, **JOINT},
     "weights must be numbers >= 0"),
    ({"iovqa_grpo_num_generations": 3}, r"per_device_train_batch_size \(8\) must be a multiple"),
    ({"iovqa_grpo_num_generations": 1}, "must be >= 2"),
    ({"iovqa_grpo_beta": -0.1}, "iovqa_grpo_beta must be a number >= 0"),
    ({"iovqa_grpo_loss_type": "ppo"}, "iovqa_grpo_loss_type must be one of"),
    ({"iovqa_grpo_top_p": 0}, r"iovqa_grpo_top_p must be in \(0, 1\]"),
    ({"iovqa_label_format": "decimal"}, "needs iovqa_label_format integer or level"),
    ({"stage": "dpo"}, "runs on stage: sft"),
])
def test_bad_grpo_recipes_are_refused_when_read(keys, message):
    with pytest.raises(PluginConfigError, match=message):
        split_recipe({**GRPO, **keys})


def test_thinking_rewards_and_a_user_reward(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def closeness(answers, rows, scale=1.0):\n    return [scale] * len(answers)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, config = split_recipe({**GRPO, "iovqa_grpo_mode": "thinking",
                              "iovqa_grpo_rewards": {"format": 0.5, "my_rewards:closeness": {"weight": 2, "scale": 3}}})
    assert config.grpo_rewards == {"format": {"weight": 0.5}, "my_rewards:closeness": {"weight": 2.0, "scale": 3}}


def test_a_joint_recipe_is_rewarded_per_dimension_by_default():
    _, config = split_recipe({**GRPO, **JOINT})
    assert config.grpo_rewards == {"dimensions": {"weight": 1.0}}
    _, config = split_recipe({**GRPO, **JOINT, "iovqa_grpo_mode": "thinking"})
    assert config.grpo_rewards == {"format": {"weight": 1.0}, "dimensions": {"weight": 1.0}}
