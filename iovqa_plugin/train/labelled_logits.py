"""Causal-LM loss with the output layer applied only where the loss is.

In a score-only run 2 of every ~300-1000 positions of a sample carry a label,
yet the stock forward applies the vocabulary-wide output layer at every
position, keeps a batch x sequence x vocabulary logits tensor, upcasts it to
float32 for the loss and keeps its gradient. Here the model is called with
``logits_to_keep`` set to the positions whose *next* label is not
IGNORE_INDEX (the union over the batch's rows; transformers 5.x causal-LM and
VLM forwards, Qwen2.5-VL's included, index the last hidden states with it), so
the output layer runs inside the model's own forward (DeepSpeed ZeRO-3's
parameter gathering, PEFT wrappers and forward hooks such as LLaMA-Factory's
``upcast_lmhead_output`` apply as usual) on those positions only. Gradient
checkpointing is unaffected (it wraps the decoder layers; the output layer
runs after them). Under bf16 the kept logits are upcast to float32 for the
loss exactly as the stock loss upcasts all of them.

The loss is transformers' ``ForCausalLMLoss`` term for term: next-token
targets (labels shifted by one, IGNORE_INDEX appended), float32
cross-entropy with ``ignore_index=-100``; summed and divided by
``num_items_in_batch`` when it is given, else the mean over labelled
targets. A kept position that is labelled in one row but not in another has
target IGNORE_INDEX in the latter, so the set of terms is the stock one.

What stock LLaMA-Factory 0.9.5 / transformers 5.6 do to the SFT loss, and
what this path does about it (the refusals are checked when the trainer is
built, by ``unsupported_loss_settings`` in the LLaMA-Factory adapter; each
message names the key and says to set ``iovqa_labelled_logits: false``):

- ``num_items_in_batch``: LLaMA-Factory sets ``model_accepts_loss_kwargs``
  False for every run with a processor (all VLMs), so the Trainer passes no
  count; each micro-batch loss is a mean and the Trainer divides it by the
  gradient-accumulation steps. When the model does accept loss kwargs the
  Trainer's count (summed over the accumulated micro-batches, and gathered
  across ranks with ``average_tokens_across_devices``) is used as the
  divisor, and the loss is multiplied by the number of processes as the
  Trainer does. Reproduced (the caller passes what the model would get).
- ``use_dft_loss``, ``use_eaft_loss``, ``use_asft_loss`` (LLaMA-Factory's
  alternative SFT losses, set as ``compute_loss_func``; ASFT also needs a
  reference model's full logits): refused.
- ``label_smoothing_factor`` (the Trainer's LabelSmoother, which smooths
  over the whole vocabulary at every position): refused.
- any other ``compute_loss_func``: refused.
- a model loss function other than ``ForCausalLMLoss`` (``loss_type``): refused.
- context / sequence parallelism (``parallelism_config``; shards the
  sequence and replaces the loss): refused.
- several GPUs in one process (``nn.DataParallel`` would split the kept
  positions across replicas): refused.
- ``enable_liger_kernel`` (its fused linear cross-entropy replaces the model
  forward): refused; the full logits it avoids are not built here either.
- ``shift_labels`` in the inputs (context parallelism's pre-shifted
  targets): used as the targets, as ``ForCausalLMLoss`` does.
- evaluation (``eval_loss``, and the logits handed to
  ``preprocess_logits_for_metrics``): the same loss; the logits are the
  labelled positions packed by ``compact_for_metrics``, which the score
  expectation and LLaMA-Factory's argmax accuracy read with the stock values.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE_INDEX


class LabelledLogitsError(RuntimeError):
    """The model or run cannot take the labelled-position loss."""


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) targets: position t predicts label t+1; the last position predicts nothing."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def labelled_positions(targets: torch.Tensor) -> torch.Tensor:
    """Sorted 1-D positions whose target is labelled in at least one row."""
    return (targets != IGNORE_INDEX).any(dim=0).nonzero().flatten()


def forward_at(model: torch.nn.Module, inputs: dict[str, Any], positions: torch.Tensor) -> Any:
    """The model's outputs with logits (B, K, V) at ``positions`` only; ``inputs`` must hold no labels."""
    outputs = model(**inputs, logits_to_keep=positions)
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    if logits.dim() != 3 or logits.shape[1] != positions.numel():
        raise LabelledLogitsError(
            f"the model's forward returned logits of shape {tuple(logits.shape)} for {positions.numel()} kept "
            f"positions: it does not honour a tensor `logits_to_keep` (set iovqa_labelled_logits: false)"
        )
    return outputs


def causal_lm_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch: Optional[Any] = None
) -> torch.Tensor:
    """transformers' ``ForCausalLMLoss`` reduction on already shifted targets."""
    logits = logits.float().reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="mean")
    loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def labelled_loss(
    model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Optional[Any] = None,
    loss_function: Callable[..., torch.Tensor] = causal_lm_loss,
) -> tuple[torch.Tensor, Any]:
    """(loss, outputs) with the stock causal-LM loss; ``outputs.logits`` is (B, K, V) at ``outputs.positions``.

    ``inputs`` is the batch as the Trainer passes it (with ``labels``; left unchanged).
    ``num_items_in_batch`` is what the stock path would hand the model's loss (None: mean).
    ``loss_function(logits, kept_targets, num_items_in_batch)`` replaces the causal-LM loss (soft level targets).
    """
    inputs = dict(inputs)
    labels = inputs.pop("labels", None)
    shift_labels = inputs.pop("shift_labels", None)
    if labels is None and shift_labels is None:
        raise LabelledLogitsError("the batch has no `labels`: nothing to compute the loss on")
    targets = shift_labels if shift_labels is not None else next_token_targets(labels)
    positions = labelled_positions(targets)
    outputs = forward_at(model, inputs, positions)
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    kept_targets = targets[:, positions.to(targets.device)]
    loss = loss_function(logits, kept_targets, num_items_in_batch)
    if isinstance(outputs, dict):
        outputs["loss"] = loss
        outputs["positions"] = positions
        outputs["targets"] = kept_targets
    return loss, outputs


def compact_for_metrics(logits: torch.Tensor, kept_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's labelled positions packed to the front, in the stock (logits, labels) alignment.

    Returns ``logits`` (B, M + 1, V) and ``labels`` (B, M + 1), M = most labelled positions in a row:
    ``logits[b, j]`` predicts ``labels[b, j + 1]`` (labels[:, 0] and unused slots are IGNORE_INDEX,
    unused logit slots zero), as full-sequence logits predict their labels shifted by one. Metrics that
    read logits at the position before a labelled token (argmax accuracy, the score expectation at the
    first score token) see the same values as on the full sequence.
    """
    labelled = kept_targets != IGNORE_INDEX
    rows, count = labelled.shape[0], int(labelled.sum(dim=1).max()) if labelled.numel() else 0
    slot = labelled.long().cumsum(dim=1) - 1  # rank of a labelled position within its row
    row_index, col_index = labelled.nonzero(as_tuple=True)
    packed = logits.new_zeros(rows, count + 1, logits.shape[-1])
    labels = kept_targets.new_full((rows, count + 1), IGNORE_INDEX)
    dest = slot[row_index, col_index]
    packed[row_index, dest] = logits[row_index, col_index]
    labels[row_index, dest + 1] = kept_targets[row_index, col_index]
    return packed, labels
