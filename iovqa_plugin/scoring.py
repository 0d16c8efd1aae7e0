"""Scoring videos with a trained IOVQA model.

The model is loaded the way LLaMA-Factory loads it for inference (base model
``from_pretrained`` plus the LoRA adapter through peft, or a merged export),
and every input is built by LLaMA-Factory's own template, multimodal plugin
and collator, with the plugin configuration of the training recipe: the
prompt and the frames are exactly those of training.

Decoding modes:

* ``greedy``: temperature-0 generation (the paper); the first number in the
  answer, /10. An answer without a number is recorded as such.
* ``expected``: the expectation of the score over the integer grid 10..50
  from the model's next-token distributions (first digit, then the second
  digit after each possible first digit), in one prefill plus one batched
  step; also its standard deviation (an uncertainty) and the probability mass
  on valid integers.
* ``head``: for models trained with the softmax-regression head
  (``iovqa_head: softmax_regression``): the head's expected grade and the
  five grade probabilities (bad, poor, fair, good, excellent).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .config import IOVQAArguments, split_recipe
from .head import GRADE_NAMES
from .labels import read_answer
from .prompt import build_prompt

MODES = ("greedy", "expected", "both", "head")
COLUMNS = [
    "video",
    "pred_mos",
    "mode",
    "greedy_text",
    "greedy_mos",
    "expected_mos",
    "expected_std",
    "integer_mass",
    "head_mos",
    *(f"p_{name}" for name in GRADE_NAMES),
    "error",
]
CONFIG_FILE = "iovqa_config.json"
IGNORE_INDEX = -100


@dataclass
class VideoResult:
    video: str
    mode: str
    greedy_text: Optional[str] = None
    greedy_mos: Optional[float] = None
    expected_mos: Optional[float] = None
    expected_std: Optional[float] = None
    integer_mass: Optional[float] = None
    probabilities: Optional[list[float]] = None
    head_mos: Optional[float] = None
    grades: Optional[list[float]] = None  # head: P(bad), P(poor), P(fair), P(good), P(excellent)
    error: Optional[str] = None

    @property
    def pred_mos(self) -> Optional[float]:
        return {"greedy": self.greedy_mos, "head": self.head_mos}.get(self.mode, self.expected_mos)

    def row(self) -> dict[str, Any]:
        row = {c: getattr(self, c, None) for c in COLUMNS}
        if self.grades is not None:
            row.update({f"p_{name}": p for name, p in zip(GRADE_NAMES, self.grades)})
        if self.probabilities is not None:
            row.update({f"p_{v}": p for v, p in zip(range(10, 51), self.probabilities)})
        return row


@dataclass
class ScorerSettings:
    """What the scorer needs from a training recipe."""

    model: str
    adapter: Optional[str]
    template: str = "qwen2_vl"
    plugin: IOVQAArguments = field(default_factory=IOVQAArguments)
    model_keys: dict = field(default_factory=dict)  # video pixels etc., passed to LLaMA-Factory

    @classmethod
    def from_recipe(cls, recipe_path: str, model: Optional[str] = None, adapter: Optional[str] = None):
        import yaml

        with open(recipe_path, encoding="utf-8") as handle:
            recipe, plugin = split_recipe(yaml.safe_load(handle))
        keys = ("video_max_pixels", "video_min_pixels", "video_fps", "video_maxlen", "image_max_pixels",
                "image_min_pixels", "trust_remote_code", "infer_dtype", "cache_dir")
        model_keys = {k: recipe[k] for k in keys if k in recipe}
        adapter = adapter if adapter is not None else recipe.get("output_dir")
        return cls(
            model=model or recipe["model_name_or_path"],
            adapter=adapter or None,
            template=recipe.get("template", "qwen2_vl"),
            plugin=plugin or load_plugin_config(adapter) or IOVQAArguments(),
            model_keys=model_keys,
        )


def save_plugin_config(config: IOVQAArguments, output_dir: str) -> None:
    """Keep the run's plugin keys next to its adapter, so scoring can reuse them."""
    import json

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CONFIG_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(config.to_recipe(), handle, indent=2)
    os.replace(tmp, path)


def load_plugin_config(directory: Optional[str]) -> Optional[IOVQAArguments]:
    import json

    from .config import build_config

    path = os.path.join(directory or "", CONFIG_FILE)
    if not directory or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return build_config(json.load(handle))


class Scorer:
    """A loaded model that turns (video, text prompt) pairs into MOS predictions."""

    def __init__(self, settings: ScorerSettings):
        from llamafactory.data import SFTDataCollatorWith4DAttentionMask, get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        from .frames import FrameCache, FrameSpec
        from .grid import ScoreGrid

        self.settings = settings
        args = dict(settings.model_keys, model_name_or_path=settings.model, template=settings.template)
        if settings.adapter:
            args.update(adapter_name_or_path=settings.adapter, finetuning_type="lora")
        # the plugin keys go through LLaMA-Factory's reader too: the run's configuration is active while loading
        args.update({k: v for k, v in settings.plugin.to_recipe().items() if v is not None})
        model_args, data_args, finetuning_args, _ = get_infer_args(args)
        modules = load_tokenizer(model_args)
        self.tokenizer, self.processor = modules["tokenizer"], modules["processor"]
        if settings.plugin.head != "none":
            from .head import add_label_token

            add_label_token(self.tokenizer)
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.model = load_model(self.tokenizer, model_args, finetuning_args, is_trainable=False)
        self.model.eval()
        self.tokenizer.padding_side = "left"  # generation continues every row from its last column
        self.collator = SFTDataCollatorWith4DAttentionMask(
            template=self.template,
            model=self.model,
            label_pad_token_id=IGNORE_INDEX,
            compute_dtype=model_args.compute_dtype,
            attn_implementation=getattr(self.model.config, "_attn_implementation", None),
            **modules,
        )
        plugin = settings.plugin
        self.plugin = plugin
        self.cache = FrameCache(plugin.cache_dir, FrameSpec(plugin.num_frames, plugin.frame_strategy, plugin.frame_format))
        self.stop_ids = self.template.get_stop_token_ids(self.tokenizer)
        self._grid = None
        if plugin.label_format == "integer":
            self._grid = ScoreGrid.from_tokenizer(self.tokenizer)
        self._head = None
        if plugin.head != "none":
            from .head_trainer import HeadForward

            self._head = HeadForward(self.model, self.tokenizer)

    # ---- inputs -------------------------------------------------------------------------------
    def encode(self, prompt_text: str, frames: list[str]) -> dict[str, Any]:
        """One sample's features, built like a training sample without its answer."""
        prompt = build_prompt(prompt_text[: self.plugin.max_prompt_chars], self.plugin.label_format,
                              self.plugin.prompt_template, self.plugin.head != "none")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
        plugin = self.template.mm_plugin
        messages = plugin.process_messages(messages, [], [frames], [], self.processor)
        prompt_ids, _ = self.template.encode_oneturn(self.tokenizer, messages)
        prompt_ids, _ = plugin.process_token_ids(prompt_ids, None, [], [frames], [], self.tokenizer, self.processor)
        return {
            "input_ids": prompt_ids,
            "attention_mask": [1] * len(prompt_ids),
            "labels": [IGNORE_INDEX] * len(prompt_ids),
            "images": [],
            "videos": [frames],
            "audios": [],
        }

    def batch(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.collator([dict(f) for f in features])  # the collator pops media from what it is given
        batch.pop("labels", None)
        device = self.model.device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _mm_token_type_ids(self, input_ids):
        import torch

        types = torch.zeros_like(input_ids)
        for token, kind in (("<|image_pad|>", 1), ("<|video_pad|>", 2)):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                types[input_ids == token_id] = kind
        return types

    # ---- decoding -----------------------------------------------------------------------------
    def greedy(self, batch: dict[str, Any], max_new_tokens: int = 6) -> list[str]:
        """Temperature-0 answers (the paper's decoding)."""
        import torch

        inputs = {k: v for k, v in batch.items() if k not in ("position_ids", "rope_deltas")}
        inputs["mm_token_type_ids"] = self._mm_token_type_ids(batch["input_ids"])
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]

    def distribution(self, batch: dict[str, Any]):
        """(p(n) over 10..50, probability mass on valid integers): one prefill plus one batched step."""
        import torch

        if self._grid is None:
            raise ValueError("expected-score decoding needs integer labels (iovqa_label_format: integer)")
        grid = self._grid
        with torch.inference_mode():
            # logits_to_keep=1: only the last position's logits (all positions would be a (B, L, vocab) tensor)
            out = self.model(**batch, use_cache=grid.steps == 2, logits_to_keep=1)
            first = out.logits[:, -1]
            if grid.steps == 1:
                return grid.probabilities(first), grid.mass(first)
            size = first.shape[0]
            k = grid.first_ids.numel()
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            step_ids = grid.first_ids.to(first.device).repeat(size).unsqueeze(1)  # (B*5, 1)
            mask = batch["attention_mask"].repeat_interleave(k, dim=0)
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
            # the next text position after each row's last token, on all three mrope axes
            position_ids = batch["position_ids"][..., -1:].repeat_interleave(k, dim=1) + 1
            step = self.model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            second = step.logits[:, -1].view(size, k, -1)
        return grid.probabilities(first, second), grid.mass(first, second)

    def head_scores(self, batch: dict[str, Any]):
        """(expected grade, grade probabilities (B, 5)) from the softmax-regression head."""
        import torch

        from .head import expected_score, grade_probabilities

        if self._head is None:
            raise ValueError("mode 'head' needs a model trained with iovqa_head: softmax_regression")
        with torch.inference_mode():
            probabilities = grade_probabilities(self._head(self.model, batch))
        return expected_score(probabilities), probabilities

    def score_features(self, videos: list[str], features: list[dict[str, Any]], mode: str) -> list[VideoResult]:
        from .grid import expected_mos

        batch = self.batch(features)
        if mode == "head":
            mean, grades = self.head_scores(batch)
            return [VideoResult(video=v, mode="head", head_mos=float(mean[i]), grades=grades[i].tolist())
                    for i, v in enumerate(videos)]
        results = [VideoResult(video=v, mode="greedy" if mode == "greedy" else "expected") for v in videos]
        if mode in ("greedy", "both"):
            for result, text in zip(results, self.greedy(batch)):
                result.greedy_text = text
                result.greedy_mos, reason = read_answer(text, self.plugin.label_format)
                if reason is not None and mode == "greedy":
                    result.error = f"greedy {reason}"
        if mode in ("expected", "both"):
            probabilities, mass = self.distribution(batch)
            mean, std = expected_mos(probabilities)
            for i, result in enumerate(results):
                result.expected_mos = float(mean[i])
                result.expected_std = float(std[i])
                result.integer_mass = float(mass[i])
                result.probabilities = probabilities[i].tolist()
        return results

    def score_rows(self, rows: Iterable[tuple[str, str, str]], mode: str = "expected", batch_size: int = 4):
        """Yield a :class:`VideoResult` per (video id, video path, text prompt); failures become error rows."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        pending: list[tuple[str, dict]] = []
        for video, path, prompt in rows:
            try:
                pending.append((video, self.encode(prompt, self.cache.get(path))))
            except Exception as err:  # one bad video must not stop the run
                yield VideoResult(video=video, mode=mode, error=f"{type(err).__name__}: {err}")
                continue
            if len(pending) == batch_size:
                yield from self._score_pending(pending, mode)
                pending = []
        if pending:
            yield from self._score_pending(pending, mode)

    def _score_pending(self, pending, mode):
        videos = [v for v, _ in pending]
        try:
            yield from self.score_features(videos, [f for _, f in pending], mode)
        except Exception as err:
            if len(pending) == 1:
                yield VideoResult(video=videos[0], mode=mode, error=f"{type(err).__name__}: {err}")
                return
            for item in pending:  # find the failing one(s): score one by one
                yield from self._score_pending([item], mode)


def score_file(
    scorer: Scorer,
    annotations: str,
    out_path: str,
    media_dir: str,
    mode: str = "expected",
    batch_size: int = 4,
    save_probabilities: bool = False,
    progress: bool = True,
    columns: Optional[tuple[str, str]] = None,
) -> dict[str, int]:
    """Score every row of an annotation file into ``out_path`` (CSV), resuming from rows already there."""
    import pandas as pd
    from tqdm.auto import tqdm

    from .annotations import read_table

    plugin = scorer.plugin
    video_column, prompt_column = columns or (plugin.video_column, plugin.prompt_column)
    table = read_table(annotations)
    for column in (video_column, prompt_column):
        if column not in table.columns:
            raise ValueError(f"{annotations}: no {column!r} column (columns: {list(table.columns)})")
    done = set()
    previous = None
    if os.path.isfile(out_path):
        previous = pd.read_csv(out_path, dtype={"video": str}, keep_default_na=True)
        done = set(previous.loc[previous["pred_mos"].notna(), "video"])
        previous = previous[previous["video"].isin(done)]  # failed rows are tried again
    rows = []
    for record in table.to_dict(orient="records"):
        video = str(record[video_column]).strip()
        if video in done:
            continue
        rows.append((video, os.path.join(media_dir, video), str(record[prompt_column])))
    header = list(COLUMNS) + ([f"p_{v}" for v in range(10, 51)] if save_probabilities else [])
    if previous is not None:
        previous.reindex(columns=header).to_csv(out_path, index=False)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        pd.DataFrame(columns=header).to_csv(out_path, index=False)
    stats = {"rows": len(table), "skipped_done": len(done), "scored": 0, "errors": 0}
    with tqdm(total=len(rows), desc=f"iovqa score ({mode})", unit="video", disable=not progress) as bar:
        for result in scorer.score_rows(rows, mode=mode, batch_size=batch_size):
            # the header decides the columns: p_10..p_50 only with save_probabilities, head grades always
            pd.DataFrame([result.row()]).reindex(columns=header).to_csv(out_path, mode="a", header=False, index=False)
            stats["errors" if result.error or result.pred_mos is None or math.isnan(result.pred_mos) else "scored"] += 1
            bar.update()
    return stats
