"""The HTTP API over real HTTP on a free port, with the official openai client and raw httpx."""

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI

from pseudocot.infer.system import PseudoCoT
from pseudocot.records import Record
from pseudocot.serve.app import ServeSettings, bind, create_app

KEY = "test-key"
QUESTION = "Working modulo 10, start with 237, then add 1, then multiply by 3. What is the result?"
OPTIONS = ["4", "8", "1", "6"]


@contextlib.contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port of 127.0.0.1; yields its address."""
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(micro_run):
    _, run, _ = micro_run
    system = PseudoCoT.load(run / "system")
    settings = ServeSettings(api_key=KEY, max_body_bytes=20_000, max_messages=8, batch_size=8, batch_wait_s=0.05)
    app = create_app(system, settings)
    with running(app) as url:
        yield url, system, app


def _raw_stream(url: str):
    body = {"model": "pseudocot", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    return httpx.stream("POST", f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=body)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def _ask(client: openai.OpenAI, question: str = QUESTION, **kw):
    extra = {"pseudocot": {"options": OPTIONS, "max_thoughts": 1}}
    return client.chat.completions.create(
        model="pseudocot", messages=[{"role": "user", "content": question}], extra_body=extra, **kw
    )


def test_openai_client_gets_the_in_process_answer_with_thoughts_and_usage(server):
    url, system, _ = server
    response = _ask(_client(url))
    record = Record(id="q", source="t", question=QUESTION, choices=OPTIONS, answer="A")
    expected = system.run([record], max_thoughts=1)[0]
    message = response.choices[0].message
    assert message.content == expected.answer
    assert (message.model_extra.get("reasoning_content") or None) == ("\n".join(expected.thoughts) or None)
    total = sum(u.total for u in expected.usage.values())
    assert response.usage.total_tokens == total > 0
    assert _client(url).models.list().data[0].id == "pseudocot"


def test_streaming_sends_thoughts_then_the_answer_then_done(server):
    url, _, _ = server
    plain = _ask(_client(url)).choices[0].message
    stream = _ask(_client(url), stream=True)
    reasoning, content, finish = "", "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        if delta.content:
            assert not finish
            content += delta.content
        finish = chunk.choices[0].finish_reason or finish
    assert content == plain.content and finish == "stop"
    assert reasoning.strip() == (plain.model_extra.get("reasoning_content") or "")
    with _raw_stream(url) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ("{not json", {}, 400),
        ({"model": "pseudocot", "messages": "hello"}, {}, 422),
        ({"model": "pseudocot", "messages": [{"role": "user", "content": 5}]}, {}, 422),
        ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, {}, 404),
        ({"model": "pseudocot", "messages": [{"role": "user", "content": "hi"}] * 9}, {}, 400),
        ({"model": "pseudocot", "messages": [{"role": "user", "content": "x" * 30_000}]}, {}, 413),
        ({"model": "pseudocot", "max_tokens": 10**6, "messages": [{"role": "user", "content": "hi"}]}, {}, 400),
        ({"model": "pseudocot", "messages": [{"role": "user", "content": "hi"}]}, {"Authorization": ""}, 401),
        ({"model": "pseudocot", "messages": [{"role": "user", "content": "hi"}]}, {"Authorization": "Bearer x"}, 401),
    ],
)
def test_bad_requests_get_openai_style_errors(server, body, headers, status):
    url, _, _ = server
    sent = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"} | headers
    data = body if isinstance(body, str) else None
    response = httpx.post(f"{url}/v1/chat/completions", headers=sent, content=data, json=None if data else body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_content_parts_chunked_bodies_and_thought_caps(server):
    url, system, _ = server
    auth = {"Authorization": f"Bearer {KEY}"}
    parts = [{"type": "text", "text": QUESTION}]
    body = {"model": "pseudocot", "messages": [{"role": "user", "content": parts}], "pseudocot": {"options": OPTIONS}}
    response = httpx.post(f"{url}/v1/chat/completions", headers=auth, json=body)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"].startswith("The answer")
    chunked = httpx.post(f"{url}/v1/chat/completions", headers=auth, content=iter([b'{"model": "pseudocot"}']))
    assert chunked.status_code == 411
    too_many = {**body, "pseudocot": {"max_thoughts": system.router.max_thoughts + 1}}
    assert httpx.post(f"{url}/v1/chat/completions", headers=auth, json=too_many).status_code == 400


def test_a_free_text_answer_cut_by_max_tokens_finishes_with_length(server):
    url, _, _ = server
    free = {"model": "pseudocot", "max_tokens": 1, "messages": [{"role": "user", "content": QUESTION}]}
    body = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=free).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["pseudocot"]["base"]["generated"] >= 1


def test_health_needs_no_key_and_everything_else_does(server):
    url, _, _ = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    assert httpx.get(f"{url}/v1/models").status_code == 401


def test_concurrent_requests_are_all_answered_and_batched(server):
    url, system, app = server
    questions = [f"Working modulo 10, start with {100 + i}, then add 5. What is the result?" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda q: _ask(_client(url), q).choices[0].message.content, questions))
    records = [Record(id=str(i), source="t", question=q, choices=OPTIONS, answer="A") for i, q in enumerate(questions)]
    assert answers == [r.answer for r in system.run(records, max_thoughts=1)]
    assert app.state.batcher.largest_batch > 1


def test_a_client_that_leaves_mid_stream_stops_its_generation(server):
    url, _, app = server
    batcher = app.state.batcher
    before = batcher.disconnects
    with _raw_stream(url) as raw:
        next(raw.iter_lines())  # the first chunk, then hang up
    deadline = time.time() + 10
    while batcher.disconnects == before and time.time() < deadline:
        time.sleep(0.05)
    assert batcher.disconnects > before
    assert httpx.get(f"{url}/health").status_code == 200
