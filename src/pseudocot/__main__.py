"""``python -m pseudocot``: the command line."""

from pseudocot.cli import entrypoint

entrypoint()
