"""A soak of the HTTP API: many clients for a bounded time, with bad requests mixed in.

    .venv/bin/python benchmarks/soak.py [--system runs/tiny/system] [--seconds 600] [--clients 32]
        [--bad 0.1] [--request-timeout 120]

Starts ``pseudocot serve`` on the system directory as its own process on 127.0.0.1 (the demo's
system by default: ``make demo`` writes it), times small requests one at a time on the idle server,
then the same clients with good requests only for ``--baseline-seconds`` (the load without the bad
requests, which the soak's latencies are compared with), then lets ``--clients`` clients send
requests back to back for ``--seconds``: small chat questions (half with options) and, a ``--bad``
share of the time, a bad one: a prompt far over the context, a body that is not JSON, a content part
of the wrong type, a lone surrogate, or a client that hangs up before its answer. Every request has
a client timeout (the server's limit and 30 s), so the soak ends by itself; then the server is stopped with Ctrl-C.

It prints what came back: answered, refused (by status), errors, lost (no response at all), how
many were 500, the slowest refusal of an oversized prompt, small requests' p50/p99 under the soak
against the idle server's, and the server's resident memory (RSS) at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from serving import client_session, serving

BAD_KINDS = ("oversized", "not_json", "bad_content", "surrogate", "hang_up")
OPTIONS = ["4", "8", "1", "6"]


@dataclass
class Outcome:
    kind: str  # "small" or one of BAD_KINDS
    status: int | None  # None: no response (lost, or hung up on purpose)
    seconds: float


def _small(rng: random.Random) -> dict:
    """A small chat question, with its options half of the time."""
    question = (
        f"Working modulo 10, start with {rng.randrange(100, 999)}, then add {rng.randrange(1, 9)}. What is the result?"
    )
    body = {"model": "pseudocot", "messages": [{"role": "user", "content": question}]}
    return body | ({"pseudocot": {"options": OPTIONS}} if rng.random() < 0.5 else {})


def _bad(kind: str, rng: random.Random) -> bytes | dict:
    """A request of a bad kind, as the body to send."""
    if kind == "oversized":  # far over any context, under the 1 MB body limit
        return {"model": "pseudocot", "messages": [{"role": "user", "content": "seven " * 80_000}]}
    if kind == "not_json":
        return rng.choice(
            [b'{"model": "pseudocot", "messages": [', b"caf\xe9", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
        )
    if kind == "bad_content":
        return {"model": "pseudocot", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    if kind == "surrogate":
        return b'{"model": "pseudocot", "messages": [{"role": "user", "content": "why \\ud800?"}]}'
    question = _small(rng)["messages"]  # hang_up: a long written answer, abandoned after 50 ms
    return {"model": "pseudocot", "messages": question, "max_tokens": 512, "stream": rng.random() < 0.5}


async def _send(session: aiohttp.ClientSession, url: str, kind: str, body: bytes | dict) -> Outcome:
    started = time.perf_counter()
    sent = (
        {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) else {"json": body}
    )
    try:
        async with asyncio.timeout(0.05 if kind == "hang_up" else None):  # cancelled: its connection is closed
            async with session.post(url, **sent) as response:
                await response.read()
        return Outcome(kind, response.status, time.perf_counter() - started)
    except (TimeoutError, aiohttp.ClientError):
        return Outcome(kind, None, time.perf_counter() - started)


async def _idle(url: str, count: int, seed: int) -> list[float]:
    """Latencies of small requests one at a time on the idle server."""
    rng = random.Random(seed)
    async with client_session(1) as session:
        return [(await _send(session, url, "small", _small(rng))).seconds for _ in range(count)]


async def _soak(url: str, clients: int, seconds: float, bad: float, timeout_s: float, seed: int) -> list[Outcome]:
    deadline = time.perf_counter() + seconds
    async with client_session(clients, timeout_s) as session:

        async def client(k: int) -> list[Outcome]:
            rng, outcomes = random.Random(seed + k), []
            while time.perf_counter() < deadline:
                kind = rng.choice(BAD_KINDS) if rng.random() < bad else "small"
                outcomes.append(await _send(session, url, kind, _small(rng) if kind == "small" else _bad(kind, rng)))
            return outcomes

        parts = await asyncio.gather(*(client(k) for k in range(clients)))
    return [o for part in parts for o in part]


def _rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (Linux /proc), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="runs/tiny/system", help="A system directory (pseudocot router).")
    parser.add_argument("--seconds", type=float, default=600, help="How long the clients send requests.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--bad", type=float, default=0.1, help="Share of bad requests.")
    parser.add_argument("--request-timeout", type=float, default=120, help="The server's --request-timeout.")
    parser.add_argument("--idle-requests", type=int, default=100, help="Small requests timed on the idle server.")
    parser.add_argument(
        "--baseline-seconds", type=float, default=60, help="The same clients with good requests only, before the soak."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options = ["--request-timeout", str(args.request_timeout), "--max-queue", str(8 * args.clients)]
    with serving(args.system, *options) as (base, server):
        url = f"{base}/v1/chat/completions"
        rss_start = _rss_mib(server.pid)
        idle = asyncio.run(_idle(url, args.idle_requests, args.seed))
        print(
            f"idle: {len(idle)} small requests one at a time: p50 {_p(idle, 0.5):.0f} ms, p99 {_p(idle, 0.99):.0f} ms"
        )
        # What the bad requests cost the good ones: the same load without them, on the same server.
        clean = asyncio.run(_soak(url, args.clients, args.baseline_seconds, 0.0, args.request_timeout + 30, args.seed))
        clean_small = [o.seconds for o in clean if o.status == 200]
        started = time.perf_counter()
        outcomes = asyncio.run(_soak(url, args.clients, args.seconds, args.bad, args.request_timeout + 30, args.seed))
        took = time.perf_counter() - started
        rss_end = _rss_mib(server.pid)
    kept = [o for o in outcomes if o.kind != "hang_up"]
    statuses = collections.Counter(o.status for o in kept)
    refused = {s: n for s, n in sorted(statuses.items()) if s is not None and (400 <= s < 500 or s == 503)}
    errors = {s: n for s, n in sorted(statuses.items()) if s is not None and s >= 500 and s != 503}
    kinds = collections.Counter(o.kind for o in outcomes)
    print(
        f"soak: {args.clients} clients for {took:.0f} s, {len(outcomes)} requests "
        f"({', '.join(f'{k} {n}' for k, n in kinds.most_common())})"
    )
    print(
        f"answered {statuses[200]}, refused {sum(refused.values())} {refused}, errors {sum(errors.values())} "
        f"{errors}, lost {statuses[None]}, status 500: {statuses[500]}; hung up on purpose: {kinds['hang_up']}"
    )
    oversized = [o.seconds for o in outcomes if o.kind == "oversized" and o.status == 400]
    if oversized:
        print(
            f"oversized prompts refused: {len(oversized)}, in p50 {_p(oversized, 0.5):.0f} ms, p99 "
            f"{_p(oversized, 0.99):.0f} ms, the slowest in {1000 * max(oversized):.0f} ms"
        )
    small = [o.seconds for o in outcomes if o.kind == "small" and o.status == 200]
    print(
        f"small requests under the soak: p50 {_p(small, 0.5):.0f} ms, p99 {_p(small, 0.99):.0f} ms "
        f"(idle: p50 {_p(idle, 0.5):.0f} ms, p99 {_p(idle, 0.99):.0f} ms)"
    )
    if clean_small:
        print(
            f"the same {args.clients} clients, good requests only ({args.baseline_seconds:.0f} s before the soak): "
            f"p50 {_p(clean_small, 0.5):.0f} ms, p99 {_p(clean_small, 0.99):.0f} ms; soak p99 / this p99 = "
            f"{_p(small, 0.99) / _p(clean_small, 0.99):.2f}x"
        )
    print(f"server RSS: {rss_start:.0f} MiB at the start, {rss_end:.0f} MiB at the end")


if __name__ == "__main__":
    main()
