"""The inference loader: a trained model and its inputs, built by LLaMA-Factory as for training.

The scorer's only contact with LLaMA-Factory. The base model is loaded with
``from_pretrained`` and the LoRA adapter through peft, by LLaMA-Factory's own
``load_tokenizer`` / ``load_model`` (so the patched ``init_adapter`` restores
a softmax-regression head); prompts go through LLaMA-Factory's template and
multimodal plugin, batches through its collator: the inputs are those of
training, without the answer.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.train.head import add_label_token
from iovqa_plugin.data.labels import IGNORE_INDEX

from .run import run_scope
from .score_position import check_template_support


class InferenceModel:
    """Tokenizer, template, model and collator of a trained run, ready to encode and batch samples."""

    def __init__(self, model: str, adapter: Optional[str], template: str, model_keys: dict, iovqa_args: IOVQAArguments,
                 device: Optional[str] = None):
        from llamafactory.data import SFTDataCollatorWith4DAttentionMask, get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_model, load_tokenizer

        args = dict(model_keys, model_name_or_path=model, template=template)
        if adapter:
            args.update(adapter_name_or_path=adapter, finetuning_type="lora")
        model_args, data_args, finetuning_args, _ = get_infer_args(args)  # (a recipe without plugin keys)
        if device is not None:  # one rank of a data-parallel job: the whole model on its own device, not "auto"
            model_args.device_map = {"": torch.device(device)}
        modules = load_tokenizer(model_args)
        self.tokenizer, self.processor = modules["tokenizer"], modules["processor"]
        if iovqa_args.head_on:
            add_label_token(self.tokenizer)
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        # the template's tokens between the prompt and the score (e.g. "<think>\n\n</think>\n\n"), or none
        self.answer_prefix = check_template_support(self.template, self.tokenizer, template,
                                                    iovqa_args.label_format).prefix
        self.thought_tags = tuple(word.strip() for word in self.template.thought_words)
        with run_scope(iovqa_args):  # the patched init_adapter reads the run: the head is attached before PEFT loads it
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
        self.stop_ids = self.template.get_stop_token_ids(self.tokenizer)

    def encode(self, prompt: str, frames: list[str], image: bool = False) -> dict[str, Any]:
        """One sample's features: the evaluation prompt and its frames (``image``: the one file of an image),
        built like a training sample without answer."""
        return self.encode_media(prompt, [], [frames]) if not image else self.encode_media(prompt, list(frames), [])

    def encode_media(self, prompt: str, images: list[str], videos: list[list[str]],
                     prefix: Optional[list[int]] = None) -> dict[str, Any]:
        """A sample showing images and videos (a comparison's two, in prompt order), without answer; ``prefix``:
        the template's tokens before the answer (default: those before the score)."""
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
        mm_plugin = self.template.mm_plugin
        messages = mm_plugin.process_messages(messages, images, videos, [], self.processor)
        prompt_ids, _ = self.template.encode_oneturn(self.tokenizer, messages)
        prompt_ids = prompt_ids + list(self.answer_prefix if prefix is None else prefix)
        prompt_ids, _ = mm_plugin.process_token_ids(prompt_ids, None, images, videos, [], self.tokenizer,
                                                    self.processor)
        return {
            "input_ids": prompt_ids,
            "attention_mask": [1] * len(prompt_ids),
            "labels": [IGNORE_INDEX] * len(prompt_ids),
            "images": images,
            "videos": videos,
            "audios": [],
        }

    def batch(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Collated model inputs on the model's device (without labels)."""
        batch = self.collator([dict(f) for f in features])  # the collator pops media from what it is given
        batch.pop("labels", None)
        device = self.model.device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def level_tokens(self, words: Optional[tuple[str, ...]] = None):
        """The level words' token paths as this run's template writes the answer (level-word runs); ``words``:
        other answer words (a comparison's choice words)."""
        from .score_position import level_tokens

        return level_tokens(self.template, self.tokenizer) if words is None else level_tokens(
            self.template, self.tokenizer, words)

    def mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Which positions are image (1) or video (2) tokens, as ``generate`` needs for the rope index."""
        types = torch.zeros_like(input_ids)
        for token, kind in (("<|image_pad|>", 1), ("<|video_pad|>", 2)):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is not None and token_id != self.tokenizer.unk_token_id:
                types[input_ids == token_id] = kind
        return types
