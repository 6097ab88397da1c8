"""How a chat request's messages become the base's history and question."""

import asyncio

from pseudocot.serve.app import Message, split_conversation


def _m(role: str, content: str | None) -> Message:
    return Message(role=role, content=content)


def test_answered_user_turns_become_history_and_the_last_user_turn_the_question():
    messages = [
        _m("system", "be brief"),
        _m("user", "q1"),
        _m("assistant", "a1"),
        _m("user", "unanswered"),
        _m("user", "q2"),
        _m("assistant", "a2"),
        _m("user", "q3"),
    ]
    assert split_conversation(messages) == ([("q1", "a1"), ("q2", "a2")], "q3")


def test_a_conversation_not_ending_with_a_user_question_is_refused():
    assert split_conversation([_m("user", "q"), _m("assistant", "a")]) is None
    assert split_conversation([_m("system", "s")]) is None
    assert split_conversation([_m("user", "q"), _m("user", None)]) is None


def test_a_full_queue_refuses_rather_than_grows():
    import pytest

    from pseudocot.config import GenerationPreset
    from pseudocot.records import Record
    from pseudocot.serve.batcher import QUEUE_FULL, Batcher, Job, Unavailable

    async def fill() -> None:
        batcher = Batcher(system=None, batch_size=1, max_queue=2)
        job = lambda: Job(Record(id="q", source="t", question="q", answer="?"), [], 1, GenerationPreset())  # noqa: E731
        batcher.submit(job())
        batcher.waiting.append(job())  # taken off the queue by the worker, not yet run: still counts
        with pytest.raises(Unavailable) as refused:
            batcher.submit(job())
        assert refused.value.failure == QUEUE_FULL

    asyncio.run(fill())


def test_a_failing_batch_reaches_every_waiting_request():
    from pseudocot.config import GenerationPreset
    from pseudocot.records import Record
    from pseudocot.serve.batcher import MODEL_FAILED, Batcher, Job

    class Broken:
        def run(self, *args, **kwargs):
            raise RuntimeError("out of memory")

    async def ask() -> list:
        batcher = Batcher(system=Broken(), batch_size=4, max_queue=8, batch_wait_s=0)
        batcher.start()

        def job(name: str, stream: bool = False) -> Job:
            record = Record(id=name, source="t", question="q", answer="?")
            return batcher.submit(Job(record, [], 1, GenerationPreset(), stream=stream))

        jobs = [job(f"q{k}") for k in range(3)]
        stream = job("s", stream=True)
        done = [await asyncio.wait_for(job.done, timeout=10) for job in jobs]
        event = await asyncio.wait_for(stream.events.get(), timeout=10)
        await batcher.stop()
        return [*done, event]

    assert asyncio.run(ask()) == [("error", MODEL_FAILED)] * 4


def test_a_bad_request_fails_alone_and_the_others_of_its_batch_are_answered():
    from pseudocot.config import GenerationPreset
    from pseudocot.infer.loop import Result
    from pseudocot.records import Record
    from pseudocot.serve.batcher import MODEL_FAILED, Batcher, Job

    class FailsOnBad:
        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        def run(self, records, **kwargs):
            self.batches.append([r.question for r in records])
            if any(r.question == "bad" for r in records):
                raise ValueError("bad input")
            return [Result(id=r.id, answer=f"re {r.question}", choice=None) for r in records]

    system = FailsOnBad()

    async def ask() -> list:
        batcher = Batcher(system=system, batch_size=4, max_queue=8, batch_wait_s=0.05)
        questions = ["q0", "bad", "q2"]
        jobs = [
            batcher.submit(Job(Record(id=q, source="t", question=q, answer="?"), [], 1, GenerationPreset()))
            for q in questions
        ]
        batcher.start()
        done = [await asyncio.wait_for(job.done, timeout=10) for job in jobs]
        await batcher.stop()
        return [payload if kind == "error" else payload.answer for kind, payload in done]

    assert asyncio.run(ask()) == ["re q0", MODEL_FAILED, "re q2"]
    assert system.batches == [["q0", "bad", "q2"], ["q0"], ["bad"], ["q2"]]
