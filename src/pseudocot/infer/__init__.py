"""Inference: generation, option scoring and answer reading, the ways the base answers, the router and the pseudo-CoT loop."""
