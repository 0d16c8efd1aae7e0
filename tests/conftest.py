"""Shared fixtures: the offline tiny model, the demo ladder, and recipe runs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
DEMO_COLUMNS = {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from iovqa_plugin.demo.tiny_model import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("tiny") / "tiny-qwen2.5-vl"))


@pytest.fixture(scope="session")
def tiny_qwen3_vl(tmp_path_factory) -> str:
    from iovqa_plugin.demo.tiny_qwen3 import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(str(tmp_path_factory.mktemp("tiny") / "tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def tiny_qwen3_5(tmp_path_factory) -> str:
    from iovqa_plugin.demo.tiny_qwen3 import build_tiny_qwen3_5

    return build_tiny_qwen3_5(str(tmp_path_factory.mktemp("tiny") / "tiny-qwen3.5"))


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from iovqa_plugin.demo.tiny_model import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def grouping_tokenizer():
    """A tokenizer that groups digits like Llama-3 (up to three per token: "37" is one token).

    Every other printable ASCII character is a token of its own, so that any template renders readably.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    characters = [chr(c) for c in range(32, 127) if not chr(c).isdigit()] + ["\n", "\t"]
    numbers = [str(n) for n in range(1000)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<LABEL_1>"]
    vocab = {token: i for i, token in enumerate(specials + characters + numbers)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\p{N}{1,3}|[^\p{N}]"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<LABEL_1>"]})
    tokenizer.name_or_path = "grouping-test-tokenizer"
    return tokenizer


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> str:
    """A dataset_dir with the demo ladder and a dataset_info.json for it."""
    from iovqa_plugin.demo.ladder import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    # 30 training videos (the mixed degradations only): fast tests; with TaobaoVD-GC's sub-MOS columns for the
    # multi-dimension tests
    make_demo_dataset(str(root / "demo"), media_root=str(root), train_views=0, sub_mos_columns=True, kinds=("mixed",))
    info = {
        f"demo_{split}": {"file_name": f"demo/{split}.csv", "formatting": "iovqa", "columns": DEMO_COLUMNS}
        for split in ("train", "val", "test")
    }
    (root / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return str(root)


@pytest.fixture(scope="session")
def scorer(tiny_model, demo_dir, tmp_path_factory):
    """The scorer of the untrained tiny model (no adapter) under the test recipe, loaded once for every test file."""
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    tmp = tmp_path_factory.mktemp("score")
    recipe = base_recipe(tiny_model, demo_dir, str(tmp / "none"))
    return Scorer(ScorerSettings.from_recipe(write_recipe(tmp / "r.yaml", recipe), adapter=""))


@pytest.fixture(scope="session")
def level_run(tiny_model, demo_dir, tmp_path_factory):
    """(recipe path, output_dir, dataset_dir, log): a soft-target level run on the demo ladder with a rater std
    column and the fidelity ranking loss (pairs gathered across ranks), 2 steps and an evaluation. The level tests
    score it; the ranking-loss tests read its training log."""
    import pandas as pd

    tmp = tmp_path_factory.mktemp("levels")
    data = tmp / "data"
    data.mkdir()
    info = {}
    for split in ("train", "val", "test"):
        table = pd.read_csv(os.path.join(demo_dir, "demo", f"{split}.csv"))
        table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
        table["MOS_std"] = [round(0.2 + 0.1 * m, 4) for m in table["Overall_MOS"]]  # differs from the recipe's 0.5
        table.to_csv(data / f"{split}.csv", index=False)
        info[f"lv_{split}"] = {"file_name": f"{split}.csv", "formatting": "iovqa", "columns": DEMO_COLUMNS}
    (data / "dataset_info.json").write_text(json.dumps(info))
    out = tmp / "run"
    recipe = base_recipe(tiny_model, str(data), str(out), dataset="lv_train", eval_dataset="lv_val", do_eval=True,
                         eval_strategy="steps", eval_steps=2, max_steps=2, save_steps=2,
                         iovqa_label_format="level", iovqa_level_targets="soft", iovqa_std_column="MOS_std",
                         iovqa_rank_loss="fidelity", iovqa_rank_weight=20.0, iovqa_rank_gather=True,
                         iovqa_frame_cache_dir=os.path.join(demo_dir, "frame_cache"))
    path = write_recipe(tmp / "r.yaml", recipe)
    return path, str(out), str(data), train_in_process(recipe)


def base_recipe(model: str, dataset_dir: str, output_dir: str, **overrides) -> dict:
    """The CPU LoRA recipe with test paths and a few steps."""
    with open(os.path.join(REPO, "examples", "iovqa_lora_cpu.yaml"), encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    recipe.update(
        model_name_or_path=model,
        dataset_dir=dataset_dir,
        dataset="demo_train",
        output_dir=output_dir,
        iovqa_frame_cache_dir=os.path.join(dataset_dir, "frame_cache"),
        max_steps=3,
        save_strategy="steps",
        save_steps=3,
        eval_strategy="no",
        eval_dataset=None,
        logging_steps=1,
    )
    recipe.update(overrides)
    return {k: v for k, v in recipe.items() if v is not None}


def write_recipe(path, recipe: dict) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(recipe, handle, sort_keys=False)
    return str(path)


def run_cli(args: list[str], env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a console script of this environment in a fresh interpreter, from the repo root."""
    full_env = dict(os.environ)
    full_env["PATH"] = BIN + os.pathsep + full_env.get("PATH", "")
    full_env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    full_env.update({"TOKENIZERS_PARALLELISM": "false", "DISABLE_VERSION_CHECK": "0"})
    for key in ("FORCE_TORCHRUN", "NPROC_PER_NODE", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        full_env.pop(key, None)
    full_env.update(env or {})
    exe = args[0] if os.path.isabs(args[0]) else os.path.join(BIN, args[0])
    return subprocess.run(
        [exe, *args[1:]], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def captured_logs():
    """The plugin's, LLaMA-Factory's and transformers' log lines written while the block runs, as text.

    Their own handlers write to the stream that was sys.stderr when they were made (pytest swaps it per test)."""
    from iovqa_plugin.logs import get_logger

    stream = io.StringIO()
    plugin = logging.StreamHandler(stream)
    plugin.setFormatter(get_logger().handlers[0].formatter)  # "[iovqa] INFO ...", as a run prints it
    plain = logging.StreamHandler(stream)
    loggers = [(get_logger(), plugin), (logging.getLogger("transformers"), plain),
               (logging.getLogger("llamafactory"), plain)]
    for logger, handler in loggers:
        logger.addHandler(handler)
    try:
        yield stream
    finally:
        for logger, handler in loggers:
            logger.removeHandler(handler)


def train_in_process(recipe: dict) -> str:
    """What `llamafactory-cli train` runs, in this process: LLaMA-Factory's run_exp on the recipe, whose patched
    read_args activates the plugin as in the CLI. For tests whose subject is the training, not the command, torchrun
    or a fresh interpreter (those use run_cli). Returns the log; bad input is raised (the CLI prints it and exits 2).
    The process-wide active run is left as it was."""
    return _in_process("run_exp", recipe)


def export_in_process(recipe: dict) -> str:
    """What `llamafactory-cli export` runs (export_model), in this process; as train_in_process."""
    return _in_process("export_model", recipe)


def _in_process(name: str, recipe: dict) -> str:
    import iovqa_plugin
    from iovqa_plugin.patches.run import active_run, set_active_run

    iovqa_plugin.apply()
    from llamafactory.train import tuner

    before = active_run()
    with captured_logs() as log:
        try:
            getattr(tuner, name)(args=dict(recipe))
        finally:
            set_active_run(before)
    return log.getvalue()


@pytest.fixture
def clean_plugin_state():
    """Leave the process-wide active configuration as it was."""
    from iovqa_plugin.patches.run import active_run, set_active_run

    before = active_run()
    yield
    set_active_run(before)


def teacher_forced(scorer, feature, answer_ids) -> float:
    """log p(answer | prompt) from a full forward of prompt + answer (no padding, no cache), the reference the
    scorer's and the rollouts' one-pass log-probs are checked against."""
    return teacher_forced_all(scorer, feature, [answer_ids])[0]


def teacher_forced_all(scorer, feature, answers) -> list[float]:
    """teacher_forced for each answer, with one full forward per distinct answer-less-its-last-token: under the
    causal mask the logits before an answer's last token do not depend on it, so "prompt 3" gives every "3x"."""
    import torch

    prefixes = {}
    for answer in answers:
        prefixes.setdefault(tuple(answer[:-1]), []).append(answer)
    start = len(feature["input_ids"])
    found = {}
    for prefix, group in prefixes.items():
        ids = feature["input_ids"] + list(prefix)
        batch = scorer.batch([dict(feature, input_ids=ids, attention_mask=[1] * len(ids), labels=[-100] * len(ids))])
        with torch.no_grad():  # the positions that predict the answer's tokens only (the output layer is vocab-wide)
            logits = scorer.loaded.model(**batch, logits_to_keep=len(prefix) + 1).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        assert batch["input_ids"].shape[1] == start + len(prefix)
        for answer in group:
            found[tuple(answer)] = sum(float(logprobs[i, t]) for i, t in enumerate(answer))
    return [found[tuple(answer)] for answer in answers]
