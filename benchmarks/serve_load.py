"""Load on the HTTP API: concurrent clients against sequential requests, and the HTTP overhead.

    .venv/bin/python benchmarks/serve_load.py [--config configs/tiny.yaml] [--clients 32] [--requests 10]
        [--workloads free choice] [--server-threads N]

Needs a finished ``pseudocot run CONFIG``. Starts ``pseudocot serve`` on the config's system directory
as its own process on a free local port (as it is deployed), and drives it from this process:

* **load**: ``--clients`` clients each send ``--requests`` chat completions one after another
  (test-split questions); every answer is checked against the in-process system's answer to the
  same question (greedy); p50/p95 latency and throughput are printed;
* **sequential**: the same requests one at a time, for the throughput ratio (claim, issue 7: at
  least 3x thanks to batching);
* **in process**: the same questions in this process, in batches of ``--clients`` and one at a
  time: what batching gives without HTTP;
* **overhead**: one request at a time over HTTP against the same call in this process (claim: HTTP
  adds under 10%), ``--repeats`` questions, each asked in process, over aiohttp and over the
  standard library's ``http.client`` in turn, the order rotating, so that the machine's drift
  falls on every series alike; the overhead is the median of each question's HTTP time over its
  in-process time. This process runs the models with as many threads as the server does.

The clients are aiohttp's (the client of vLLM's serving benchmark): a load generator must not be
the bottleneck on a machine it shares with the server, and httpx's asynchronous client spent 2.4-2.8
ms of CPU per request here against aiohttp's 0.2 ms.

Two workloads: ``free`` sends each question as a plain chat message (the base writes its answer, as
any chat model answers; the router may add a thought), ``choice`` sends it with its options (the
``pseudocot.options`` extension: the base's options are scored, one forward pass).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

import aiohttp
import httpx
import torch

from pseudocot.config import load_config
from pseudocot.infer.system import PseudoCoT
from pseudocot.pipeline import Pipeline
from pseudocot.records import Record
from pseudocot.serve.app import model_threads
from pseudocot.world.build import world_split
from serving import client_session, serving

try:  # a faster event loop for the clients, where it installs (uvicorn[standard] brings it)
    from uvloop import run as _run
except ImportError:
    _run = asyncio.run


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of process ``pid`` (Linux /proc)."""
    if pid is None:
        usage = os.times()
        return usage.user + usage.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _body(record) -> dict:
    body = {"model": "pseudocot", "messages": [{"role": "user", "content": record.question}]}
    if record.choices:
        body["pseudocot"] = {"options": record.choices}
    return body


def _as_asked(record, workload: str) -> Record:
    """The question as a client sends it: with its options (``choice``) or as a plain chat message
    (``free``: the base writes its answer), as the server builds it."""
    if workload == "choice":
        return record
    return Record(id=record.id, source="api", question=record.question, answer="?")


async def _send(session: aiohttp.ClientSession, url: str, record, expected: dict) -> tuple[float, bool]:
    started = time.perf_counter()
    async with session.post(url, json=_body(record)) as response:
        answer = (await response.json())["choices"][0]["message"]["content"] if response.status == 200 else None
    return time.perf_counter() - started, answer == expected[record.id]


async def _load(url: str, work: list, clients: int, per_client: int, expected: dict) -> tuple[list, float]:
    async with client_session(clients) as session:

        async def one(k: int) -> list:
            return [await _send(session, url, work[k * per_client + j], expected) for j in range(per_client)]

        started = time.perf_counter()
        parts = await asyncio.gather(*(one(k) for k in range(clients)))
        return [o for part in parts for o in part], time.perf_counter() - started


async def _sequential(url: str, work: list, expected: dict) -> tuple[list, float]:
    async with client_session(1) as session:
        started = time.perf_counter()
        outcomes = [await _send(session, url, record, expected) for record in work]
        return outcomes, time.perf_counter() - started


def _in_process(system: PseudoCoT, work: list, batch: int) -> tuple[float, float]:
    """Questions per second in this process, in batches of ``batch`` and one at a time."""
    started = time.perf_counter()
    for k in range(0, len(work), batch):
        system.run(work[k : k + batch])
    batched = len(work) / (time.perf_counter() - started)
    started = time.perf_counter()
    for record in work:
        system.run([record])
    return batched, len(work) / (time.perf_counter() - started)


async def _overhead(url: str, system: PseudoCoT, records: list, expected: dict) -> dict[str, list[float]]:
    """Latencies of one request in this process, over aiohttp and over ``http.client``, per question.

    Each question is asked the three ways in turn, the order rotating from one question to the
    next, on kept-alive connections (as a client of the API holds one).
    """
    parts = urllib.parse.urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port)

    async def in_process(record) -> None:
        system.run([record])

    async def over_aiohttp(record) -> None:
        if not (await _send(session, url, record, expected))[1]:
            sys.exit(f"the server's answer to {record.id} is not the in-process answer")

    async def over_http_client(record) -> None:
        conn.request("POST", parts.path, json.dumps(_body(record)), {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())["choices"][0]["message"]["content"]
        if answer != expected[record.id]:
            sys.exit(f"the server answered {answer!r}, in process {expected[record.id]!r}")

    gc.collect()
    gc.freeze()  # what this process built so far is not scanned again during the timed calls
    ways = {"in process": in_process, "aiohttp": over_aiohttp, "http.client": over_http_client}
    times: dict[str, list[float]] = {name: [] for name in ways}
    async with client_session(1) as session:
        for k, record in enumerate(records):
            names = list(ways)
            for name in names[k % 3 :] + names[: k % 3]:
                started = time.perf_counter()
                await ways[name](record)
                times[name].append(time.perf_counter() - started)
    conn.close()
    gc.unfreeze()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument(
        "--server-threads", type=int, help="The models' threads, in the server and here (default: the server's)."
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=["free", "choice"],
        default=["free", "choice"],
        help="free: plain chat questions (answers written); choice: questions sent with their options (scored).",
    )
    args = parser.parse_args()
    threads = args.server_threads or model_threads()
    torch.set_num_threads(threads)
    pipe = Pipeline(load_config(args.config))
    if not (pipe.system_dir / "system.json").is_file():
        sys.exit(f"run `pseudocot run {args.config}` first: no system in {pipe.system_dir}.")
    system = PseudoCoT.load(pipe.system_dir)
    total = args.clients * args.requests
    tests = world_split(pipe.world_dir, "test")
    work_of, expected_of = {}, {}
    for workload in args.workloads:
        records = [_as_asked(r, workload) for r in tests]
        work_of[workload] = [records[i % len(records)] for i in range(total)]
        # In batches as large as the server's: a process's earlier batches shape how fast its later
        # calls allocate memory, and the single-request series compares this process with the server.
        step = args.clients
        answers = [res for k in range(0, len(records), step) for res in system.run(records[k : k + step])]
        expected_of[workload] = {r.id: res.answer for r, res in zip(records, answers, strict=True)}

    options = ["--batch-size", str(args.clients), "--max-queue", str(4 * total), "--threads", str(threads)]
    with serving(pipe.system_dir, *options) as (base, server):
        url = f"{base}/v1/chat/completions"
        for workload in args.workloads:
            work, expected = work_of[workload], expected_of[workload]
            print(
                f"-- {workload}: "
                + ("questions with their options" if workload == "choice" else "plain chat questions")
            )
            batched, alone = _in_process(system, work, args.clients)
            print(
                f"in process, no HTTP: {batched:.1f} questions/s in batches of {args.clients}, {alone:.1f} one at "
                f"a time ({batched / alone:.1f}x: what batching alone gives)"
            )
            _run(_sequential(url, work[:20], expected))  # warm-up
            batches_before = httpx.get(f"{base}/health").json()["batches"]
            before = (_cpu_seconds(), _cpu_seconds(server.pid))
            outcomes, seconds = _run(_load(url, work, args.clients, args.requests, expected))
            client_cpu, server_cpu = _cpu_seconds() - before[0], _cpu_seconds(server.pid) - before[1]
            latencies = sorted(o[0] for o in outcomes)
            p50, p95 = latencies[len(latencies) // 2], latencies[int(0.95 * (len(latencies) - 1))]
            print(
                f"load: {args.clients} clients x {args.requests} requests = {total}: "
                f"{sum(o[1] for o in outcomes)}/{total} answered with the in-process answer, {total - len(outcomes)} "
                f"lost; p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms; {total / seconds:.1f} requests/s"
            )
            print(
                f"CPU per request under load: client {1000 * client_cpu / total:.1f} ms, server "
                f"{1000 * server_cpu / total:.1f} ms (2 cores shared; wall {1000 * seconds / total:.1f} ms per request)"
            )
            health = httpx.get(f"{base}/health").json()
            batches = health["batches"] - batches_before
            print(
                f"server: {batches} batches under load, {total / batches:.1f} requests each on average; "
                f"the largest so far of {health['largest_batch']} requests"
            )
            seq, seq_seconds = _run(_sequential(url, work, expected))
            print(
                f"sequential: {total} requests one at a time: {sum(o[1] for o in seq)}/{total} right; "
                f"{total / seq_seconds:.1f} requests/s"
            )
            ratio = seq_seconds / seconds
            verdict = "HOLDS" if ratio >= 3 else "DOES NOT HOLD"
            print(f"throughput, concurrent / sequential: {ratio:.1f}x (claim >= 3x): {verdict}")
            times = _run(_overhead(url, system, work[: args.repeats], expected))
            here = times.pop("in process")
            for client, over_http in times.items():
                # Paired: each question's HTTP time against its own in-process time, taken within
                # milliseconds of each other, so the machine's drift cancels.
                extra = statistics.median(h / p - 1 for h, p in zip(over_http, here, strict=True))
                verdict = "HOLDS" if extra < 0.10 else "DOES NOT HOLD"
                print(
                    f"single request: HTTP ({client}) {1000 * statistics.median(over_http):.1f} ms, in process "
                    f"{1000 * statistics.median(here):.1f} ms (medians of {args.repeats}, interleaved); overhead, "
                    f"median of the paired ratios: {100 * extra:.1f}% (claim < 10%): {verdict}"
                )


if __name__ == "__main__":
    main()
