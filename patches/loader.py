"""Target: ``llamafactory.data.loader._load_single_dataset`` (looked up by ``_get_merged_dataset`` at call time).

An ``iovqa`` dataset is read by the plugin's annotation reader, every cell as
text, instead of ``datasets``' JSON/CSV builders, which infer one type per
column: a MOS written as text among numbers (``"3.25"`` next to ``3.5``) made
them fail with no row number, and a CSV id such as ``007`` became the number 7.
The formatter then checks every row itself (file, row and field in each error).
Datasets with any other formatting load exactly as before.
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
        run = active_run()
        rows = annotation_rows(path, sample_dimensions(run) if run is not None else ())
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
