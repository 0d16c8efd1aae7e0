"""Fixes for bugs of the pinned transformers (5.6.0) on the GPU path; see README "Known transformers 5.6.0 bugs".

LLaMA-Factory 0.9.5 accepts transformers <= 5.6.0, and 5.6.0 is the first release with the Qwen2.5-VL video
positions of #45400 (5.3.0-5.5.x give every frame one temporal position, #45381: refused for the Qwen2-VL
templates by ``check_video_positions``). So 5.6.0 stays pinned and its remaining bugs are fixed here, each by
one named function, gated to exactly that version (elsewhere they change nothing: the targets' code differs).
``apply_transformers_fixes`` applies them when a plugin run loads its model (training's ``init_adapter`` and the
scorer's loader), so a recipe without plugin keys stays stock LLaMA-Factory, bugs included:

* ``flash_attention_forward`` calls ``s_aux.to(...)`` on the ``None`` every model without attention sinks
  passes: ``flash_attn: fa2`` crashes (transformers #45588; fixed in 5.6.1 by #45589, which LLaMA-Factory
  0.9.5 does not accept).
* Qwen2-VL / Qwen2.5-VL ``get_rope_index``: the seconds per temporal grid are truncated to an integer before
  scaling (#48669: at video_fps 3 or 4 every frame gets one temporal position, at 1.5 the step is 1 s instead of
  1.33 s), and the text after a video starts max(height, width) after it, not after its largest position as in
  Qwen's reference (transformers <= 5.2, vLLM), so with many frames it collides with the video's temporal
  positions. The replacement is Qwen's formula.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from packaging.version import Version

from iovqa_plugin.config import PluginConfigError

from .support import PatchTargetError, is_patched, mark_patched

FIXED_TRANSFORMERS = "5.6.0"
FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
# releases whose Qwen2-VL/2.5-VL video positions are wrong even for 2 frames (#45381): refused, not fixed
BROKEN_VIDEO_POSITIONS = ("5.3.0", "5.6.0")  # [first, fixed)


def _fixes_apply() -> bool:
    return version("transformers") == FIXED_TRANSFORMERS


def _target(module_name: str, owner: str, attribute: str) -> tuple[Any, Any]:
    """``module.owner`` (a class, or the module itself for ``owner=""``) and its attribute; raises if moved."""
    module = importlib.import_module(module_name)
    holder = getattr(module, owner) if owner else module
    if not hasattr(holder, attribute):
        raise PatchTargetError(f"{module_name}.{owner + '.' if owner else ''}{attribute} not found: transformers "
                               f"{FIXED_TRANSFORMERS}'s layout changed")
    return holder, getattr(holder, attribute)


def check_video_positions(template: Any, name: str) -> None:
    """Refuse a Qwen2-VL/2.5-VL video template on the transformers releases that misplace its frames."""
    installed = version("transformers")
    first, fixed = BROKEN_VIDEO_POSITIONS
    if type(template.mm_plugin).__name__ == "Qwen2VLPlugin" and Version(first) <= Version(installed) < Version(fixed):
        raise PluginConfigError(
            f"transformers {installed} gives the videos of template {name!r} (Qwen2-VL / Qwen2.5-VL) wrong 3-D "
            f"positions: every frame at one temporal position, scaled by its start (transformers #45381, fixed in "
            f"{fixed}). Install the tested set: pip install -c constraints.txt transformers=={FIXED_TRANSFORMERS}"
        )


def apply_transformers_fixes() -> None:
    """Every fix below (idempotent); called as a plugin run's model is loaded, before its first forward."""
    apply_flash_attention_sink_guard()
    apply_qwen2_5_vl_rope_index()
    apply_qwen2_vl_rope_index()


def apply_flash_attention_sink_guard() -> None:
    """``flash_attn: fa2`` (and fa3) without the ``s_aux`` crash of transformers 5.6.0 (#45588)."""
    if not _fixes_apply():
        return
    module, original = _target("transformers.integrations.flash_attention", "", "flash_attention_forward")
    if is_patched(original):
        return
    from transformers.modeling_utils import AttentionInterface

    registered = {name: AttentionInterface._global_mapping.get(name) for name in FLASH_IMPLEMENTATIONS}
    if registered["flash_attention_2"] is not original:
        raise PatchTargetError("transformers' AttentionInterface no longer maps flash_attention_2 to "
                               "integrations.flash_attention.flash_attention_forward")
    replacement = mark_patched(_guard_sinks(original), original)
    module.flash_attention_forward = replacement
    for name, function in registered.items():  # models look the function up here, by name, at every call
        if function is original:
            AttentionInterface._global_mapping[name] = replacement


class _NoSinks:
    """Stands in for a missing ``s_aux``: 5.6.0 calls ``s_aux.to(query.dtype)`` unconditionally, and this turns
    that call into the ``None`` the kernel call expects (what #45589 does in 5.6.1)."""

    def to(self, *args: Any, **kwargs: Any) -> None:
        return None


def _guard_sinks(original: Callable) -> Callable:
    def flash_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                                sliding_window=None, softcap=None, is_causal=None, s_aux=None, **kwargs):
        return original(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                        sliding_window=sliding_window, softcap=softcap, is_causal=is_causal,
                        s_aux=_NoSinks() if s_aux is None else s_aux, **kwargs)

    return flash_attention_forward


def apply_qwen2_5_vl_rope_index() -> None:
    """Qwen2.5-VL video positions by Qwen's formula (fractional seconds per grid, text after the whole video)."""
    _replace_rope_index("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "Qwen2_5_VLModel")


def apply_qwen2_vl_rope_index() -> None:
    """Qwen2-VL video positions by Qwen's formula (text after the whole video; one temporal step per grid)."""
    _replace_rope_index("transformers.models.qwen2_vl.modeling_qwen2_vl", "Qwen2VLModel")


def _replace_rope_index(module_name: str, class_name: str) -> None:
    if not _fixes_apply():
        return
    model_class, original = _target(module_name, class_name, "get_rope_index")
    if not is_patched(original):
        model_class.get_rope_index = mark_patched(_qwen_positions(original), original)


def _qwen_positions(original: Callable) -> Callable:
    """The formula behind the original's signature, which LLaMA-Factory's collator inspects (it passes
    ``mm_token_type_ids`` only to a function that names it); the arguments are bound as the original binds them."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def get_rope_index(*args: Any, **kwargs: Any):
        arguments = signature.bind(*args, **kwargs).arguments
        arguments.pop("kwargs", None)  # what the original ignores too
        return _qwen_rope_index(**arguments)

    return get_rope_index


def _qwen_rope_index(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                     second_per_grid_ts=None, attention_mask=None):
    """3-D positions: text counts on from the last position; a video (or image) starting at ``s`` gets
    ``(s + floor(g * seconds_per_grid * tokens_per_second), s + row, s + column)`` for its temporal grid ``g``
    (Qwen2-VL, without ``tokens_per_second``: ``s + g``); the text after it starts one past its largest position.
    Same signature and return as transformers 5.6.0's (deltas against the unpadded length, as its generation
    expects)."""
    import torch

    vision = self.config.vision_config
    merge = vision.spatial_merge_size
    tokens_per_second = getattr(vision, "tokens_per_second", None)
    grids = {1: iter(image_grid_thw.tolist() if image_grid_thw is not None else ()),
             2: iter(video_grid_thw.tolist() if video_grid_thw is not None else ())}
    seconds = iter(second_per_grid_ts if second_per_grid_ts is not None else ())
    device = input_ids.device
    position_ids = torch.zeros(3, *input_ids.shape, dtype=input_ids.dtype, device=device)
    deltas = []
    for row in range(input_ids.shape[0]):
        kept = attention_mask[row].bool() if attention_mask is not None else torch.ones_like(input_ids[row]).bool()
        chunks, start = [], 0
        for kind, run in itertools.groupby(mm_token_type_ids[row][kept].tolist()):
            length = len(list(run))
            if kind == 0:
                chunks.append(torch.arange(length, device=device).expand(3, -1) + start)
            else:
                t, h, w = next(grids[kind])
                h, w = h // merge, w // merge
                step = 1.0  # images: one grid; Qwen2-VL videos: one position per grid
                if kind == 2 and tokens_per_second is not None:
                    seconds_per_grid = float(next(seconds, 1.0))
                    step = seconds_per_grid * tokens_per_second
                # floor of g x step; the epsilon keeps an exact product (3 x 2/3 s x 4/s = 8) from flooring to 7
                time = torch.floor(torch.arange(t, dtype=torch.float64, device=device) * step + 1e-6).long()
                chunks.append(torch.stack([
                    time.repeat_interleave(h * w),
                    torch.arange(h, device=device).repeat_interleave(w).repeat(t),
                    torch.arange(w, device=device).repeat(h * t),
                ]) + start)
            start = int(chunks[-1].max()) + 1
        positions = torch.cat(chunks, dim=1) if chunks else torch.zeros(3, 0, dtype=torch.long, device=device)
        position_ids[:, row, kept] = positions.to(position_ids.dtype)
        deltas.append(start - int(kept.sum()))
    return position_ids, torch.tensor(deltas, device=device).unsqueeze(1)
