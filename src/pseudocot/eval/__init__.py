"""Evaluation (paper 5): the harness, metrics, reports, thought quality and the answer stage."""
