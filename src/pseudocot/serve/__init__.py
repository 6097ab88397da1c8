"""Serving the pseudo-CoT system over an OpenAI-compatible HTTP API."""
