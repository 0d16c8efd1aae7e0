"""Evaluation: metrics, reading and matching prediction files, reports and plots, ensembles."""
