"""Evaluation: metrics, the streaming harness and reports."""

DEFAULT_GENERATION_STEPS = 25  # inference steps of the generation-time schemes' generations
