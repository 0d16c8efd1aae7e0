"""The plugin's logger: one line per event, prefixed ``[iovqa]`` and the rank."""

from __future__ import annotations

import logging
import os
import sys

_NAME = "iovqa_plugin"


def get_logger() -> logging.Logger:
    logger = logging.getLogger(_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = os.environ.get("RANK")
        tag = f"[iovqa rank {rank}]" if rank is not None else "[iovqa]"
        handler.setFormatter(logging.Formatter(f"{tag} %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
