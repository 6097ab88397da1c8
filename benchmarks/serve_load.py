"""Load on the HTTP API: concurrent clients against sequential requests, and the HTTP overhead.

    .venv/bin/python benchmarks/serve_load.py [--config configs/tiny.yaml] [--clients 32] [--requests 10]
        [--workloads choice free]

Needs a finished ``pseudocot run CONFIG``. Starts ``pseudocot serve`` on the config's system directory
as its own process on a free local port (as it is deployed), and drives it from this process with
asynchronous clients (httpx):

* **load**: ``--clients`` clients each send ``--requests`` chat completions one after another
  (test-split questions); every answer is checked against the in-process system's answer to the
  same question (greedy); p50/p95 latency and throughput are printed;
* **sequential**: the same requests one at a time, for the throughput ratio (claim, issue 7: at
  least 3x thanks to batching);
* **overhead**: one request at a time over HTTP against the same call in this process, median of
  ``--repeats`` (claim: HTTP adds under 10%).

Two workloads: ``choice`` sends each question with its options (the ``pseudocot.options``
extension: the base's options are scored, one forward pass), ``free`` sends it as a plain chat
message (the base writes its answer, as any chat model answers; the router may add a thought).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

import httpx

from pseudocot.config import load_config
from pseudocot.data.records import Record
from pseudocot.infer.loop import PseudoCoT
from pseudocot.pipeline import Pipeline
from pseudocot.world.build import world_split


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of process ``pid`` (Linux /proc)."""
    if pid is None:
        usage = os.times()
        return usage.user + usage.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


async def _send(client: httpx.AsyncClient, url: str, record, expected: dict) -> tuple[float, bool]:
    started = time.perf_counter()
    response = await client.post(url, json=_body(record), timeout=300)
    ok = response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == expected[record.id]
    return time.perf_counter() - started, ok


async def _load(url: str, work: list, clients: int, per_client: int, expected: dict) -> tuple[list, float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one(k: int) -> list:
            return [await _send(client, url, work[k * per_client + j], expected) for j in range(per_client)]

        started = time.perf_counter()
        parts = await asyncio.gather(*(one(k) for k in range(clients)))
        return [o for part in parts for o in part], time.perf_counter() - started


async def _sequential(url: str, work: list, expected: dict) -> tuple[list, float]:
    async with httpx.AsyncClient() as client:
        started = time.perf_counter()
        outcomes = [await _send(client, url, record, expected) for record in work]
        return outcomes, time.perf_counter() - started


async def _overhead(url: str, system: PseudoCoT, records: list, expected: dict) -> tuple[float, float, float]:
    """Median latency of one request over HTTP (httpx, and the standard library's http.client, a
    thinner client) and of the same call in this process.

    Each series runs on its own, one call after another (one kept-alive connection per client, as a
    client of the API would hold): interleaved, the server's just-busy threads would slow the
    in-process calls down.
    """
    local = []
    for record in records:
        t = time.perf_counter()
        system.run([record])
        local.append(time.perf_counter() - t)
    async with httpx.AsyncClient() as client:
        http = [(await _send(client, url, record, expected))[0] for record in records]
    parts = urllib.parse.urlsplit(url)
    conn, plain = HTTPConnection(parts.hostname, parts.port), []
    for record in records:
        body = json.dumps(_body(record))
        t = time.perf_counter()
        conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())["choices"][0]["message"]["content"]
        plain.append(time.perf_counter() - t)
        if answer != expected[record.id]:
            sys.exit(f"the server answered {answer!r}, in process {expected[record.id]!r}")
    conn.close()
    return statistics.median(http), statistics.median(plain), statistics.median(local)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--server-threads", type=int, help="The server's model threads (default: torch's).")
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=["choice", "free"],
        default=["choice", "free"],
        help="choice: questions sent with their options (scored); free: plain chat questions (answers written).",
    )
    args = parser.parse_args()
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
        expected_of[workload] = {r.id: res.answer for r, res in zip(records, system.run(records), strict=True)}

    port = _free_port()
    cli = Path(sys.executable).with_name("pseudocot")
    server = subprocess.Popen(
        [
            str(cli),
            "serve",
            str(pipe.system_dir),
            "--port",
            str(port),
            "--batch-size",
            str(args.clients),
            "--max-queue",
            str(4 * total),
            *(["--threads", str(args.server_threads)] if args.server_threads else []),
        ],
        env=os.environ | {"TOKENIZERS_PARALLELISM": "false"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline or server.poll() is not None:
                sys.exit("the server did not start")
            time.sleep(0.2)
        url = f"{base}/v1/chat/completions"
        for workload in args.workloads:
            work, expected = work_of[workload], expected_of[workload]
            print(
                f"-- {workload}: "
                + ("questions with their options" if workload == "choice" else "plain chat questions")
            )
            asyncio.run(_sequential(url, work[:20], expected))  # warm-up
            batches_before = httpx.get(f"{base}/health").json()["batches"]
            before = (_cpu_seconds(), _cpu_seconds(server.pid))
            outcomes, seconds = asyncio.run(_load(url, work, args.clients, args.requests, expected))
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
            seq, seq_seconds = asyncio.run(_sequential(url, work, expected))
            print(
                f"sequential: {total} requests one at a time: {sum(o[1] for o in seq)}/{total} right; "
                f"{total / seq_seconds:.1f} requests/s"
            )
            ratio = seq_seconds / seconds
            verdict = "HOLDS" if ratio >= 3 else "DOES NOT HOLD"
            print(f"throughput, concurrent / sequential: {ratio:.1f}x (claim >= 3x): {verdict}")
            h, thin, here = asyncio.run(_overhead(url, system, work[: args.repeats], expected))
            for client, latency in (("httpx", h), ("http.client", thin)):
                verdict = "HOLDS" if latency / here < 1.10 else "DOES NOT HOLD"
                print(
                    f"single request: HTTP ({client}) {1000 * latency:.1f} ms, in process {1000 * here:.1f} ms "
                    f"(median of {args.repeats}); overhead {100 * (latency / here - 1):.1f}% (claim < 10%): {verdict}"
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
