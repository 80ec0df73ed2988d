"""Evaluation: metrics, the streaming harness and reports."""
