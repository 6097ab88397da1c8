"""The OpenAI-compatible HTTP API (paper 6.4): ``pseudocot serve SYSTEM_DIR``.

Endpoints: ``POST /v1/chat/completions`` (non-streaming and server-sent events), ``GET /v1/models``,
``GET /health``. The last user message is the question; earlier user/assistant pairs are the chat
history the base sees. The TTM's thoughts are returned as ``reasoning_content`` on the message (the
field DeepSeek and vLLM use), streamed as ``reasoning_content`` deltas as they are written, then the
answer as ``content``. ``usage`` counts both models' tokens. A ``pseudocot`` object in the request
sets ``max_thoughts`` and, for multiple choice, ``options`` (scored by likelihood).

Safe by default: the CLI binds 127.0.0.1; with an API key every endpoint but ``/health`` needs
``Authorization: Bearer KEY`` (401 otherwise); bodies, message counts, ``max_tokens`` and thoughts
are bounded (413, 400, 422 with OpenAI-style error JSON); a full queue is answered 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pseudocot.config import GenerationPreset
from pseudocot.data.records import Record
from pseudocot.infer.loop import PseudoCoT, Result
from pseudocot.serve.batcher import Batcher, Job, QueueFull, next_id


class ServeSettings(BaseModel):
    """Limits and batching of the server."""

    model_name: str = Field("pseudocot", description="The model id clients ask for.")
    api_key: str | None = Field(None, description="Bearer key every endpoint but /health requires.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest request body, in bytes (413 beyond).")
    max_messages: int = Field(64, ge=1, description="Most messages in one request (400 beyond).")
    max_tokens_limit: int = Field(2048, ge=1, description="Largest max_tokens a request may ask for (400 beyond).")
    max_thoughts_limit: int = Field(4, ge=0, description="Most thoughts a request may ask for (400 beyond).")
    batch_size: int = Field(16, ge=1, description="Most requests run together in one pass of the loop.")
    max_queue: int = Field(256, ge=1, description="Most requests waiting; more are answered 503.")
    batch_wait_s: float = Field(
        0.02, ge=0, description="Longest wait for as many requests as the last batch had (0: take what is queued)."
    )


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str | None:
        """The content as text: a string, or the text parts of a list of content parts joined."""
        if isinstance(self.content, list):
            parts = [p.get("text", "") for p in self.content if p.get("type") == "text"]
            return "".join(parts) or None
        return self.content


class PseudoCoTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_thoughts: int | None = Field(None, ge=0)
    options: list[str] | None = Field(None, min_length=2, max_length=10)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (n, top_p, ...)

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = False
    pseudocot: PseudoCoTOptions | None = None


def model_threads() -> int:
    """The models' CPU threads by default: torch's (one per physical core) but one, left to the event
    loop, so HTTP parsing and answering overlap the models' work instead of slowing it
    (``benchmarks/serve_load.py``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores) - 1)


def split_conversation(messages: list[Message]) -> tuple[list[tuple[str, str]], str] | None:
    """The chat history (each user turn an assistant turn answered, in order) and the question (the
    last message, which must be the user's); system and tool messages are not shown to the base."""
    turns = [m for m in messages if m.role in ("user", "assistant") and m.text]
    if not turns or messages[-1].role != "user" or not messages[-1].text:
        return None
    history = [
        (before.text or "", after.text or "")
        for before, after in itertools.pairwise(turns[:-1])
        if before.role == "user" and after.role == "assistant"
    ]
    return history, turns[-1].text or ""


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    """An OpenAI-style error response."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


class Guard:
    """The key and body-size checks, as a plain ASGI middleware (Starlette's ``BaseHTTPMiddleware``
    runs every request through extra tasks and streams, a cost as large as a tiny model's answer)."""

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self.refuse(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refuse(self, scope: dict) -> JSONResponse | None:
        """The error response a request gets before it reaches an endpoint, if any."""
        settings = self.settings
        headers = dict(scope["headers"])
        if scope["path"] != "/health" and settings.api_key:
            given = headers.get(b"authorization", b"")
            if not secrets.compare_digest(given, f"Bearer {settings.api_key}".encode()):
                message = "Missing or wrong API key: send 'Authorization: Bearer KEY'."
                return error(401, message, code="invalid_api_key")
        length = headers.get(b"content-length")
        if scope["method"] == "POST" and length is None:
            # A chunked body could be of any size: ask for its length, as the limit needs.
            return error(411, "Send the request with a Content-Length header.", code="length_required")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return error(413, f"Request body over {settings.max_body_bytes} bytes.", code="body_too_large")
        return None


def create_app(system: PseudoCoT, settings: ServeSettings | None = None) -> FastAPI:
    """The API around one loaded system."""
    settings = settings or ServeSettings()
    state: dict[str, Batcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher = Batcher(system, settings.batch_size, settings.max_queue, settings.batch_wait_s)
        batcher.start()
        state["batcher"] = batcher
        yield
        await batcher.stop()

    app = FastAPI(title="pseudocot", lifespan=lifespan)
    app.state.settings = settings
    app.state.batcher = state

    app.add_middleware(Guard, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid')}", code="invalid_request")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.get("batcher")
        if batcher is None:
            return {"status": "starting"}
        stats = {
            "queued": batcher.queue.qsize() + len(batcher.waiting),
            "batches": batcher.batches_run,
            "largest_batch": batcher.largest_batch,
        }
        return {"status": "ok", **stats}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "pseudocot"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        if body.model != settings.model_name:
            message = f"The model '{body.model}' does not exist; this server has '{settings.model_name}'."
            return error(404, message, code="model_not_found")
        if len(body.messages) > settings.max_messages:
            return error(400, f"At most {settings.max_messages} messages per request.", code="too_many_messages")
        max_tokens = body.max_completion_tokens or body.max_tokens
        if max_tokens is not None and max_tokens > settings.max_tokens_limit:
            return error(400, f"max_tokens is at most {settings.max_tokens_limit}.", code="max_tokens_too_large")
        options = body.pseudocot or PseudoCoTOptions()
        thoughts = system.max_thoughts if options.max_thoughts is None else options.max_thoughts
        # Never more thoughts than the router was trained to judge.
        limit = min(settings.max_thoughts_limit, system.router.max_thoughts if system.router else system.max_thoughts)
        if thoughts > limit:
            return error(400, f"pseudocot.max_thoughts is at most {limit}.", code="too_many_thoughts")
        parsed = split_conversation(body.messages)
        if parsed is None:
            return error(400, "The last message must be a user message with content.", code="no_question")
        history, question = parsed
        record = Record(
            id=f"req-{next_id()}",
            source="api",
            question=question,
            choices=options.options or [],
            answer="A" if options.options else "?",  # the gold answer is unknown; the schema wants one
        )
        # The request's max_tokens and temperature shape the base's free-text answer; temperature 0 is greedy.
        update: dict[str, Any] = {"max_new_tokens": max_tokens} if max_tokens else {}
        if body.temperature is not None:
            update |= {"do_sample": body.temperature > 0, "temperature": body.temperature or 1.0}
        preset = GenerationPreset(**(system.base_preset.model_dump() | update))
        job = Job(record, history, thoughts, preset, stream=body.stream)
        try:
            state["batcher"].submit(job)
        except QueueFull:
            return error(503, "The server is busy; retry shortly.", "server_error", "queue_full")
        created, rid = int(time.time()), f"chatcmpl-{record.id}"
        if body.stream:
            events = _stream(job, request, rid, created, settings.model_name, state["batcher"])
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            result = await _final(job, request)
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        if result is None:  # the client went away: nobody to answer
            return error(499, "Client closed the request.", code="client_closed")
        if isinstance(result, str):
            return error(500, f"Generation failed: {result}", "server_error")
        return JSONResponse(_completion(result, rid, created, settings.model_name))  # plain json.dumps, no re-encoding

    return app


async def _final(job: Job, request: Request) -> Result | str | None:
    """The job's result, its error text, or ``None`` (and the job cancelled) if the client left."""
    assert job.done is not None  # set by Batcher.submit
    while True:
        finished, _ = await asyncio.wait({job.done}, timeout=0.5)
        if finished:
            return job.done.result()[1]
        if await request.is_disconnected():
            job.cancelled = True
            return None


def _finish(result: Result) -> str:
    """``length`` when the base's free-text answer ran into max_tokens, else ``stop``."""
    return "length" if result.truncated else "stop"


def _usage(result: Result) -> dict[str, Any]:
    prompt = sum(u.prompt for u in result.usage.values())
    completion = sum(u.generated for u in result.usage.values())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "pseudocot": {m: {"prompt": u.prompt, "generated": u.generated} for m, u in result.usage.items()},
        "thoughts": len(result.thoughts),
        "flops": result.flops,
    }


def _completion(result: Result, rid: str, created: int, model: str) -> dict[str, Any]:
    reasoning = "\n".join(result.thoughts) or None
    message = {"role": "assistant", "content": result.answer, "reasoning_content": reasoning}
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(result), "logprobs": None}],
        "usage": _usage(result),
    }


def _chunk(rid: str, created: int, model: str, delta: dict, finish: str | None = None, usage=None) -> str:
    data = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        data["usage"] = usage
    return f"data: {json.dumps(data)}\n\n"


async def _stream(
    job: Job, request: Request, rid: str, created: int, model: str, batcher: Batcher
) -> AsyncIterator[str]:
    yield _chunk(rid, created, model, {"role": "assistant", "content": ""})
    finished = False
    try:
        while True:
            try:
                kind, payload = await asyncio.wait_for(job.events.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if kind == "thought":
                yield _chunk(rid, created, model, {"reasoning_content": payload + "\n"})
            elif kind == "done":
                yield _chunk(rid, created, model, {"content": payload.answer})
                yield _chunk(rid, created, model, {}, _finish(payload), _usage(payload))
                yield "data: [DONE]\n\n"
                finished = True
                return
            elif kind == "error":
                yield f"data: {json.dumps({'error': {'message': payload, 'type': 'server_error'}})}\n\n"
                return
    finally:
        if not finished:
            job.cancelled = True  # the client went away before the answer: stop its generation
            batcher.disconnects += 1
