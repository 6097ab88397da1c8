"""Inference: generation, option scoring and answer reading, the ways the base answers, the router, the loop."""
