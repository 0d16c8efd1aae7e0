"""Data preparation: labels, prompt, frames, annotation files, dataset names, the score grid."""
