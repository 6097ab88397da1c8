"""Moved to :mod:`pseudocot.records` (the schema every part reads); kept until ``world/`` imports it there."""

from pseudocot.records import LETTERS, Record, read_jsonl, write_jsonl

__all__ = ["LETTERS", "Record", "read_jsonl", "write_jsonl"]
