"""Errors a user can cause. The CLI prints their message as one sentence and exits non-zero."""

from __future__ import annotations


class PseudoCoTError(Exception):
    """A problem with the user's input or environment, told in one sentence; exit code 1."""

    exit_code = 1


class ConfigError(PseudoCoTError):
    """A configuration file or override that does not validate; exit code 2."""

    exit_code = 2
