"""Inference: batched generation, decoding presets, the router and the pseudo-CoT loop."""
