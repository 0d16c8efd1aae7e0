"""The softmax-regression variant: ``<LABEL_1>`` -> MLP -> 5 grades -> expected score.

The paper's second method (and the fifth member of its ensemble): a special
token ``<LABEL_1>`` ends the prompt; the last hidden state at that token goes
through an MLP to 5 logits (bad, poor, fair, good, excellent = 1..5); their
softmax weights the grades into the predicted score.

What is trained: LoRA, this head, and exactly one embedding row, the one of
``<LABEL_1>`` (``LabelEmbedding``, injected in place of the token's row of
the frozen embedding matrix, so the matrix itself stays frozen and nothing
is resized). Both modules are attached to the model before PEFT wraps it and
are listed in ``modules_to_save``: they are saved with every adapter and
checkpoint and restored by ``resume_from_checkpoint`` and by PEFT loading.
Neither uses ``nn.Linear``, so ``lora_target: all`` cannot put LoRA on them.

Loss (``iovqa_head_loss``), the paper does not say which:

* ``soft_ce`` (default): cross-entropy against a soft target over the 5
  grades, a Gaussian around the MOS (sigma ``iovqa_head_sigma``) discretised
  on 1..5, as in DeQA-Score. It trains all 5 logits toward a distribution
  whose mean is (close to) the MOS, so the expected score stays calibrated,
  while giving every grade a gradient, not only the expectation.
* ``mse``: squared error of the expected score against the MOS.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import LEVELS
from ..data.prompt import LABEL_TOKEN
from .soft_targets import MOS_KEY, gaussian_levels

HEAD_MODULE = "iovqa_head"
EMBEDDING_MODULE = "iovqa_label_embedding"


class ScoreHead(nn.Module):
    """hidden -> Linear -> GELU -> Linear -> 5 grade logits (parameters held directly: not nn.Linear)."""

    def __init__(self, hidden_size: int, inner_size: int, grades: int = len(LEVELS)):
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(inner_size, hidden_size))
        self.b_in = nn.Parameter(torch.zeros(inner_size))
        self.w_out = nn.Parameter(torch.empty(grades, inner_size))
        self.b_out = nn.Parameter(torch.zeros(grades))
        nn.init.kaiming_uniform_(self.w_in, a=math.sqrt(5))
        nn.init.normal_(self.w_out, std=0.02)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = F.gelu(F.linear(hidden.to(self.w_in.dtype), self.w_in, self.b_in))
        return F.linear(x, self.w_out, self.b_out)


class LabelEmbedding(nn.Module):
    """The trainable embedding row of ``<LABEL_1>``; ``forward(like)`` returns it in ``like``'s dtype.

    (The argument exists because PEFT's ``modules_to_save`` wrapper forwards a first argument.)
    """

    def __init__(self, initial: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(initial.detach().clone().float())

    def forward(self, like: torch.Tensor) -> torch.Tensor:
        return self.weight.to(like.dtype)


def grade_probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1)


def expected_score(probabilities: torch.Tensor) -> torch.Tensor:
    grades = torch.tensor(LEVELS, device=probabilities.device, dtype=probabilities.dtype)
    return (probabilities * grades).sum(-1)


def soft_target(mos: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian around each MOS, discretised on the grades 1..5 (rows sum to 1): the level words' soft target."""
    return gaussian_levels(mos, sigma)


def head_loss(logits: torch.Tensor, mos: torch.Tensor, kind: str = "soft_ce", sigma: float = 0.5) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(expected_score(grade_probabilities(logits)), mos.float())
    if kind == "soft_ce":
        return -(soft_target(mos, sigma) * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
    raise ValueError(f"head loss must be 'soft_ce' or 'mse', got {kind!r}")


def check_label_counts(counts: list[int]) -> None:
    """Every row must hold exactly one ``<LABEL_1>``."""
    bad = [row for row, count in enumerate(counts) if count != 1]
    if bad:
        raise ValueError(
            f"batch row(s) {bad} hold {[counts[r] for r in bad]} {LABEL_TOKEN} token(s), expected 1: "
            "was it cut off by cutoff_len (raise cutoff_len or lower video_max_pixels)?"
        )


def label_positions(input_ids: torch.Tensor, label_id: int) -> torch.Tensor:
    """Index of the ``<LABEL_1>`` token in each row; an error unless there is exactly one per row."""
    hits = input_ids == label_id
    check_label_counts(hits.sum(dim=1).tolist())
    return hits.long().argmax(dim=1)


class HeadHooks:
    """Forward hooks that put ``<LABEL_1>``'s trainable row into the embeddings and keep the last hidden states."""

    def __init__(self, model: nn.Module, label_id: int):
        self.label_id = label_id
        self.hidden: Optional[torch.Tensor] = None
        self._row = module_of(model, EMBEDDING_MODULE)
        model.get_input_embeddings().register_forward_hook(self._inject)
        final_norm(model).register_forward_hook(self._keep)

    def _inject(self, module, args, output):
        input_ids = args[0] if args else None
        if input_ids is None:
            return output
        mask = input_ids == self.label_id
        if not mask.any():
            return output
        return torch.where(mask.unsqueeze(-1), self._row(output), output)

    def _keep(self, module, args, output):
        self.hidden = output


def module_of(model: nn.Module, name: str) -> nn.Module:
    """The (possibly PEFT-wrapped) head module attached to the base model."""
    for module_name, module in model.named_modules():
        if module_name.split(".")[-1] == name:
            return module
    raise AttributeError(f"the model has no {name} module (was it built with iovqa_head: softmax_regression?)")


def final_norm(model: nn.Module) -> nn.Module:
    """The text stack's final norm (its output is the last hidden state)."""
    for name, module in model.named_modules():
        if name.endswith("language_model.norm") or name.endswith("model.norm"):
            if "visual" not in name:
                return module
    raise AttributeError("cannot find the language model's final norm")


def add_label_token(tokenizer) -> int:
    """Add ``<LABEL_1>`` as a special token (idempotent); its id."""
    if LABEL_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [LABEL_TOKEN]}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(LABEL_TOKEN)


def _hidden_size(config) -> int:
    text = getattr(config, "text_config", None)
    return int(getattr(text, "hidden_size", None) or config.hidden_size)


def attach_head(model: nn.Module, inner_size: int = 0) -> None:
    """Give the base model its ``iovqa_head`` and ``iovqa_label_embedding`` (before PEFT wraps it)."""
    if hasattr(model, HEAD_MODULE):
        return
    hidden = _hidden_size(model.config)
    device = model.get_input_embeddings().weight.device
    if device.type == "meta":
        device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)  # the same initial head on every rank
    head = ScoreHead(hidden, inner_size or hidden)
    with torch.no_grad():
        for parameter in head.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * (1.0 / math.sqrt(parameter.shape[1])))
    # a small random row: the embedding matrix is not read (it may be sharded under ZeRO-3)
    row = torch.randn(hidden, generator=generator) * 0.02
    setattr(model, HEAD_MODULE, head.to(device))
    setattr(model, EMBEDDING_MODULE, LabelEmbedding(row).to(device))


def _stored_head(path: str):
    """(file, stored key, module, parameter) for every head tensor in a folder's safetensors files."""
    import glob
    import os

    from safetensors import safe_open

    for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with safe_open(file, framework="pt") as handle:
            keys = list(handle.keys())
        for key in keys:
            for module in (HEAD_MODULE, EMBEDDING_MODULE):
                if f"{module}." in key:
                    yield file, key, module, key.split(module + ".", 1)[1]


def checkpoint_head_keys(path: str) -> list[str]:
    """Names of head tensors stored in a model or adapter folder (safetensors)."""
    return [key for _, key, _, _ in _stored_head(path)]


def adapter_has_head(path: str) -> bool:
    import json
    import os

    config = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(config):
        return False
    with open(config, encoding="utf-8") as handle:
        modules = json.load(handle).get("modules_to_save") or []
    return HEAD_MODULE in modules


def load_head_weights(model: nn.Module, path: str) -> None:
    """Load a merged export's head (saved as ``iovqa_head.*`` / ``iovqa_label_embedding.*``) into ``model``."""
    from safetensors import safe_open

    state = {HEAD_MODULE: {}, EMBEDDING_MODULE: {}}
    for file, key, module, parameter in _stored_head(path):
        with safe_open(file, framework="pt") as handle:
            state[module][parameter] = handle.get_tensor(key)
    if not state[HEAD_MODULE]:
        raise ValueError(f"{path} holds no trained {HEAD_MODULE}: pass the adapter trained with the head")
    for module, tensors in state.items():
        getattr(model, module).load_state_dict(tensors)


class HeadForward:
    """Runs the model and the head: grade logits of each row's ``<LABEL_1>``."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any):
        self.label_id = add_label_token(tokenizer)
        self.hooks = HeadHooks(model, self.label_id)
        self.head = module_of(model, HEAD_MODULE)
        module_of(model, EMBEDDING_MODULE)  # present, or a clear error

    def __call__(self, model: torch.nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        positions = label_positions(inputs["input_ids"], self.label_id)
        inputs = {k: v for k, v in inputs.items() if k not in ("labels", MOS_KEY)}
        model(**inputs, use_cache=False, logits_to_keep=1)  # the LM head runs on the last position only
        hidden = self.hooks.hidden
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.head(hidden[rows, positions.to(hidden.device)])
