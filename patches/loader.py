"""Targets: ``llamafactory.data.loader._load_single_dataset`` (looked up by ``_get_merged_dataset`` at call time)
and ``get_dataset_list`` (bound at import, looked up by ``_get_merged_dataset`` at call time).

An ``iovqa`` dataset is read by the plugin's annotation reader, every cell as
text, instead of ``datasets``' JSON/CSV builders, which infer one type per
column: a MOS written as text among numbers (``"3.25"`` next to ``3.5``) made
them fail with no row number, and a CSV id such as ``007`` became the number 7.
The formatter then checks every row itself (file, row and field in each error).
Datasets with any other formatting load exactly as before.

LLaMA-Factory reads the `columns` keys it knows from ``dataset_info.json`` and
drops the others silently: for an ``iovqa`` dataset an unknown key is refused,
and its ``std`` column (the MOS's rater standard deviation) is carried on the
dataset's attributes to the formatter.
"""

from __future__ import annotations

import os
from typing import Any

from .converter import FORMATTING_NAME
from .support import patch_attribute

LOADER = "llamafactory.data.loader"


def apply_annotation_loader() -> None:
    """Load ``formatting: iovqa`` annotation files with the plugin's reader."""
    patch_attribute(LOADER, "_load_single_dataset", _with_annotation_reader)


def apply_dataset_entry_columns() -> None:
    """Refuse unknown `columns` keys of an ``iovqa`` dataset, and carry its ``std`` column to the formatter."""
    patch_attribute(LOADER, "get_dataset_list", _with_iovqa_columns)


def _with_iovqa_columns(original):
    def get_dataset_list(dataset_names: Any, dataset_dir: Any):
        attrs = original(dataset_names, dataset_dir)
        from iovqa_plugin.config import PluginConfigError
        from iovqa_plugin.data.datasets import iovqa_columns, read_dataset_info

        from .run import active_run

        info = dataset_dir if isinstance(dataset_dir, dict) else None
        for name, attr in zip(dataset_names or (), attrs):
            if getattr(attr, "formatting", None) != FORMATTING_NAME:
                continue
            if info is None:
                info = read_dataset_info(dataset_dir)
            attr.std = iovqa_columns(name, info.get(name) or {}).get("std")
            iovqa_args = active_run()
            if attr.std and not (iovqa_args and iovqa_args.soft_targets):
                raise PluginConfigError(f"dataset {name!r} maps the `std` column {attr.std!r}, which is read for "
                                        "iovqa_level_targets: soft only")
        return attrs

    return get_dataset_list


def _with_annotation_reader(original):
    def _load_single_dataset(dataset_attr: Any, model_args: Any, data_args: Any, training_args: Any):
        if getattr(dataset_attr, "formatting", None) != FORMATTING_NAME or dataset_attr.load_from != "file":
            return original(dataset_attr, model_args, data_args, training_args)
        import sys

        from datasets import Dataset

        from iovqa_plugin.data.annotations import annotation_rows
        from iovqa_plugin.data.dimensions import sample_dimensions

        from .run import active_run

        path = os.path.join(data_args.dataset_dir, dataset_attr.dataset_name)
        iovqa_args = active_run()
        rows = annotation_rows(path, sample_dimensions(iovqa_args) if iovqa_args is not None else ())
        loader = sys.modules[LOADER]
        stock_load_dataset = loader.load_dataset

        def load_dataset(*args: Any, **kwargs: Any):
            return Dataset.from_list(rows)

        # The rest of the original (sampling, max_samples, streaming, align_dataset) applies unchanged.
        loader.load_dataset = load_dataset
        try:
            return original(dataset_attr, model_args, data_args, training_args)
        finally:
            loader.load_dataset = stock_load_dataset

    return _load_single_dataset
