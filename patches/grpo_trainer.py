"""GRPO on LLaMA-Factory's SFT trainer (``iovqa_rl: grpo``): rollouts, rewards, the clipped KL-regularised loss.

The trainer is the run's SFT trainer (``LabelledLogitsTrainer`` for integer labels, ``LevelTrainer`` for level
words) with :class:`GRPOSteps` in front: training steps are GRPO, evaluation stays the SFT trainer's (the
SFT loss and eval_srcc / eval_plcc on the eval set), so an RL run is compared with its SFT start on the
same numbers.

One training micro-batch holds ``per_device_train_batch_size / num_generations`` prompts, each
``num_generations`` times in a row (TRL's ``RepeatSampler`` does this, and repeats each generation batch
``num_iterations`` times, as in TRL). For each micro-batch:

1. **rollouts** (model in eval mode, no gradient: generation and the scorer's KV-cache step are not
   compatible with gradient checkpointing): answer-only runs draw each group's answers token by token from
   the policy's exact next-token distributions at the answer's positions (``rl.rollouts``: one prefill per
   prompt, one batched step; a token off the answer set ends the answer, unreadable; a joint answer's later
   scores one after the other, each after the answer so far);
   thinking runs sample ``<think>…</think><answer>…</answer>`` with ``model.generate`` (temperature, top-p,
   max_completion_length);
2. **rewards** (``rl.rewards.combine``) on the answers read by ``rl.answers.parse_answer``, with each row's
   MOS (integer labels: the label's, one decimal; level labels: the annotation row's); **advantages**
   within each group (``rl.loss.group_advantages``);
3. the completions' **per-token log-probs**, teacher-forced in one forward with gradient
   (``rl.rollouts.completion_logps``); the old policy's (kept from step 1's batch when num_iterations > 1)
   and the reference's (``beta > 0``: the same model with its LoRA adapter disabled, no second copy);
4. the **loss** (``rl.loss.grpo_loss``). Logged every logging step: each reward's mean (``reward/<name>``),
   the total (``reward``), the share of answers from which a value was read (``parseable``), the mean
   group reward std (``reward_std``), ``kl`` (beta > 0) and ``clip_ratio``.

Reused from TRL 0.24: ``RepeatSampler`` and ``disable_dropout_in_model`` (TRL's default for GRPO); its loss
formulation is rewritten as a pure function in ``rl.loss`` (TRL's lives inside its trainer's methods, which
wire no video inputs).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Optional

import torch
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl.trainer.utils import RepeatSampler, disable_dropout_in_model

from iovqa_plugin.config import IOVQAArguments, PluginConfigError
from iovqa_plugin.data.dimensions import joint_prefix, read_joint_answer
from iovqa_plugin.logs import get_logger
from iovqa_plugin.rl.answers import label_row, parse_answer
from iovqa_plugin.train.answer_words import CASES, YES_NO_WORDS as YES_NO
from iovqa_plugin.rl.loss import group_advantages, grpo_loss
from iovqa_plugin.rl.rewards import REWARDS, combine
from iovqa_plugin.rl.rollouts import (AnswersSoFar, Completions, answer_logits, answer_starts, completion_batch,
                                      completion_logps, frame_orders, joint_drawn, joint_wording, prompt_batch,
                                      sample_completions, select_rows, shuffle_frames)
from iovqa_plugin.train.head import MOS_KEY
from iovqa_plugin.train.mask import masked_texts, trained_texts
from iovqa_plugin.train.soft_targets import SIGMA_KEY

from .trainer import LabelledLogitsTrainer, LevelTrainer

ROLLOUT_KEYS = (MOS_KEY, SIGMA_KEY)  # what the collator adds for the trainer, never a model input


@dataclass
class Rollouts:
    """One micro-batch's sampled answers, scored, ready for the loss (kept for num_iterations updates)."""

    completions: Completions
    advantages: torch.Tensor
    old_logps: Optional[torch.Tensor]
    ref_logps: Optional[torch.Tensor]


class GRPOSteps:
    """The GRPO training step, in front of an SFT trainer class (see the module docstring)."""

    def __init__(self, *args: Any, iovqa_args: IOVQAArguments, grid: Any = None, levels: Any = None, lead: int = 0,
                 stop_ids: tuple = (), word_tokens: Any = None, **kwargs: Any):
        if iovqa_args.level_scores:
            kwargs.update(iovqa_args=iovqa_args, levels=levels)
        super().__init__(*args, **kwargs)
        self._iovqa_args, self._grid, self._levels = iovqa_args, grid, levels
        self._lead, self._stop_ids = lead, list(stop_ids)
        # choice rows (preference, yes/no): their words' token paths, found as the level words' (words -> tokens)
        self._word_tokens, self._words_cache = word_tokens, {}
        choices = iovqa_args.choices
        self._choice_words = (choices.a, choices.b, choices.tie)
        self._group = iovqa_args.grpo_num_generations
        self._cache: dict[int, Rollouts] = {}
        self._micro_steps = 0
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._generator = torch.Generator().manual_seed(self.args.seed + self.args.process_index)
        if iovqa_args.grpo_beta and not _is_peft(self.model):
            raise PluginConfigError(
                "iovqa_grpo_beta > 0 needs a reference model: for LoRA runs it is the base model with the adapter "
                "disabled; full and freeze runs would need a second copy, which the plugin does not load (set "
                "iovqa_grpo_beta: 0 or finetuning_type: lora)"
            )
        disable_dropout_in_model(self.model)
        get_logger().info(
            "GRPO (%s answers): %d answers per prompt, rewards %s, beta %s, epsilon %s, loss %s, scale_rewards %s, "
            "num_iterations %d", iovqa_args.grpo_mode, self._group, iovqa_args.grpo_rewards, iovqa_args.grpo_beta,
            iovqa_args.grpo_epsilon, iovqa_args.grpo_loss_type, iovqa_args.grpo_scale_rewards,
            iovqa_args.grpo_num_iterations)

    # ------------------------------------------------------------------------------------------ data order
    def _get_train_sampler(self, train_dataset: Any = None):
        args = self.args
        prompts = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps // self._group
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return RepeatSampler(dataset, mini_repeat_count=self._group, batch_size=prompts,
                             repeat_count=self._iovqa_args.grpo_num_iterations, shuffle=True, seed=args.seed)

    # ------------------------------------------------------------------------------------------ the step
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: the SFT trainer's loss and metrics
            if not self._iovqa_args.level_scores:
                inputs = {k: v for k, v in inputs.items() if k not in ROLLOUT_KEYS}
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        rollouts = self._rollouts_for(model, inputs)
        iovqa_args = self._iovqa_args
        logps = completion_logps(model, rollouts.completions, iovqa_args.grpo_temperature)
        loss, stats = grpo_loss(
            logps, rollouts.advantages.to(logps.device), rollouts.completions.mask.to(logps.device),
            old_logps=rollouts.old_logps, ref_logps=rollouts.ref_logps, beta=iovqa_args.grpo_beta,
            epsilon_low=iovqa_args.grpo_epsilon, epsilon_high=iovqa_args.grpo_epsilon_high,
            loss_type=iovqa_args.grpo_loss_type, max_completion_length=iovqa_args.grpo_max_completion_length)
        if stats.kl is not None:
            self._metrics["kl"].append(stats.kl)
        self._metrics["clip_ratio"].append(stats.clip_ratio)
        return (loss, {"logits": logps}) if return_outputs else loss

    def _rollouts_for(self, model, inputs) -> Rollouts:
        """This micro-batch's rollouts: new ones on the first of num_iterations passes over a generation batch."""
        accumulation = self.args.gradient_accumulation_steps
        slot = self._micro_steps % accumulation
        # from the optimizer step, not a count of this process's calls: a run resumed from a checkpoint samples
        # anew where the uninterrupted run did
        fresh = self.state.global_step % self._iovqa_args.grpo_num_iterations == 0
        self._micro_steps += 1
        if fresh or slot not in self._cache:
            self._cache[slot] = self._new_rollouts(model, inputs, slot)
        return self._cache[slot]

    def _new_rollouts(self, model, inputs, slot: int = 0) -> Rollouts:
        iovqa_args, tokenizer = self._iovqa_args, self.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        labels = inputs["labels"]
        if labels.shape[0] % self._group:
            raise ValueError(f"a micro-batch of {labels.shape[0]} rows does not hold whole groups of "
                             f"{self._group} (per_device_train_batch_size must be a multiple of it)")
        rows, sets = self._label_rows(inputs, tokenizer)
        batch = {k: v for k, v in inputs.items() if k not in ROLLOUT_KEYS}
        closed = iovqa_args.grpo_mode == "answer_only"
        # answer-only rollouts start at the first score (a joint answer's first name is written for the model, as
        # the scorer writes it); thinking ones where the answer starts
        starts = answer_starts(labels, 0 if closed else self._lead + len(self._joint_head(tokenizer)[1]))
        pad = tokenizer.pad_token_id
        wording = joint_wording(batch["input_ids"], labels, len(iovqa_args.dimension_names), self._grid.steps) \
            if closed and iovqa_args.joint else None
        with _eval_mode(model), torch.no_grad():
            generators = self._group_generators(labels.shape[0] // self._group, slot)
            tokens = self._sample_closed(model, batch, starts, pad, sets, generators, wording) if closed else \
                self._generate(model, batch, starts, pad)
            # T-GRPO: the same prompts with their frames shuffled, answered for the temporal reward only
            shuffled = None
            if "temporal" in iovqa_args.grpo_rewards:
                frames = self._frames_shuffled(batch)
                shuffled = self._sample_closed(model, frames, starts, pad, sets, generators) if closed else \
                    self._generate(model, frames, starts, pad)
        answers = self._read(tokens, tokenizer)
        total, each = self._rewards(answers, rows, None if shuffled is None else self._read(shuffled, tokenizer))
        rewards = torch.tensor(total, dtype=torch.float32)
        advantages, group_std = group_advantages(rewards, self._group, iovqa_args.grpo_scale_rewards)
        for name, values in each.items():
            given = [v for v in values if v is not None]
            if given:  # the mean over the rows the reward rewards
                self._metrics[f"reward/{name}"].append(fmean(given))
        if "dimensions" in iovqa_args.grpo_rewards:
            self._log_dimensions(answers, rows)
        self._metrics["reward"].append(fmean(total))
        self._metrics["reward_std"].append(float(group_std.mean()))
        self._metrics["parseable"].append(fmean(float(a.parsed) for a in answers))
        drawn = None if wording is None else [joint_drawn(w, self._grid.steps, len(t)) for w, t in zip(wording, tokens)]
        completions = completion_batch(batch, starts, tokens, pad, drawn)
        old = ref = None
        with torch.no_grad():
            if iovqa_args.grpo_num_iterations > 1:
                old = completion_logps(model, completions, iovqa_args.grpo_temperature)
            if iovqa_args.grpo_beta:
                with _adapter_disabled(model):
                    ref = completion_logps(model, completions, iovqa_args.grpo_temperature)
        return Rollouts(completions, advantages, old, ref)

    def _label_rows(self, inputs, tokenizer) -> tuple[list[dict], list[Optional[tuple]]]:
        """(each row's reward fields: its MOS or its choice, and the prompt it answers; each row's answer set:
        None for the run's scores, else the words a choice row chooses from)."""
        iovqa_args = self._iovqa_args
        if iovqa_args.level_scores:  # the MOS of the annotation row (a level label is one of five)
            rows = [{"mos": float(m)} for m in inputs[MOS_KEY].tolist()]
            sets = [None] * len(rows)
        elif iovqa_args.joint:  # every dimension's MOS, read back from the label's scores
            names = iovqa_args.dimension_names
            rows, sets = [], [None] * inputs["labels"].shape[0]
            for i, text in enumerate(trained_texts(inputs["labels"], tokenizer, names)):
                found = read_joint_answer(text, names, iovqa_args.label_format)
                if any(mos is None for mos, _ in found.values()):
                    raise ValueError(f"GRPO reads every dimension's score from each joint row's label; batch row "
                                     f"{i}'s is {text!r}")
                rows.append({"dimensions": {name: mos for name, (mos, _) in found.items()}})
        else:
            rows, sets = [], []
            for i, text in enumerate(masked_texts(inputs["labels"], tokenizer)):
                row = label_row(text, self._iovqa_args.label_format, self._choice_words + YES_NO)
                if row is None:
                    raise ValueError(f"GRPO reads a score, a preference or a yes/no answer from each row's label; "
                                     f"batch row {i}'s is {text!r}")
                rows.append(row)
                sets.append(self._choice_set(text, row["choice"]) if "choice" in row else None)
        for i, row in enumerate(rows):
            row["group"] = i // self._group
        return rows, sets

    def _choice_set(self, text: str, choice: str) -> tuple[str, ...]:
        """The words a choice row's answer is drawn from: the run's choice words (the tie word when ties are
        answered), or yes / no spelt as the label spells its word."""
        if choice in self._choice_words:
            return self._iovqa_args.choices.answers
        word = text.strip().rstrip(".")
        case = next(c for c in CASES if c(word) == word) if any(c(word) == word for c in CASES) else str.lower
        return tuple(case(w) for w in YES_NO)

    def _read(self, tokens, tokenizer) -> list:
        iovqa_args = self._iovqa_args
        # answer-only joint rollouts start after the first dimension's name, which the prompt holds
        head = self._joint_head(tokenizer)[0] if iovqa_args.grpo_mode == "answer_only" else ""
        names = iovqa_args.dimension_names if iovqa_args.joint else ()
        return [parse_answer(head + tokenizer.decode(t, skip_special_tokens=True), iovqa_args.grpo_mode,
                             iovqa_args.label_format, names, words=self._choice_words + YES_NO) for t in tokens]

    def _joint_head(self, tokenizer) -> tuple[str, list[int]]:
        """(text, tokens) a joint answer writes before its first score ("traditional "); nothing without joint."""
        if not self._iovqa_args.joint:
            return "", []
        text = joint_prefix(self._iovqa_args.dimension_names, 0, [])
        return text, tokenizer.encode(text, add_special_tokens=False)

    def _log_dimensions(self, answers, rows) -> None:
        """Each dimension's score reward (the one the ``dimensions`` reward averages), its mean over the batch."""
        spec = {k: v for k, v in self._iovqa_args.grpo_rewards["dimensions"].items() if k not in ("weight", "weights")}
        for name in self._iovqa_args.dimension_names:
            alone = [{"dimensions": {name: row["dimensions"][name]}} for row in rows if row.get("dimensions")]
            if alone:
                read = [a for a, row in zip(answers, rows) if row.get("dimensions")]
                self._metrics[f"reward/dimensions/{name}"].append(fmean(REWARDS["dimensions"].function(read, alone,
                                                                                                       **spec)))

    def _rewards(self, answers, rows, shuffled) -> tuple[list[float], dict[str, list[float]]]:
        """Each answer's weighted reward and each reward's values; ``temporal`` also reads the shuffled answers."""
        specs = self._iovqa_args.grpo_rewards
        plain = {name: spec for name, spec in specs.items() if name != "temporal"}
        total, each = combine(answers, rows, plain) if plain else ([0.0] * len(answers), {})
        if shuffled is not None:
            size = len(answers)
            both = rows + [dict(row, shuffled=True) for row in rows]
            extra, values = combine(answers + shuffled, both, {"temporal": specs["temporal"]}, check=False)
            total = [a + b for a, b in zip(total, extra[:size])]
            each["temporal"] = values["temporal"][:size]
            self._metrics["parseable_shuffled"].append(fmean(float(a.parsed) for a in shuffled))
        return total, each

    def _frames_shuffled(self, batch) -> dict:
        """The batch with every video's frames in a random order other than the original one."""
        grid = batch.get("video_grid_thw")
        if grid is None:
            raise ValueError("the temporal reward shuffles video frames; this batch has no video")
        vision = _unwrap_config(self.model).vision_config
        temporal_patch = vision.temporal_patch_size
        orders = frame_orders([int(t) * temporal_patch for t in grid[:, 0].tolist()], self._generator)
        pixels = shuffle_frames(batch["pixel_values_videos"], grid, temporal_patch, vision.patch_size, orders)
        return {**batch, "pixel_values_videos": pixels}

    def _group_generators(self, groups: int, slot: int):
        """One random generator per group of this micro-batch, seeded by the run's seed, the optimizer step and the
        group's place in the global batch: a prompt's answers are the same whichever process draws them, so
        N processes sample what one process does (a bare step outside a Trainer: the one generator)."""
        args, state = getattr(self, "args", None), getattr(self, "state", None)
        if args is None or state is None:
            return self._generator
        first = (slot * args.world_size + args.process_index) * groups
        return [torch.Generator().manual_seed(group_seed(args.seed, state.global_step, first + k))
                for k in range(groups)]

    def _sample_closed(self, model, batch, starts, pad, sets, generators=None, wording=None) -> list[list[int]]:
        """Each group's answers drawn token by token from the policy's exact next-token distributions over its
        answer set (the run's scores, or a choice row's words), one prefill per prompt. ``wording``: joint
        answers' (:func:`joint_wording`): their scores are drawn one after the other (:meth:`_sample_joint`)."""
        size, group = batch["input_ids"].shape[0], self._group
        out: list[Optional[list[int]]] = [None] * size
        iovqa_args = self._iovqa_args
        generators = self._generator if generators is None else generators

        def rngs(rows):
            return [generators[i // group] for i in rows] if isinstance(generators, list) else generators

        for answers in self._answer_sets([sets[i] for i in range(0, size, group)]):
            firsts = [i for i in range(0, size, group) if sets[i] == answers]
            grid, levels = (self._grid, self._levels) if answers is None else (None, self._words(answers))
            if not firsts:  # another process's answer set: ZeRO-3 needs the same forwards on every process
                _idle_forward(model, prompt_batch(batch, starts, pad), grid, levels)
                continue
            if wording is not None and answers is None:  # joint answers: score by score
                self._sample_joint(model, batch, starts, pad, firsts, out, wording, rngs)
                continue
            unique, n = select_rows(batch, firsts), group  # one prompt per group (its rows are the same prompt)
            if unique is None:  # inputs select_rows cannot split: every row its own prompt, one draw each
                firsts = [i for i in range(size) if sets[i] == answers]
                unique, n = batch, 1
                first, second = answer_logits(model, prompt_batch(unique, starts, pad), grid, levels, lazy=True)
                first, second = first[firsts], _rows_of(second, firsts)
            else:
                first, second = answer_logits(model, prompt_batch(unique, starts[firsts], pad), grid, levels,
                                              lazy=True)
            drawn = sample_completions(first, second, n, grid, levels, iovqa_args.grpo_temperature,
                                       iovqa_args.grpo_top_p, rngs(firsts))
            for k, row in enumerate(firsts):
                out[row:row + n] = drawn[k * n:(k + 1) * n]
        return out

    def _sample_joint(self, model, batch, starts, pad, firsts, out, wording, rngs) -> None:
        """Joint answers of the groups whose first rows are ``firsts``, in ``out`` in place: the scores drawn one
        after the other, dimension k's from the policy's exact distribution after the answer so far (the earlier
        scores drawn, the wording between them as the row's label writes it), as the scorer decodes a joint answer
        score by score. One prefill per prompt, its cache carried along the distinct answers so far of each prompt
        (:class:`AnswersSoFar`), and one batched step for each dimension's second digits. An answer whose score
        left the grid ends there (unreadable)."""
        grid, iovqa_args, group = self._grid, self._iovqa_args, self._group
        unique = select_rows(batch, firsts)
        if unique is None:  # inputs select_rows cannot split: every row its own prompt
            prompts, place = prompt_batch(batch, starts, pad), {i: i for i in range(len(out))}
        else:
            prompts = prompt_batch(unique, starts[firsts], pad)
            place = {i: k for k, f in enumerate(firsts) for i in range(f, f + group)}
        answers = AnswersSoFar(model, prompts, grid)
        groups: dict[tuple, list[int]] = {}  # (prompt, answer so far) -> its rows: one distribution each
        for i in (i for f in firsts for i in range(f, f + group)):
            groups.setdefault((place[i], ()), []).append(i)
        keys = list(groups)
        answers.extend([p for p, _ in keys], [[] for _ in keys])
        dimensions, synced = len(iovqa_args.dimension_names), getattr(getattr(self, "args", None), "world_size", 1) > 1
        for k in range(dimensions):
            if keys:
                drawn = iter(sample_completions(answers.logits, answers.second, [len(groups[key]) for key in keys],
                                                grid, None, iovqa_args.grpo_temperature, iovqa_args.grpo_top_p,
                                                rngs([groups[key][0] for key in keys])))
            else:  # no answer went on here: under ZeRO-3 every process still runs the same forwards
                answers.second(torch.tensor([0]), torch.tensor([0]))
            going: dict[tuple, list[int]] = {}
            parent: dict[tuple, int] = {}
            for m, key in enumerate(keys):
                for i in groups[key]:
                    out[i] = list(key[1]) + next(drawn)
                    if k + 1 < dimensions and grid.value(out[i][len(key[1]):]) is not None:
                        longer = (key[0], tuple(out[i] + wording[i][k]))
                        going.setdefault(longer, []).append(i)
                        parent[longer] = m
            if k + 1 == dimensions or not (going or synced):
                break
            if going:
                answers.extend([parent[key] for key in going],
                               [key[1][len(keys[parent[key]][1]):] for key in going])
            else:  # the other processes' step over their answers so far, on a stand-in of the same length
                answers.extend([0], [[0] * (grid.steps + len(wording[firsts[0]][k]))])
            keys, groups = list(going), going

    def _answer_sets(self, present: list) -> list:
        """The answer sets of this micro-batch, or with several processes those of every process's, in one order
        (under ZeRO-3 every process must run the same forwards)."""
        present = list(dict.fromkeys(present))
        args = getattr(self, "args", None)
        if args is None or args.world_size == 1:
            return present
        from accelerate.utils import gather_object

        return list(dict.fromkeys(gather_object(present)))

    def _words(self, answers: tuple[str, ...]):
        if answers not in self._words_cache:
            if self._word_tokens is None:
                raise ValueError(f"this run's trainer cannot find the token paths of the answers {answers}")
            self._words_cache[answers] = self._word_tokens(answers)
        return self._words_cache[answers]

    def _generate(self, model, batch, starts, pad) -> list[list[int]]:
        """Thinking answers: one sampled completion per row, cut after its first stop token."""
        prompts = prompt_batch(batch, starts, pad)
        inputs = {k: v for k, v in prompts.items() if k not in ("position_ids", "rope_deltas", "video_metadata")}
        inputs["mm_token_type_ids"] = self._mm_token_type_ids(prompts["input_ids"])
        iovqa_args = self._iovqa_args
        out = _unwrap_for_generation(model).generate(
            **inputs, do_sample=True, temperature=iovqa_args.grpo_temperature, top_p=iovqa_args.grpo_top_p,
            max_new_tokens=iovqa_args.grpo_max_completion_length, eos_token_id=self._stop_ids, pad_token_id=pad,
            synced_gpus=is_deepspeed_zero3_enabled() and self.args.world_size > 1)  # ZeRO-3: every rank steps
        new = out[:, prompts["input_ids"].shape[1]:].tolist()
        completions = []
        for row in new:
            end = next((i + 1 for i, t in enumerate(row) if t in self._stop_ids), len(row))
            completions.append(row[:end])
        return completions

    def _mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        types = torch.zeros_like(input_ids)
        for token, kind in (("<|image_pad|>", 1), ("<|video_pad|>", 2)):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != tokenizer.unk_token_id:
                types[input_ids == token_id] = kind
        return types

    # ------------------------------------------------------------------------------------------ logging
    def log(self, logs, *args, **kwargs):
        if self._metrics and "loss" in logs:  # means since the last training log
            for name, values in self._metrics.items():
                logs[name] = round(fmean(values), 6)
            self._metrics.clear()
        return super().log(logs, *args, **kwargs)


def group_seed(seed: int, step: int, group: int) -> int:
    """The seed of one group's answers at one optimizer step."""
    return (seed * 1_000_003 + step) * 1_000_033 + group


def _idle_forward(model, prompts, grid, levels) -> None:
    """The forwards of an answer set's rollout (prefill and step) on this process's prompts, results unused."""
    first, second = answer_logits(model, prompts, grid, levels, lazy=True)
    if callable(second):
        second(torch.tensor([0]), torch.tensor([0]))


def _rows_of(second, rows: list[int]):
    """``answer_logits``'s second-position logits (a tensor, a lazy function or None) for ``rows`` of its batch."""
    if second is None or not callable(second):
        return None if second is None else second[rows]
    index = torch.tensor(rows)
    return lambda picked, digits: second(index[picked], digits)


def _is_peft(model) -> bool:
    inner = getattr(model, "module", model)
    return hasattr(inner, "disable_adapter")


def _unwrap_config(model):
    return getattr(model, "module", model).config


def _unwrap_for_generation(model):
    return getattr(model, "module", model)


@contextlib.contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextlib.contextmanager
def _adapter_disabled(model):
    """The reference policy: the same weights with the LoRA adapter off (no second copy)."""
    inner = getattr(model, "module", model)
    with inner.disable_adapter():
        yield


class GRPOTrainer(GRPOSteps, LabelledLogitsTrainer):
    """GRPO for integer-label runs (evaluation: the labelled-position SFT trainer's)."""


class LevelGRPOTrainer(GRPOSteps, LevelTrainer):
    """GRPO for level-word runs (evaluation: the level trainer's)."""
