"""Dynamic batching: requests that arrive together run as one pass of the loop, off the event loop.

Each request is a :class:`Job` put on a bounded queue (full: the caller answers 503). One worker
takes every waiting job (continuous batching: requests that arrive while a batch runs form the next
one; it waits up to ``batch_wait_s`` for as many requests as its largest recent batch had, so
clients answered together come back together), and runs up to ``batch_size`` jobs
with the same decoding settings together through :meth:`PseudoCoT.run` in a worker thread, so the
event loop keeps answering (``/health`` included) while the models compute. Thoughts and answers are
pushed to a streaming job's event queue as the loop produces them, and a job whose client went
away is dropped before the next round of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

from pseudocot.config import GenerationPreset
from pseudocot.data.records import Record
from pseudocot.infer.loop import PseudoCoT, Result


class QueueFull(Exception):
    """The server holds as many waiting requests as it allows."""


@dataclass
class Job:
    """One request waiting for, or going through, the loop."""

    record: Record
    history: list[tuple[str, str]]
    max_thoughts: int
    preset: GenerationPreset
    stream: bool = False  # the client reads thoughts and answers as they come (else only the result)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # ("thought" | "answer" | "done" | "error", payload)
    done: asyncio.Future | None = None  # ("done" | "error", payload), set when the loop is through
    cancelled: bool = False

    @functools.cached_property
    def group(self) -> tuple[Any, ...]:
        """Jobs that can share one run of the loop."""
        return (self.max_thoughts, self.preset.model_dump_json(), tuple(self.history))


class Batcher:
    """Runs queued jobs in batches on one worker."""

    def __init__(self, system: PseudoCoT, batch_size: int, max_queue: int, batch_wait_s: float = 0.02) -> None:
        self.system = system
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue()  # bounded by submit, with the waiting jobs
        self._worker: asyncio.Task | None = None
        self.batches_run = 0
        self.largest_batch = 0
        self.disconnects = 0  # streams whose client left before the answer
        self.max_queue = max_queue
        self.waiting: list[Job] = []  # taken off the queue, not yet run
        self.recent = [1]  # sizes of the last batches: how many clients are busy

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def submit(self, job: Job) -> Job:
        """Queues a job; raises :class:`QueueFull` rather than waiting."""
        if self.queue.qsize() + len(self.waiting) >= self.max_queue:
            raise QueueFull
        job.done = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(job)
        return job

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
            self.waiting = [j for j in self.waiting if not j.cancelled]
            if not self.waiting:
                continue
            group = self.waiting[0].group
            batch = [j for j in self.waiting if j.group == group][: self.batch_size]
            self.waiting = [j for j in self.waiting if j not in batch]
            self.batches_run += 1
            self.recent = [*self.recent[-7:], len(batch)]
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                await asyncio.to_thread(self._run, batch, loop)
            except Exception as err:  # reported to every client of the batch
                self._deliver(batch, str(err))

    @staticmethod
    def _deliver(batch: list[Job], outcome: list[Result] | str) -> None:
        """Hands each job its result, or the batch's error text: to the future its request awaits,
        or as its stream's last event."""
        for k, job in enumerate(batch):
            event = ("error", outcome) if isinstance(outcome, str) else ("done", outcome[k])
            if job.stream:
                job.events.put_nowait(event)
            elif job.done is not None and not job.done.done():
                job.done.set_result(event)

    def _run(self, batch: list[Job], loop: asyncio.AbstractEventLoop) -> None:
        def on_step(index: int, kind: str, text: str) -> None:
            if batch[index].stream:  # a waking of the event loop per step, only where a client reads it
                loop.call_soon_threadsafe(batch[index].events.put_nowait, (kind, text))

        first = batch[0]
        results = self.system.run(
            [j.record for j in batch],
            max_thoughts=first.max_thoughts,
            on_step=on_step if any(j.stream for j in batch) else None,
            history=first.history,
            cancelled=lambda i: batch[i].cancelled,
            base_preset=first.preset,
        )
        # Straight from this thread to the waiting requests: one waking of the event loop, not two.
        loop.call_soon_threadsafe(self._deliver, batch, results)


_ids = itertools.count()


def next_id() -> int:
    """A process-wide counter for request ids."""
    return next(_ids)
