"""Scoring: settings, decoders, the scorer (through the inference loader in ``patches``), prediction files."""
