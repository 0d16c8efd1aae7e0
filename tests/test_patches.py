"""The patches: loaded by the .pth in every interpreter, lazy, idempotent, version-checked."""

import json
import subprocess
import sys

import pytest

from iovqa_plugin import config
from iovqa_plugin.patches.run import active_run, set_active_run


def run_python(code: str, **env) -> str:
    import os

    full_env = dict(os.environ, **env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_startup_hook_is_installed_and_lazy():
    out = run_python(
        "import sys, json; "
        "print(json.dumps([any(type(f).__name__ == 'PostImportFinder' for f in sys.meta_path), "
        "'torch' in sys.modules, 'llamafactory' in sys.modules, 'iovqa_plugin.patches' in sys.modules]))"
    )
    assert json.loads(out) == [True, False, False, False]


def test_importing_the_package_is_light():
    out = run_python("import iovqa_plugin, sys; print('torch' in sys.modules or 'llamafactory' in sys.modules)")
    assert out == "False"


PROBE = (
    "import json, llamafactory.train.tuner as tuner, llamafactory.hparams.parser as parser; "
    "import llamafactory.data.converter as conv, llamafactory.train.sft.workflow as wf; "
    "print(json.dumps([hasattr(tuner.read_args, '__iovqa_original__'), hasattr(parser.read_args, '__iovqa_original__'), "
    "'iovqa' in conv.DATASET_CONVERTERS, hasattr(wf.SFTDataCollatorWith4DAttentionMask, '__iovqa_original__')]))"
)


def test_stock_llamafactory_import_is_patched_in_a_fresh_interpreter():
    assert json.loads(run_python(PROBE)) == [True, True, True, True]


def test_autoload_can_be_disabled():
    assert json.loads(run_python(PROBE, IOVQA_DISABLE_AUTOLOAD="1")) == [False, False, False, False]


def test_apply_all_is_idempotent():
    import llamafactory.data.converter as converter
    import llamafactory.train.sft.workflow as workflow
    import llamafactory.train.tuner as tuner

    import iovqa_plugin

    iovqa_plugin.apply()
    first = (tuner.read_args, workflow.SFTDataCollatorWith4DAttentionMask, converter.DATASET_CONVERTERS["iovqa"])
    iovqa_plugin.apply()
    iovqa_plugin.apply()
    assert (tuner.read_args, workflow.SFTDataCollatorWith4DAttentionMask, converter.DATASET_CONVERTERS["iovqa"]) == first
    original = tuner.read_args.__iovqa_original__
    assert not hasattr(original, "__iovqa_original__")  # wrapped once, not wrapper-of-wrapper


def test_unsupported_version_is_refused(monkeypatch, capsys):
    from iovqa_plugin.patches import UnsupportedVersionError, apply_tuner_read_args, on_module_imported, support

    monkeypatch.setattr(support, "version", lambda name: "0.9.6")
    with pytest.raises(UnsupportedVersionError, match="0.9.6 is not supported"):
        apply_tuner_read_args()
    on_module_imported("llamafactory.train.tuner", None)  # the start-up hook warns instead of breaking LLaMA-Factory
    assert "plugin not applied" in capsys.readouterr().err
    monkeypatch.setattr(support, "version", lambda name: "0.9.5")
    assert support.check_version() == "0.9.5"


def test_missing_target_is_refused():
    from iovqa_plugin.patches import PatchTargetError
    from iovqa_plugin.patches.support import target

    with pytest.raises(PatchTargetError, match="read_args_renamed not found"):
        target("llamafactory.train.tuner", "read_args_renamed")


def test_read_args_strips_plugin_keys_and_activates(clean_plugin_state):
    import iovqa_plugin
    import llamafactory.hparams.parser as parser
    import llamafactory.train.tuner as tuner

    iovqa_plugin.apply()
    stock = {"stage": "sft", "output_dir": "o"}
    assert tuner.read_args(stock) is stock and active_run() is None
    recipe = tuner.read_args({"stage": "sft", "template": "qwen2_vl", "iovqa_num_frames": 1})
    assert "iovqa_num_frames" not in recipe and active_run().num_frames == 1
    assert parser.read_args(recipe) is recipe and active_run().num_frames == 1  # nested read keeps it
    assert tuner.read_args(stock) is stock and active_run() is None  # the next run without keys: inactive
    with pytest.raises(config.PluginConfigError):
        tuner.read_args({"iovqa_nope": 1})


def test_collator_is_stock_unless_the_mask_is_on(tiny_model, clean_plugin_state):
    import llamafactory.train.sft.workflow as workflow
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoProcessor, AutoTokenizer

    import iovqa_plugin
    from iovqa_plugin.patches.collator import DigitMaskCollator

    iovqa_plugin.apply()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    processor = AutoProcessor.from_pretrained(tiny_model)
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="qwen2_vl"))
    stock_class = workflow.SFTDataCollatorWith4DAttentionMask.__iovqa_original__

    def build():
        return workflow.SFTDataCollatorWith4DAttentionMask(
            template=template, tokenizer=tokenizer, processor=processor, label_pad_token_id=-100
        )

    set_active_run(None)
    assert type(build()) is stock_class
    set_active_run(config.IOVQAArguments(label_mask="none"))
    assert type(build()) is stock_class
    set_active_run(config.IOVQAArguments())
    collator = build()
    assert type(collator) is DigitMaskCollator and collator.iovqa_args.label_format == "integer"


def test_recipe_problems_are_caught_when_it_is_read(tmp_path, clean_plugin_state):
    import llamafactory.train.tuner as tuner

    import iovqa_plugin

    iovqa_plugin.apply()
    with pytest.raises(config.PluginConfigError, match="needs a `template`"):
        tuner.read_args({"stage": "sft", "iovqa_num_frames": 1})
    with pytest.raises(config.PluginConfigError, match="template 'qwen' has no video token"):
        tuner.read_args({"stage": "sft", "template": "qwen", "iovqa_num_frames": 1})
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "a.csv", "formatting": "iovqa"},
                                                            "plain": {"file_name": "b.json"}}))
    with pytest.raises(config.PluginConfigError, match=r"\['mine'\] use formatting 'iovqa' but the recipe has no"):
        tuner.read_args({"stage": "sft", "dataset_dir": str(tmp_path), "dataset": "plain,mine"})
    plain = {"stage": "sft", "dataset_dir": str(tmp_path), "dataset": "plain"}
    assert tuner.read_args(plain) is plain  # a stock recipe stays untouched


def test_the_start_up_hook_watches_exactly_the_patched_modules():
    """A patch whose module the hook does not watch is never applied under the stock llamafactory-cli; a watched
    module without a patch costs an import wrapper for nothing."""
    from iovqa_plugin._autoload import WATCHED_MODULES
    from iovqa_plugin.patches import PATCHES

    assert sorted(WATCHED_MODULES) == sorted(PATCHES)
