"""The HTTP API under bad input, slow models, hang-ups and Ctrl-C, over real HTTP on a free port.

One server per module, without a key on 127.0.0.1 (so its Host header is checked), with a short
request timeout and a small queue. Its base is wrapped so a test can slow every forward pass, make it
write its stop token at once or fail, and count its passes; ``pseudocot serve`` itself is started as
a process to test its startup line, its option checks and Ctrl-C.
"""

import asyncio
import gc
import http.client
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from pseudocot.cli import app as cli
from pseudocot.infer.generate import stop_token_ids
from pseudocot.infer.system import PseudoCoT
from pseudocot.serve.app import Server, ServeSettings, bind, create_app

from .test_serve import running

QUESTION = "Working modulo 10, start with 237, then add 1, then multiply by 3. What is the result?"
TIMEOUT_S = 1.5


class Knobs:
    """What the wrapped base does on each forward pass."""

    def __init__(self) -> None:
        self.delay = 0.0  # seconds each pass sleeps
        self.stop_at_once = False  # its stop token gets all the probability
        self.fail = False  # it raises, with the request's text in the message
        self.passes = 0

    def reset(self) -> None:
        self.__init__()


def _wrap(model, knobs: Knobs, stop: int) -> None:
    forward = model.forward

    def wrapped(*args, **kwargs):
        knobs.passes += 1
        time.sleep(knobs.delay)
        if knobs.fail:
            raise RuntimeError(f"the model choked on {QUESTION}")
        out = forward(*args, **kwargs)
        if knobs.stop_at_once:
            out.logits[..., stop] = 1e4
        return out

    model.forward = wrapped


@dataclass
class Served:
    """The module's server: a client on its address, its app, its base's knobs and its system."""

    http: httpx.Client
    app: FastAPI
    knobs: Knobs
    system_dir: Path


@pytest.fixture(scope="module")
def server(micro_run):
    _, run, _ = micro_run
    system = PseudoCoT.load(run / "system")
    knobs = Knobs()
    _wrap(system.base, knobs, stop_token_ids(system.tokenizer)[0])
    settings = ServeSettings(batch_size=4, max_queue=4, batch_wait_s=0.01, request_timeout_s=TIMEOUT_S)
    app = create_app(system, settings)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Served(client, app, knobs, run / "system")


@pytest.fixture
def knobs(server):
    server.knobs.reset()
    yield server.knobs
    server.knobs.reset()
    deadline = time.time() + 5
    while server.http.get("/health").json()["batch_running_s"] > 0 and time.time() < deadline:
        time.sleep(0.02)


def _chat(content=QUESTION, **fields) -> dict:
    return {"model": "pseudocot", "messages": [{"role": "user", "content": content}], **fields}


def _post(server: Served, body: dict | bytes) -> httpx.Response:
    if isinstance(body, bytes):
        return server.http.post("/v1/chat/completions", content=body)
    return server.http.post("/v1/chat/completions", json=body)


def _running_s(server: Served) -> float:
    return server.http.get("/health").json()["batch_running_s"]


def _openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response's error, checked to be OpenAI's shape with this status (and code)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["type"]
    if code is not None:
        assert error["code"] == code, error
    return error


def test_prompts_over_the_context_are_refused_fast_and_never_queued(server, knobs):
    batcher = server.app.state.batcher
    before = batcher.batches_run
    long_history = [{"role": "user", "content": "seven " * 5000}, {"role": "assistant", "content": "ok"}]
    bodies = [
        _chat("x" * 40_000),
        _chat("x" * 900_000),  # under the 1 MB body limit
        _chat("seven " * 500),  # near the context: tokenized exactly
        {"model": "pseudocot", "messages": [*long_history, {"role": "user", "content": QUESTION}]},
    ]
    for body in bodies:
        times = []
        for _ in range(3):  # the best of three: this machine is shared
            started = time.perf_counter()
            response = _post(server, body)
            times.append(time.perf_counter() - started)
            error = _openai_error(response, 400, "context_length_exceeded")
        assert error["type"] == "invalid_request_error" and error["param"] == "messages"
        assert error["message"].startswith("This model's maximum context length is 2048 tokens. However, you requested")
        assert min(times) < 0.1, times
    # The answer budget counts: this question fits, but not with 2048 tokens to write.
    error = _openai_error(_post(server, _chat(max_tokens=2048, pseudocot={"max_thoughts": 0})), 400)
    assert "maximum context length is 2048 tokens" in error["message"]
    assert batcher.batches_run == before and knobs.passes == 0


def test_a_request_past_its_time_limit_gets_504_and_its_work_stops(server, knobs):
    knobs.delay = 0.05  # 200 tokens: 10 s
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_post, server, _chat(max_tokens=200))
        time.sleep(0.5)
        health = server.http.get("/health").json()
        assert health["status"] == "ok" and health["batch_running_s"] > 0.2
        response = pending.result()
    assert TIMEOUT_S <= time.perf_counter() - started < TIMEOUT_S + 1
    assert "limit" in _openai_error(response, 504, "request_timeout")["message"]
    time.sleep(0.2)  # one step
    assert _running_s(server) == 0
    passes = knobs.passes
    time.sleep(0.3)
    assert knobs.passes == passes


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_stops_its_work_within_a_step(server, knobs, stream):
    batcher = server.app.state.batcher
    before = batcher.disconnects
    knobs.delay = 0.05
    conn = http.client.HTTPConnection(server.http.base_url.host, server.http.base_url.port)
    conn.request("POST", "/v1/chat/completions", json.dumps(_chat(max_tokens=200, stream=stream)))
    while knobs.passes < 3:  # generating
        time.sleep(0.01)
    conn.sock.close()
    time.sleep(0.25)  # the hang-up is seen at once, the row stops after its current step
    assert _running_s(server) == 0
    passes = knobs.passes
    time.sleep(0.3)
    assert knobs.passes == passes and batcher.disconnects == before + 1


def test_a_full_queue_is_503_with_retry_after(server, knobs):
    knobs.delay = 0.02
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: _post(server, _chat(max_tokens=4)), range(12)))
    busy = [r for r in responses if r.status_code == 503]
    assert busy and all(r.status_code in (200, 503, 504) for r in responses)
    for response in busy:
        assert _openai_error(response, 503, "queue_full")["type"] == "server_error"
        assert response.headers["retry-after"] == "1"


def test_an_empty_answer_is_an_error_not_a_normal_stop(server, knobs):
    knobs.stop_at_once = True
    error = _openai_error(_post(server, _chat(pseudocot={"max_thoughts": 0})), 500, "empty_answer")
    assert error["type"] == "server_error"
    with server.http.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as raw:
        events = [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: {")]
    assert events[-1]["error"]["code"] == "empty_answer"
    assert not any(c.get("finish_reason") for e in events[:-1] for c in e["choices"])


def test_server_failures_are_openai_json_and_the_log_does_not_quote_the_request(server, knobs):

    @server.app.get("/fails")
    async def fails() -> None:
        raise ValueError(f"cannot read {QUESTION}")

    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        knobs.fail = True
        error = _openai_error(_post(server, _chat()), 500, "model_error")
        assert error["type"] == "server_error" and QUESTION not in error["message"]
        _openai_error(server.http.get("/fails"), 500, "internal_error")
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    text = "\n".join(record.getMessage() for record in logged)
    assert "RuntimeError" in text and "ValueError" in text and QUESTION not in text


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (_chat([{"type": "text", "text": 5}]), 422, "messages.0.content.parts.0.text"),
        (_chat([{"type": "text"}]), 422, "messages.0.content.parts.0"),
        (_chat(5), 422, "messages.0.content"),
        (b'{"model": "pseudocot", "messages": [{"role": "user", "content": "\\ud800"}]}', 400, None),
        (b'{"model": "pseudocot", "messages": [{"role": "user", "content": "caf\xe9"}]}', 400, None),
        (b'{"model": "pseudocot", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None),
        (b"{not json", 400, None),
        (_chat(stream="yes"), 422, "stream"),
        (_chat(n=2), 400, "n"),
        (_chat(stop=["\n"]), 400, "stop"),
        (_chat(" \n\t "), 400, "messages"),
        (_chat([{"type": "image_url", "image_url": {"url": "x"}}]), 400, "messages"),
        (_chat(temperature="0.5"), 422, "temperature"),
        (_chat(pseudocot={"options": ["4", " "]}), 422, "pseudocot.options"),
    ],
)
def test_bad_input_gets_an_openai_error_never_a_500(server, body, status, param):
    error = _openai_error(_post(server, body), status)
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_n_1_stop_null_and_a_tiny_temperature_are_answered_even_batched_together(server, knobs):
    body = _chat(n=1, stop=None, temperature=1e-300, pseudocot={"options": ["4", "8", "1", "6"]})
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _post(server, body), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    answers = {r.json()["choices"][0]["message"]["content"] for r in responses}
    assert len(answers) == 1 and answers.pop().startswith("The answer is")


def test_unknown_paths_methods_and_models_are_openai_errors(server):
    client = server.http
    assert client.get("/v1/models/pseudocot").json()["id"] == "pseudocot"
    assert _openai_error(client.get("/v1/models/gpt-4o"), 404, "model_not_found")["param"] == "model"
    _openai_error(client.post("/v1/nothing", json={}), 404)
    assert _openai_error(client.delete("/v1/models"), 405)["message"]


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:8000", 200),
        ("127.0.0.1", 200),
        ("[::1]:80", 200),
        ("evil.example:8000", 403),
        ("127.0.0.1.nip.io", 403),
    ],
)
def test_without_a_key_only_loopback_host_names_are_served(server, host, status):
    response = server.http.get("/v1/models", headers={"Host": host})
    if status == 403:
        assert _openai_error(response, 403, "host_not_allowed")["type"] == "permission_error"
    else:
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--port", "99999"], {}, "Invalid value for '--port': Input should be less than or equal to 65535"),
        (["--port", "-1"], {}, "Invalid value for '--port': Input should be greater than or equal to 0"),
        (["--api-key", " "], {}, "--api-key (or PSEUDOCOT_API_KEY) is blank"),
        ([], {"PSEUDOCOT_API_KEY": ""}, "--api-key (or PSEUDOCOT_API_KEY) is blank"),
    ],
)
def test_serve_refuses_a_bad_port_or_a_blank_key_in_one_sentence(server, args, env, says):
    result = CliRunner().invoke(cli, ["serve", str(server.system_dir), *args], env=env)
    assert result.exit_code != 0 and says in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output


def test_serve_says_when_a_port_is_taken(server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(server.system_dir), "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output


def test_serve_prints_its_address_when_ready_and_one_ctrl_c_stops_it_mid_batch(server):
    cli_path = Path(sys.executable).with_name("pseudocot")
    command = [str(cli_path), "serve", str(server.system_dir), "--port", "0", "--threads", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("pseudocot: serving 'pseudocot' at http://127.0.0.1:") and "(no API key)" in line
        url = line.split(" at ")[1].split("/v1")[0]
        assert int(url.rsplit(":", 1)[1]) > 0
        statuses, seconds = asyncio.run(_interrupt_mid_batch(url, proc))
        assert statuses == {503} and seconds < 1
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()


async def _interrupt_mid_batch(url: str, proc: subprocess.Popen) -> tuple[set[int], float]:
    """Sends Ctrl-C to the server while 16 long answers are being written; returns their statuses
    and how long after it they came back."""
    async with aiohttp.ClientSession() as session:
        body = _chat(max_tokens=900, pseudocot={"max_thoughts": 0})
        sent = [asyncio.ensure_future(session.post(f"{url}/v1/chat/completions", json=body)) for _ in range(16)]
        while True:
            await asyncio.sleep(0.05)
            async with session.get(f"{url}/health") as response:
                if (await response.json())["batch_running_s"] > 0.3:
                    break
        started = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        responses = await asyncio.gather(*sent)
        seconds = time.perf_counter() - started
        for response in responses:
            assert (await response.json())["error"]["code"] == "shutting_down"
            assert response.headers["Retry-After"] == "1"
        return {r.status for r in responses}, seconds


def _full_collection_s() -> float:
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started


def test_serve_freezes_what_it_loaded_so_a_full_collection_is_short(server):
    # A full collection scanned every object the models and libraries had made, with every thread
    # stopped: 0.3 s idle and up to 1.1 s under benchmarks/soak.py, the slowest refusals' wait.
    before = min(_full_collection_s() for _ in range(2))
    app = FastAPI()
    app.state.settings = ServeSettings()
    srv = Server(app)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [bind("127.0.0.1", 0)]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not srv.started and time.time() < deadline:
            time.sleep(0.05)
        assert srv.started and gc.get_freeze_count() > 100_000
        after = min(_full_collection_s() for _ in range(2))
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        gc.unfreeze()
    assert after < before / 5, (before, after)
