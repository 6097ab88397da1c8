"""Dynamic batching: requests that arrive together run as one pass of the loop, off the event loop.

Each request is a :class:`Job` put on a bounded queue (full: the caller answers 503). One worker
takes every waiting job (continuous batching: requests that arrive while a batch runs form the next
one; it waits up to ``batch_wait_s`` for as many requests as its largest recent batch had, so
clients answered together come back together), and runs up to ``batch_size`` jobs
with the same decoding settings together through :meth:`PseudoCoT.run` in a worker thread, so the
event loop keeps answering (``/health`` included) while the models compute. Thoughts and answers are
pushed to a streaming job's event queue as the loop produces them.

A job stops, within one generated token, when its client goes away, when its deadline passes
(``timeout_s`` after it was queued) or when the server shuts down (:meth:`Batcher.close`, safe to
call from a signal handler): its rows leave the batch and the others go on. A batch that fails is
run again one request at a time, so one bad request fails only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from pseudocot.config import GenerationPreset
from pseudocot.infer.loop import Result
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import Record

log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class Failure:
    """Why a request got no answer: its HTTP status and its OpenAI-style error."""

    status: int
    message: str
    kind: str = "server_error"
    code: str | None = None
    param: str | None = None


MODEL_FAILED = Failure(500, "The model failed on this request; the server's log says why.", code="model_error")
QUEUE_FULL = Failure(503, "The server is busy; retry shortly.", code="queue_full")
SHUTTING_DOWN = Failure(503, "The server is shutting down; retry shortly.", code="shutting_down")


class Unavailable(Exception):
    """The server takes no more requests now (503): its queue is full or it is shutting down."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def log_failure(what: str, err: BaseException) -> None:
    """Logs an unexpected error by its type and traceback: never its message, which may quote the
    request's text."""
    frames = "".join(traceback.format_tb(err.__traceback__))
    log.error("%s failed: %s\n%s", what, type(err).__name__, frames)


@dataclass
class Job:
    """One request waiting for, or going through, the loop."""

    record: Record
    history: list[tuple[str, str]]
    max_thoughts: int
    preset: GenerationPreset
    stream: bool = False  # the client reads thoughts and answers as they come (else only the result)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # ("thought" | "done" | "error", payload)
    done: asyncio.Future | None = None  # ("done", Result) | ("error", Failure), set when the loop is through
    cancelled: bool = False  # its client went away, or its request was answered otherwise
    deadline: float = float("inf")  # time.monotonic() past which it is stopped
    streamed: bool = False  # part of its answer was sent: a failed batch cannot run it again

    @functools.cached_property
    def group(self) -> tuple[Any, ...]:
        """Jobs that can share one run of the loop."""
        return (self.max_thoughts, self.preset.model_dump_json(), tuple(self.history))


class Batcher:
    """Runs queued jobs in batches on one worker."""

    def __init__(
        self,
        system: PseudoCoT,
        batch_size: int,
        max_queue: int,
        batch_wait_s: float = 0.02,
        timeout_s: float = float("inf"),
    ) -> None:
        self.system = system
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.timeout_s = timeout_s
        self.timed_out = Failure(
            504,
            f"The request ran past the server's {timeout_s:g} s limit; ask for fewer thoughts or max_tokens, "
            "or retry when the server is less busy.",
            code="request_timeout",
        )
        self.queue: asyncio.Queue[Job] = asyncio.Queue()  # bounded by submit, with the waiting jobs
        self._worker: asyncio.Task | None = None
        self.batches_run = 0
        self.largest_batch = 0
        self.disconnects = 0  # requests whose client left before the answer
        self.max_queue = max_queue
        self.waiting: list[Job] = []  # taken off the queue, not yet run
        self.recent = [1]  # sizes of the last batches: how many clients are busy
        self.batch_started: float | None = None  # time.monotonic() when the running batch began
        self.closing = False  # read by the model thread after every token

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work())

    def close(self) -> None:
        """Stops the running batch within one token and refuses what is queued; only sets a flag, so a
        signal handler may call it."""
        self.closing = True

    async def stop(self) -> None:
        """Closes, ends the worker and answers every request still queued."""
        self.close()
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while not self.queue.empty():
            self.waiting.append(self.queue.get_nowait())
        self._deliver(self.waiting, [("error", SHUTTING_DOWN)] * len(self.waiting))
        self.waiting = []

    def submit(self, job: Job) -> Job:
        """Queues a job; raises :class:`Unavailable` rather than waiting."""
        if self.closing:
            raise Unavailable(SHUTTING_DOWN)
        if self.queue.qsize() + len(self.waiting) >= self.max_queue:
            raise Unavailable(QUEUE_FULL)
        job.done = asyncio.get_running_loop().create_future()
        job.deadline = time.monotonic() + self.timeout_s
        self.queue.put_nowait(job)
        return job

    def stopped(self, job: Job) -> bool:
        """Whether the job's work should end now (checked by the model thread after every token)."""
        return self.closing or job.cancelled or time.monotonic() > job.deadline

    def running_s(self) -> float:
        """How long the running batch has run (0 when none runs)."""
        return 0.0 if self.batch_started is None else time.monotonic() - self.batch_started

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiting:
                self.waiting.append(await self.queue.get())
            # Under load, the clients of the last batches send their next requests a few milliseconds
            # after their answers: wait (up to batch_wait_s) until as many as the largest recent
            # batch had are back. One client alone is never held up: its batches had one request.
            deadline = loop.time() + self.batch_wait_s
            while True:
                while not self.queue.empty() and len(self.waiting) < 4 * self.batch_size:
                    self.waiting.append(self.queue.get_nowait())
                if len(self.waiting) >= min(self.batch_size, max(self.recent)) or loop.time() >= deadline:
                    break
                await asyncio.sleep(0.001)
            if self.closing:
                self._deliver(self.waiting, [("error", SHUTTING_DOWN)] * len(self.waiting))
                self.waiting = []
                continue
            # Gone or past their deadline: their requests have been answered already.
            self.waiting = [j for j in self.waiting if not self.stopped(j)]
            if not self.waiting:
                continue
            group = self.waiting[0].group
            batch = [j for j in self.waiting if j.group == group][: self.batch_size]
            self.waiting = [j for j in self.waiting if j not in batch]
            self.batches_run += 1
            self.recent = [*self.recent[-7:], len(batch)]
            self.largest_batch = max(self.largest_batch, len(batch))
            self.batch_started = time.monotonic()
            try:
                await self._run_apart(batch, loop)
            finally:
                self.batch_started = None

    async def _run_apart(self, batch: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        """Runs the batch; if it fails, each of its requests alone, so that only the bad one fails
        (a stream that already sent part of its answer fails with it)."""
        try:
            await asyncio.to_thread(self._run, batch, loop)
        except Exception as err:
            log_failure(f"a batch of {len(batch)}", err)
            again = [j for j in batch if not j.streamed] if len(batch) > 1 else []
            failed = [j for j in batch if j not in again]
            self._deliver(failed, [("error", MODEL_FAILED)] * len(failed))
            for job in again:
                await self._run_apart([job], loop)

    @staticmethod
    def _deliver(batch: list[Job], outcomes: list[tuple[str, Any]]) -> None:
        """Hands each job its outcome, ``("done", Result)`` or ``("error", Failure)``: to the future
        its request awaits, or as its stream's last event."""
        for job, event in zip(batch, outcomes, strict=True):
            if job.stream:
                job.events.put_nowait(event)
            elif job.done is not None and not job.done.done():
                job.done.set_result(event)

    def _run(self, batch: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        def on_step(index: int, kind: str, text: str) -> None:
            job = batch[index]
            if job.stream and kind == "thought":  # a waking of the event loop per thought, only where a client reads it
                job.streamed = True
                loop.call_soon_threadsafe(job.events.put_nowait, (kind, text))

        first = batch[0]
        results = self.system.run(
            [j.record for j in batch],
            max_thoughts=first.max_thoughts,
            on_step=on_step if any(j.stream for j in batch) else None,
            history=first.history,
            cancelled=lambda i: self.stopped(batch[i]),
            base_preset=first.preset,
        )
        outcomes = [self._outcome(job, result) for job, result in zip(batch, results, strict=True)]
        # Straight from this thread to the waiting requests: one waking of the event loop, not two.
        loop.call_soon_threadsafe(self._deliver, batch, outcomes)

    def _outcome(self, job: Job, result: Result) -> tuple[str, Any]:
        """A job's result, or why it has none: a stopped job's result is cut short."""
        if self.closing:
            return ("error", SHUTTING_DOWN)
        if time.monotonic() > job.deadline:
            return ("error", self.timed_out)
        return ("done", result)


_ids = itertools.count()


def next_id() -> int:
    """A process-wide counter for request ids."""
    return next(_ids)
