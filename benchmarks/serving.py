"""What the serving benchmarks share: ``pseudocot serve`` started as its own process, as it is
deployed, and the aiohttp client session that drives it (the client of vLLM's serving benchmark)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp


@contextlib.contextmanager
def serving(system_dir: str | Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``pseudocot serve SYSTEM_DIR OPTIONS`` on a free port of 127.0.0.1: yields its address
    (``http://127.0.0.1:PORT``, read off its startup line once it listens) and its process, and
    stops it with Ctrl-C on leaving."""
    cli = Path(sys.executable).with_name("pseudocot")
    command = [str(cli), "serve", str(system_dir), "--host", "127.0.0.1", "--port", "0", *options]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    )
    try:
        line = server.stdout.readline()
        if " at http://" not in line:
            sys.exit("the server did not start")
        yield line.split(" at ")[1].split("/v1")[0], server
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def client_session(connections: int, timeout_s: float = 300) -> aiohttp.ClientSession:
    """A client session of up to ``connections`` connections; a request past ``timeout_s`` raises."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )
