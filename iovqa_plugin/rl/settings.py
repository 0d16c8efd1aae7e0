"""The GRPO recipe keys: a dataclass the plugin's one settings dataclass (``config.IOVQAArguments``) inherits,
as LLaMA-Factory's ``FinetuningArguments`` inherits its LoRA / freeze / RLHF argument groups.

Entry: ``iovqa_rl: grpo`` on ``stage: sft``. LLaMA-Factory 0.9.5 checks ``stage`` against its own list
(pt, sft, rm, ppo, dpo, kto) and dispatches on it inside ``run_exp``; ``stage: sft`` already builds what GRPO
needs here (the template-rendered prompt, the label that carries the MOS, the frames, the collator), so the
plugin swaps only the trainer, like its other training variants (head, rank loss), and a new stage value
with its own parser and workflow patches is not needed.

The algorithm's keys carry TRL's ``GRPOConfig`` names after ``iovqa_grpo_`` (``iovqa_grpo_num_generations``,
``iovqa_grpo_beta``, ...). The prefix keeps them apart from LLaMA-Factory's own keys of the same name
(``temperature`` and ``top_p`` are its generation keys, read by ``predict_with_generate`` and ``chat``) and
makes every plugin key one pattern, ``iovqa_*``, that the plugin takes out of the recipe.

Standard library only: this module is imported while recipes are read.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

DEFAULT_REWARDS = {"answer_only": {"score_relative": 1.0}, "thinking": {"format": 1.0, "score_relative": 1.0}}


@dataclass
class GRPOArguments:
    """GRPO keys (``iovqa_rl``, ``iovqa_grpo_<TRL GRPOConfig name>``)."""

    rl: Literal["none", "grpo"] = field(
        default="none",
        metadata={
            "help": "`grpo`: train with GRPO (group relative policy optimisation) instead of SFT, on `stage: sft` "
            "with the same template, data and frames. Each prompt is answered iovqa_grpo_num_generations times, "
            "the answers are rewarded (iovqa_grpo_rewards) and the policy moves toward the better ones of its group."
        },
    )
    grpo_mode: Literal["answer_only", "thinking"] = field(
        default="answer_only",
        metadata={
            "help": "`answer_only`: the answers are the SFT answers (an integer 10..50, a level word, a joint line "
            "of dimension scores drawn score by score), sampled "
            "from the policy's exact next-token distributions at the answer's positions (no generation; a token "
            "off the set ends an unreadable answer). `thinking`: the model writes "
            "`<think>...</think><answer>...</answer>` (model.generate; the prompt must ask for that form)."
        },
    )
    grpo_rewards: Optional[dict] = field(
        default=None,
        metadata={
            "help": "Rewards and their weights, e.g. {score_relative: 1.0, format: 0.5}; a value may be a mapping "
            "{weight: w, <argument>: value} (e.g. {score_gaussian: {weight: 1, sigma: 0.3}}). Names: the registry "
            "(format, score_relative, score_threshold, score_gaussian, score_tiered, fidelity_rank, dimensions, "
            "choice, temporal, length) or a user reward `module:function`. Default: {score_relative: 1} "
            "(answer_only), {format: 1, score_relative: 1} (thinking); joint dimension answers: dimensions in "
            "place of score_relative."
        },
    )
    grpo_num_generations: int = field(
        default=8,
        metadata={"help": "Answers per prompt (the group size G; TRL num_generations). Must divide "
                  "per_device_train_batch_size, which counts answers, as in TRL."},
    )
    grpo_beta: float = field(
        default=0.0,
        metadata={"help": "Weight of the k3 KL estimate to the reference (TRL beta; the reference of a LoRA run is "
                  "the base model with the adapter disabled). 0: no reference pass."},
    )
    grpo_epsilon: float = field(
        default=0.2,
        metadata={"help": "Clipping range of the probability ratio (TRL epsilon): clip(r, 1 - eps, 1 + eps_high)."},
    )
    grpo_epsilon_high: Optional[float] = field(
        default=None,
        metadata={"help": "Upper clipping range (DAPO's clip-higher; TRL epsilon_high). Default: iovqa_grpo_epsilon."},
    )
    grpo_loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = field(
        default="dapo",
        metadata={
            "help": "Normalisation of the per-token loss (TRL loss_type): `grpo` mean over each answer's tokens, "
            "then over answers; `bnpo` over the micro-batch's tokens; `dr_grpo` sum / (answers x "
            "max_completion_length); `dapo` (TRL's default) sum / the tokens of the whole accumulated batch."
        },
    )
    grpo_scale_rewards: Literal["group", "batch", "none"] = field(
        default="group",
        metadata={"help": "Advantages: (r - group mean) divided by the group's reward std (`group`), the batch's "
                  "(`batch`) or not at all (`none`, Dr. GRPO); TRL scale_rewards."},
    )
    grpo_num_iterations: int = field(
        default=1,
        metadata={"help": "Policy updates per generation batch (TRL num_iterations, the paper's mu). Above 1, the "
                  "old policy's log-probs are kept from when the answers were sampled."},
    )
    grpo_temperature: float = field(
        default=1.0,
        metadata={"help": "Sampling temperature of the rollouts (TRL temperature), per token as generate samples."},
    )
    grpo_top_p: float = field(
        default=1.0,
        metadata={"help": "Nucleus sampling of the rollouts (TRL top_p), per token as generate samples."},
    )
    grpo_max_completion_length: int = field(
        default=256,
        metadata={"help": "Most tokens of a thinking answer (TRL max_completion_length); also dr_grpo's divisor."},
    )

    # called by IOVQAArguments.__post_init__ once the other keys are checked
    def _check_grpo(self) -> None:
        from ..config import PluginConfigError, _default

        if not self.rl_on:
            set_keys = [f"iovqa_{name}" for name in GRPO_FIELDS
                        if name != "rl" and getattr(self, name) != _default(name)]
            if set_keys:
                raise PluginConfigError(f"{', '.join(set_keys)}: read with iovqa_rl: grpo only (this recipe has no "
                                        "iovqa_rl)")
            return
        if not (self.integer_scores or self.level_scores) or self.head_on or self.rank_on:
            raise PluginConfigError(
                "iovqa_rl: grpo needs iovqa_label_format integer or level with iovqa_label_mask: digits (the "
                "label carries the MOS and marks where the answer starts), no iovqa_head and no iovqa_rank_loss"
            )
        if self.grpo_num_generations < 2:
            raise PluginConfigError(f"iovqa_grpo_num_generations must be >= 2 (a group), got "
                                    f"{self.grpo_num_generations}")
        if not 0 <= self.grpo_beta < math.inf:
            raise PluginConfigError(f"iovqa_grpo_beta must be a number >= 0, got {self.grpo_beta}")
        for name in ("grpo_epsilon", "grpo_epsilon_high"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise PluginConfigError(f"iovqa_{name} must be > 0, got {value}")
        if not 0 < self.grpo_temperature < math.inf:
            raise PluginConfigError(f"iovqa_grpo_temperature must be > 0, got {self.grpo_temperature}")
        if not 0 < self.grpo_top_p <= 1:
            raise PluginConfigError(f"iovqa_grpo_top_p must be in (0, 1], got {self.grpo_top_p}")
        for name in ("grpo_num_iterations", "grpo_max_completion_length"):
            if getattr(self, name) < 1:
                raise PluginConfigError(f"iovqa_{name} must be >= 1, got {getattr(self, name)}")
        self.grpo_rewards = self._checked_rewards()

    def _checked_rewards(self) -> dict[str, dict[str, Any]]:
        """``{name: {"weight": w, **arguments}}``, every name, weight and argument checked."""
        from ..config import PluginConfigError
        from .rewards import REWARDS, reward_function

        defaults = DEFAULT_REWARDS[self.grpo_mode]
        if self.joint:  # a joint answer holds every dimension's score: the multi-dimension reward reads them
            defaults = {("dimensions" if name == "score_relative" else name): w for name, w in defaults.items()}
        given = self.grpo_rewards if self.grpo_rewards is not None else defaults
        if not isinstance(given, dict) or not given:
            raise PluginConfigError(f"iovqa_grpo_rewards must map reward names to weights, got {given!r}")
        checked = {}
        for name, spec in given.items():
            spec = dict(spec) if isinstance(spec, dict) else {"weight": spec}
            weight = spec.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
                raise PluginConfigError(f"iovqa_grpo_rewards[{name}]: the weight must be a number >= 0, got {weight!r}")
            if name not in REWARDS and ":" not in name:
                close = difflib.get_close_matches(name, REWARDS, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise PluginConfigError(f"iovqa_grpo_rewards: unknown reward {name!r}{hint} Known: "
                                        f"{', '.join(REWARDS)}, or a user reward as module:function")
            try:
                function = reward_function(name)
            except (ImportError, AttributeError, ValueError) as err:
                raise PluginConfigError(f"iovqa_grpo_rewards: cannot load the user reward {name!r}: {err}") from None
            if name in REWARDS and REWARDS[name].thinking_only and self.grpo_mode != "thinking":
                raise PluginConfigError(f"iovqa_grpo_rewards: {name!r} rewards the reasoning of a thinking answer; "
                                        "this recipe's answers are answer_only (set iovqa_grpo_mode: thinking)")
            arguments = {k: v for k, v in spec.items() if k != "weight"}
            parameters = inspect.signature(function).parameters
            accepted = set(parameters) - {"answers", "rows"}
            unknown = sorted(set(arguments) - accepted)
            if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                raise PluginConfigError(f"iovqa_grpo_rewards[{name}]: unknown argument(s) {unknown} (it takes "
                                        f"{sorted(accepted) or 'none'})")
            self._check_dimension_reward(name, arguments)
            if name == "temporal" and self.num_frames < 4:
                raise PluginConfigError(f"iovqa_grpo_rewards: temporal shuffles the frames, which needs "
                                        f"iovqa_num_frames >= 4, got {self.num_frames}")
            checked[name] = {"weight": float(weight), **arguments}
        return checked

    def _check_dimension_reward(self, name: str, arguments: dict) -> None:
        """A joint recipe's answers hold several scores, read by the rewards that read dimensions; the
        ``dimensions`` reward needs them (and weights of the recipe's dimensions)."""
        from ..config import PluginConfigError
        from .rewards import REWARDS

        reads = REWARDS[name].reads if name in REWARDS else None
        if name == "dimensions":
            if not self.joint:
                raise PluginConfigError(
                    "iovqa_grpo_rewards: 'dimensions' rewards each score of a joint answer; this recipe's answers "
                    "hold one score (set iovqa_dimensions with iovqa_dimension_layout: joint, or use score_relative)")
            weights = arguments.get("weights") or {}
            unknown = sorted(set(weights) - set(self.dimension_names)) if isinstance(weights, dict) else weights
            if unknown:
                raise PluginConfigError(f"iovqa_grpo_rewards[dimensions]: weights must map this recipe's dimensions "
                                        f"{list(self.dimension_names)} to numbers, got {weights!r}")
            bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, (int, float))
                   or not 0 <= v < math.inf}
            if bad:
                raise PluginConfigError(f"iovqa_grpo_rewards[dimensions]: weights must be numbers >= 0, got {bad}")
        elif self.joint and (name == "temporal" or reads is not None and "dimensions" not in reads):
            raise PluginConfigError(
                f"iovqa_grpo_rewards: {name!r} reads one score (or choice) per answer; a joint answer holds one per "
                "dimension: use dimensions (a score reward per dimension, weighted) or score_tiered")

    @property
    def rl_on(self) -> bool:
        """The run trains with GRPO instead of SFT."""
        return self.rl != "none"


GRPO_FIELDS = tuple(GRPOArguments.__dataclass_fields__)
GRPO_CHOICES = ("rl", "grpo_mode", "grpo_loss_type", "grpo_scale_rewards")


def check_batch(settings: GRPOArguments, recipe: dict[str, Any]) -> None:
    """The recipe's LLaMA-Factory keys that GRPO constrains (called when the recipe is read)."""
    from ..config import PluginConfigError

    if not settings.rl_on:
        return
    stage = recipe.get("stage", "sft")
    if stage != "sft":
        raise PluginConfigError(f"iovqa_rl: grpo runs on stage: sft (it replaces the SFT trainer), got stage: {stage}")
    batch = recipe.get("per_device_train_batch_size", 8)  # transformers' default
    if int(batch) % settings.grpo_num_generations:
        raise PluginConfigError(
            f"per_device_train_batch_size ({batch}) must be a multiple of iovqa_grpo_num_generations "
            f"({settings.grpo_num_generations}): it counts answers, and every group of a prompt's answers sits in "
            "one micro-batch (as in TRL)"
        )
