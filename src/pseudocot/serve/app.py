"""The OpenAI-compatible HTTP API (paper 6.4): ``pseudocot serve SYSTEM_DIR``.

Endpoints: ``POST /v1/chat/completions`` (non-streaming and server-sent events), ``GET /v1/models``,
``GET /v1/models/{id}``, ``GET /health``. The last user message is the question; earlier
user/assistant pairs are the chat history the base sees. The TTM's thoughts are returned as
``reasoning_content`` on the message (the field DeepSeek and vLLM use), streamed as
``reasoning_content`` deltas as they are written, then the answer as ``content``. ``usage`` counts
both models' tokens. A ``pseudocot`` object in the request sets ``max_thoughts`` and, for multiple
choice, ``options`` (scored by likelihood).

Safe by default: the CLI binds 127.0.0.1, and there without a key it refuses requests whose ``Host``
is not a loopback name (403: DNS rebinding); with an API key every endpoint but ``/health`` needs
``Authorization: Bearer KEY`` (401 otherwise). Bodies, message counts, ``max_tokens`` and thoughts
are bounded, and every prompt is counted against the models' context before it is queued (400, as
vLLM words it); a full queue is answered 503 with ``Retry-After``; a request past ``--request-timeout``
is answered 504 and its work stopped. Every error, the client's or the server's, is OpenAI-style JSON
(``{"error": {"message", "type", "param", "code"}}``), and the log never quotes a request's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import itertools
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator
from starlette.exceptions import HTTPException

from pseudocot.config import GenerationPreset
from pseudocot.errors import PseudoCoTError
from pseudocot.infer.loop import Result
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import Record, asked
from pseudocot.serve.batcher import Batcher, Failure, Job, Unavailable, log_failure, next_id
from pseudocot.serve.context import ContextLimit

GREEDY_BELOW = 1e-5  # a lower temperature decodes greedily: logits divided by it overflow to inf
SHUTDOWN_GRACE_S = 5.0  # after Ctrl-C, how long a request still open (a slow client's) may take
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # Host header names a loopback server without a key answers
INTERNAL = Failure(500, "The server failed on this request; its log says why.", code="internal_error")
EMPTY_ANSWER = Failure(
    500, "The base model wrote an empty answer; retry, or rephrase the question.", code="empty_answer"
)


class ServeSettings(BaseModel):
    """Limits and batching of the server."""

    model_name: str = Field("pseudocot", description="The model id clients ask for.")
    api_key: str | None = Field(None, pattern=r"\S", description="Bearer key every endpoint but /health requires.")
    host: str = Field("127.0.0.1", description="The interface bound; on a loopback one without a key, Host is checked.")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest request body, in bytes (413 beyond).")
    max_messages: int = Field(64, ge=1, description="Most messages in one request (400 beyond).")
    max_tokens_limit: int = Field(2048, ge=1, description="Largest max_tokens a request may ask for (400 beyond).")
    max_thoughts_limit: int = Field(4, ge=0, description="Most thoughts a request may ask for (400 beyond).")
    batch_size: int = Field(16, ge=1, description="Most requests run together in one pass of the loop.")
    batch_wait_s: float = Field(
        0.02, ge=0, description="Longest wait for as many requests as the last batch had (0: take what is queued)."
    )
    max_queue: int = Field(256, ge=1, description="Most requests waiting; more are answered 503.")
    request_timeout_s: float = Field(
        120.0, gt=0, description="Longest a request may take, queued and computed (504 beyond, its work stopped)."
    )


class ContentPart(BaseModel):
    """One part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_part_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs its 'text' as a string")
        return self


def _content_kind(content: Any) -> str | None:
    return "text" if isinstance(content, str) else "parts" if isinstance(content, list) else None


# Tagged, so an error names where it is (content.parts.0.text) rather than each branch it tried.
Content = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[ContentPart], Tag("parts")],
    Discriminator(
        _content_kind,
        custom_error_type="content_type",
        custom_error_message="Input should be a string or a list of content parts",
    ),
]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Content | None = None

    @property
    def text(self) -> str | None:
        """The content as text (the text parts of a list joined), or ``None`` where it is blank."""
        if isinstance(self.content, list):
            text = "".join(p.text or "" for p in self.content if p.type == "text")
        else:
            text = self.content
        return text if text and not text.isspace() else None


class PseudoCoTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    max_thoughts: int | None = Field(None, ge=0)
    options: list[str] | None = Field(None, min_length=2, max_length=10)

    @field_validator("options")
    @classmethod
    def _options_are_not_blank(cls, options: list[str] | None) -> list[str] | None:
        if options and any(not o.strip() for o in options):
            raise ValueError("every option needs text (none may be blank)")
        return options


class ChatRequest(BaseModel):
    # Types are strict ("stream": "yes" is refused, not read as true); OpenAI clients send fields we
    # do not use (top_p, seed, ...), which are allowed.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    stream: bool = False
    n: int | None = None
    stop: str | list[str] | None = None
    pseudocot: PseudoCoTOptions | None = None


def model_threads() -> int:
    """The models' CPU threads by default: torch's (one per physical core) but one, left to the event
    loop, so HTTP parsing and answering overlap the models' work instead of slowing it
    (``benchmarks/serve_load.py``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores) - 1)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return host == "localhost"


def split_conversation(messages: list[Message]) -> tuple[list[tuple[str, str]], str] | None:
    """The chat history (each user turn an assistant turn answered, in order) and the question (the
    last message, which must be the user's and not blank); system and tool messages are not shown
    to the base."""
    turns = [m for m in messages if m.role in ("user", "assistant") and m.text]
    if not turns or messages[-1].role != "user" or not messages[-1].text:
        return None
    history = [
        (before.text or "", after.text or "")
        for before, after in itertools.pairwise(turns[:-1])
        if before.role == "user" and after.role == "assistant"
    ]
    return history, turns[-1].text or ""


def _error_body(failure: Failure) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": failure.message, "type": failure.kind, "param": failure.param, "code": failure.code}}


def error(failure: Failure) -> JSONResponse:
    """An OpenAI-style error response (with ``Retry-After`` where the server is busy)."""
    headers = {"Retry-After": "1"} if failure.status == 503 else None
    return JSONResponse(_error_body(failure), status_code=failure.status, headers=headers)


def invalid(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    """An OpenAI-style error response to a request the client must change."""
    return error(Failure(status, message, "invalid_request_error", code, param))


def _invalid_body(err: ValidationError) -> JSONResponse:
    """400 for a body that is not JSON (invalid UTF-8, a lone surrogate, nesting too deep), 422 for
    JSON of the wrong shape; the message names the place, never the value."""
    first = err.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        message = f"The body is not valid JSON ({first['msg']}); send one JSON object, as UTF-8."
        return invalid(400, message, "invalid_json")
    where = ".".join(str(p) for p in first["loc"])
    return invalid(422, f"{where or 'body'}: {first['msg']}", "invalid_request", where or None)


class Guard:
    """The Host, key and body-size checks, and the last word on any error, as a plain ASGI middleware
    (Starlette's ``BaseHTTPMiddleware`` runs every request through extra tasks and streams, a cost as
    large as a tiny model's answer)."""

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings
        # A page on another site can reach a loopback server by a name it controls (DNS rebinding).
        self.check_host = is_loopback(settings.host) and not settings.api_key

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refuse(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = False

        async def sending(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as err:  # anything an endpoint did not answer: OpenAI-style, never text/plain
            log_failure(getattr(scope.get("route"), "path", "a request"), err)
            if not started:
                await error(INTERNAL)(scope, receive, send)

    def refuse(self, scope: dict) -> JSONResponse | None:
        """The error response a request gets before it reaches an endpoint, if any."""
        settings = self.settings
        headers = dict(scope["headers"])
        if self.check_host and _host_name(headers.get(b"host", b"")) not in LOCAL_HOSTS:
            message = "This server answers requests to localhost only; send them to 127.0.0.1, or serve with --api-key."
            return error(Failure(403, message, "permission_error", "host_not_allowed"))
        if scope["path"] != "/health" and settings.api_key:
            given = headers.get(b"authorization", b"")
            if not secrets.compare_digest(given, f"Bearer {settings.api_key}".encode()):
                message = "Missing or wrong API key: send 'Authorization: Bearer KEY'."
                return error(Failure(401, message, "authentication_error", "invalid_api_key"))
        length = headers.get(b"content-length")
        if scope["method"] == "POST" and length is None:
            # A chunked body could be of any size: ask for its length, as the limit needs.
            return invalid(411, "Send the request with a Content-Length header.", "length_required")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return invalid(413, f"Request body over {settings.max_body_bytes} bytes.", "body_too_large")
        return None


def _host_name(host: bytes) -> str:
    """The name in a Host header, without its port: ``localhost``, ``127.0.0.1``, ``[::1]``."""
    name = host.decode("latin-1").lower()
    return name[: name.find("]") + 1] if name.startswith("[") else name.partition(":")[0]


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one), for :class:`Server`.

    Raises:
        PseudoCoTError: the address cannot be bound (the port is in use, the host is not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise PseudoCoTError(
            f"cannot listen on {host}:{port} ({err.strerror}); pass another --port or --host."
        ) from None
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, which freezes what is loaded out of the garbage collector before it listens,
    prints one line once it does (its address, model and whether a key is needed), and whose first
    Ctrl-C (or SIGTERM) stops the models' work within one token, so the requests in flight are
    answered (503) and it exits without a second one."""

    def __init__(self, app: FastAPI) -> None:
        # Past the grace period, requests still open (a client sending its body slowly) are dropped.
        super().__init__(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
        self.app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # Everything loaded by now (the models, torch, transformers: some 420,000 objects for the tiny
        # system) lives as long as the server. A full collection scanned it all with every thread
        # stopped, 0.3 s on an idle server and 0.4-1.1 s under benchmarks/soak.py, the slowest
        # refusals' wait; frozen, it is never scanned again.
        gc.collect()
        gc.freeze()
        await super().startup(sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            address = f"[{host}]" if ":" in host else host
            settings = self.app.state.settings
            key = "API key required" if settings.api_key else "no API key"
            print(f"pseudocot: serving '{settings.model_name}' at http://{address}:{port}/v1 ({key})", flush=True)

    def handle_exit(self, sig: int, frame: Any) -> None:
        batcher = getattr(self.app.state, "batcher", None)
        if batcher is not None:
            batcher.close()
        super().handle_exit(sig, frame)


def create_app(system: PseudoCoT, settings: ServeSettings | None = None) -> FastAPI:
    """The API around one loaded system: the :class:`Guard`'s checks (Host, API key, body size) before
    every endpoint, OpenAI-style errors for unknown paths and methods, the status routes and the chat
    route."""
    settings = settings or ServeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = Batcher(
            system, settings.batch_size, settings.max_queue, settings.batch_wait_s, settings.request_timeout_s
        )
        batcher.start()
        app.state.batcher = batcher
        yield
        await batcher.stop()

    app = FastAPI(title="pseudocot", lifespan=lifespan)
    app.state.settings = settings
    app.state.batcher = None
    app.add_middleware(Guard, settings=settings)
    app.add_exception_handler(HTTPException, _http_error)
    _add_status_routes(app, settings)
    _add_chat_route(app, system, settings)
    return app


async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    """An unknown path or a wrong method, answered OpenAI-style (with the headers Starlette set, e.g. ``Allow``)."""
    message = f"{request.method} {request.url.path}: {err.detail}."
    response = invalid(err.status_code, message, "not_found" if err.status_code == 404 else "invalid_request")
    response.headers.update(err.headers or {})
    return response


def _unknown_model(model: str, settings: ServeSettings) -> JSONResponse:
    message = f"The model '{model}' does not exist; this server has '{settings.model_name}'."
    return invalid(404, message, "model_not_found", "model")


def _add_status_routes(app: FastAPI, settings: ServeSettings) -> None:
    """``GET /health`` (the batcher's state, open to all) and the OpenAI model list and card."""

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = app.state.batcher
        if batcher is None:
            return {"status": "starting"}
        return {
            "status": "stopping" if batcher.closing else "ok",
            "batch_running_s": round(batcher.running_s(), 3),
            "queued": batcher.queue.qsize() + len(batcher.waiting),
            "batches": batcher.batches_run,
            "largest_batch": batcher.largest_batch,
        }

    card = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "pseudocot"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> Any:
        return card if model == settings.model_name else _unknown_model(model, settings)


@dataclass
class _Asked:
    """A chat request that passed its checks: the question, the chat history before it, how many
    thoughts it may get and how the base writes its answer."""

    record: Record
    history: list[tuple[str, str]]
    thoughts: int
    preset: GenerationPreset


def _read(body: ChatRequest, system: PseudoCoT, settings: ServeSettings) -> _Asked | JSONResponse:
    """The request's question and settings, or the error response it gets (400, or 404 for another model)."""
    if body.model != settings.model_name:
        return _unknown_model(body.model, settings)
    if body.n not in (None, 1):
        return invalid(400, "n must be 1: this server writes one answer per request.", "unsupported", "n")
    if body.stop:
        message = "stop is not supported: the base ends its answer itself; leave stop out or null."
        return invalid(400, message, "unsupported", "stop")
    if len(body.messages) > settings.max_messages:
        return invalid(400, f"At most {settings.max_messages} messages per request.", "too_many_messages")
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is not None and max_tokens > settings.max_tokens_limit:
        return invalid(400, f"max_tokens is at most {settings.max_tokens_limit}.", "max_tokens_too_large")
    options = body.pseudocot or PseudoCoTOptions()
    thoughts = system.max_thoughts if options.max_thoughts is None else options.max_thoughts
    # Never more thoughts than the router was trained to judge.
    cap = min(settings.max_thoughts_limit, system.router.max_thoughts if system.router else system.max_thoughts)
    if thoughts > cap:
        return invalid(400, f"pseudocot.max_thoughts is at most {cap}.", "too_many_thoughts")
    parsed = split_conversation(body.messages)
    if parsed is None:
        message = "The last message must be a user message with a question (not blank)."
        return invalid(400, message, "no_question", "messages")
    history, question = parsed
    record = asked(f"req-{next_id()}", "api", question, options.options or [])
    # The request's max_tokens and temperature shape the base's free-text answer; temperature 0 is greedy.
    update: dict[str, Any] = {"max_new_tokens": max_tokens} if max_tokens else {}
    if body.temperature is not None:
        sample = body.temperature >= GREEDY_BELOW
        update |= {"do_sample": sample, "temperature": body.temperature if sample else 1.0}
    return _Asked(record, history, thoughts, GenerationPreset(**(system.base_preset.model_dump() | update)))


def _add_chat_route(app: FastAPI, system: PseudoCoT, settings: ServeSettings) -> None:
    """``POST /v1/chat/completions``: a request is checked, counted against the context, queued on the
    batcher and answered whole or streamed."""
    limit = ContextLimit(system)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = ChatRequest.model_validate_json(await request.body())
        except ValidationError as err:
            return _invalid_body(err)
        read = _read(body, system, settings)
        if isinstance(read, JSONResponse):
            return read
        need = limit.quick(read.record, read.history, read.thoughts, read.preset)
        if need is None:  # near the context: tokenized, off the event loop
            need = await asyncio.to_thread(limit.count, read.record, read.history, read.thoughts, read.preset)
        too_long = limit.refusal(need, read.thoughts)
        if too_long:
            return invalid(400, too_long, "context_length_exceeded", "messages")
        batcher: Batcher = app.state.batcher
        job = Job(read.record, read.history, read.thoughts, read.preset, stream=body.stream)
        try:
            batcher.submit(job)
        except Unavailable as busy:
            return error(busy.failure)
        created, rid = int(time.time()), f"chatcmpl-{read.record.id}"
        if body.stream:
            events = _stream(job, request, rid, created, settings.model_name, batcher)
            return StreamingResponse(events, media_type="text/event-stream")
        return await _answer(job, request, rid, created, settings.model_name, batcher)


async def _answer(job: Job, request: Request, rid: str, created: int, model: str, batcher: Batcher) -> Response:
    """The whole completion, once the job is done; or 499 if the client hung up first, or its error."""
    assert job.done is not None  # set by Batcher.submit
    hangup = asyncio.ensure_future(_hung_up(request))
    try:
        kind, payload = await _next(batcher, job, job.done, hangup)
    finally:
        hangup.cancel()
    if kind == "gone":  # nobody to answer
        batcher.disconnects += 1
        return invalid(499, "Client closed the request.", "client_closed")
    if kind == "error":
        return error(payload)
    finish = _finish(payload)
    if finish is None:
        return error(EMPTY_ANSWER)
    return JSONResponse(_completion(payload, finish, rid, created, model))


async def _hung_up(request: Request) -> None:
    """Returns once the client has hung up (its body read, nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _next(batcher: Batcher, job: Job, pending: Awaitable, hangup: asyncio.Future) -> tuple[str, Any]:
    """What comes first: the job's next event (``pending``), the client hanging up (``("gone",
    None)``) or its deadline (``("error", timed out)``); in the last two the job is stopped."""
    event = asyncio.ensure_future(pending)
    try:
        timeout = max(0.0, job.deadline - time.monotonic())
        done, _ = await asyncio.wait({event, hangup}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if event in done:
            return event.result()
        return ("gone", None) if hangup in done else ("error", batcher.timed_out)
    finally:
        if not event.done():  # no event: its work stops at the next token
            event.cancel()
            job.cancelled = True


def _finish(result: Result) -> str | None:
    """``length`` when the base's answer ran into max_tokens, ``stop`` when it ended it, ``None`` when
    it wrote nothing."""
    if result.truncated:
        return "length"
    return "stop" if result.answer.strip() else None


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


def _completion(result: Result, finish: str, rid: str, created: int, model: str) -> dict[str, Any]:
    reasoning = "\n".join(result.thoughts) or None
    message = {"role": "assistant", "content": result.answer, "reasoning_content": reasoning}
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
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


def _error_event(failure: Failure) -> str:
    return f"data: {json.dumps(_error_body(failure))}\n\n"


async def _stream(
    job: Job, request: Request, rid: str, created: int, model: str, batcher: Batcher
) -> AsyncIterator[str]:
    yield _chunk(rid, created, model, {"role": "assistant", "content": ""})
    hangup = asyncio.ensure_future(_hung_up(request))
    left = True  # until the stream's last event is sent
    try:
        while True:
            kind, payload = await _next(batcher, job, job.events.get(), hangup)
            if kind == "thought":
                yield _chunk(rid, created, model, {"reasoning_content": payload + "\n"})
                continue
            if kind == "gone":
                return
            finish = _finish(payload) if kind == "done" else None
            if finish is not None:
                yield _chunk(rid, created, model, {"content": payload.answer})
                yield _chunk(rid, created, model, {}, finish, _usage(payload))
                yield "data: [DONE]\n\n"
            else:
                yield _error_event(payload if kind == "error" else EMPTY_ANSWER)
            left = False
            return
    finally:
        hangup.cancel()
        if left:  # the client went away before the answer: stop its generation
            job.cancelled = True
            batcher.disconnects += 1
