"""The pseudo-CoT system on the micro run: the loop, its replay, its variants, and ask/chat."""

import json

import pytest
import torch
from typer.testing import CliRunner

from pseudocot.cli import app
from pseudocot.config import GenerationPreset
from pseudocot.infer import answer_modes, loop
from pseudocot.infer.prefix_cache import ConversationCache
from pseudocot.infer.system import PseudoCoT
from pseudocot.records import Record, read_jsonl
from pseudocot.train.rollouts import rollout


@pytest.fixture(scope="module")
def system(micro_run):
    _, run, _ = micro_run
    return PseudoCoT.load(run / "system"), list(read_jsonl(run / "world" / "test.jsonl"))[:10]


def test_always_thinking_gives_every_step_with_its_cost(system):
    pseudo, records = system
    results = pseudo.run(records, "always", max_thoughts=2)
    for res in results:
        assert len(res.answers) == 3 and len(res.thoughts) == 2 and len(res.scores) == 2
        assert res.answer == res.answers[-1] and res.answer.startswith("The answer is")
        assert len(res.base_tokens) == 3 and len(res.ttm_tokens) == 2
        base, ttm = res.usage["base"].total, res.usage["ttm"].total
        assert base == sum(res.base_tokens) and ttm == sum(res.ttm_tokens) and ttm > 0
        assert res.flops == 2 * (pseudo.parameters["base"] * base + pseudo.parameters["ttm"] * ttm)
        assert all(abs(sum(c) - 1) < 1e-3 for c in res.confidence)
    never = pseudo.run(records, "never")
    assert all(len(r.answers) == 1 and not r.thoughts for r in never)
    assert [r.answers[0] for r in never] == [r.answers[0] for r in results]


def test_the_router_run_equals_its_replay_on_always_think_rollouts(system):
    pseudo, records = system
    rollouts = rollout(pseudo, records, pseudo.max_thoughts)
    scores = rollouts.policy_scores(pseudo.router)
    replay = rollouts.simulate(scores, pseudo.router.threshold)
    live = pseudo.run(records)  # the router, its threshold
    accuracy = sum(r.letter == rec.answer for r, rec in zip(live, records, strict=True)) / len(records)
    assert accuracy == pytest.approx(replay["accuracy"])
    assert sum(len(r.thoughts) for r in live) / len(live) == pytest.approx(replay["mean_thoughts"])
    first = [r.scores[0] for r in live]
    torch.testing.assert_close(torch.tensor(first), scores[:, 0], atol=1e-4, rtol=1e-4)


def test_batched_answers_equal_one_question_at_a_time(system):
    pseudo, records = system
    together = pseudo.run(records[:4], "always", max_thoughts=1)
    alone = [pseudo.run([r], "always", max_thoughts=1)[0] for r in records[:4]]
    for a, b in zip(together, alone, strict=True):
        assert a.thoughts == b.thoughts
        torch.testing.assert_close(torch.tensor(a.confidence), torch.tensor(b.confidence), atol=1e-3, rtol=0)


def test_thought_first_variant_and_free_text_questions(system):
    pseudo, records = system
    first = pseudo.thought_first(records[:3])
    assert all(len(r.thoughts) == 1 and len(r.answers) == 1 for r in first)
    free = Record(id="q", source="user", question=records[0].question, answer="?")
    result = pseudo.run([free], "always", max_thoughts=1)[0]
    assert result.choice is None and len(result.answers) == 2
    assert len(result.confidence[0]) == 4 and result.usage["base"].generated > 0


def test_each_call_decodes_with_its_own_preset_or_the_systems(system):
    pseudo, records = system
    free = [Record(id="q", source="user", question=records[0].question, answer="?")]
    fresh = pseudo.thought_first(free)[0]
    assert fresh.usage["base"].generated > 1
    short = pseudo.run(free, "never", base_preset=GenerationPreset(max_new_tokens=1))[0]
    assert short.usage["base"].generated == 1 and short.truncated
    again = pseudo.thought_first(free)[0]  # not the preset of the call before it
    assert again.answers == fresh.answers and again.usage["base"].generated == fresh.usage["base"].generated


def test_thoughts_stopped_at_the_ttm_ceiling_are_counted(system, monkeypatch):
    pseudo, records = system
    whole = pseudo.run(records[:4], "always", max_thoughts=1)
    ceiling = pseudo.ttm_preset.max_new_tokens
    for res in whole:  # a thought is cut only if it ran to the ceiling
        assert res.thoughts_cut in (0, 1) and (res.thoughts_cut == 0 or res.usage["ttm"].generated == ceiling)
        assert res.to_dict()["thoughts_cut"] == res.thoughts_cut
    monkeypatch.setattr(pseudo, "ttm_preset", GenerationPreset(max_new_tokens=2))
    cut = pseudo.run(records[:4], "always", max_thoughts=1)
    assert [r.thoughts_cut for r in cut] == [1, 1, 1, 1]
    assert [r.usage["ttm"].generated for r in cut] == [2, 2, 2, 2]
    first = pseudo.thought_first(records[:2])  # the cot rows' path counts them too
    assert [r.thoughts_cut for r in first] == [1, 1]


def test_ask_and_chat_on_a_system_directory(micro_run):
    _, run, _ = micro_run
    runner = CliRunner()
    question = "Working modulo 10, start with 3, then add 4. What is the result?"
    out = runner.invoke(app, ["ask", question, "--system", str(run / "system"), "--policy", "always"])
    assert out.exit_code == 0, out.output
    assert "thought:" in out.output and "answer:" in out.output and "MFLOPs" in out.output
    options = ["--option", "7", "--option", "3", "--option", "1", "--option", "9"]
    out = runner.invoke(app, ["ask", question, *options, "--system", str(run / "system"), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["letter"] in "ABCD" and result["answer"].startswith("The answer is")
    bad = runner.invoke(app, ["ask", question, "--system", str(run / "system"), "--policy", "sometimes"])
    assert bad.exit_code != 0 and "unknown policy" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(app, ["ask", question, "--system", str(run / "nowhere")])
    assert missing.exit_code != 0 and "not a pseudo-CoT system" in missing.output
    chat = runner.invoke(app, ["chat", "--system", str(run / "system")], input=f"{question}\n/reset\n{question}\n")
    assert chat.exit_code == 0, chat.output
    assert chat.output.count("answer:") == 2 and "session forgotten" in chat.output


def test_the_answer_stage_writes_every_question_and_agrees_with_its_metrics(micro_run):
    _, run, output = micro_run
    rows = [json.loads(line) for line in (run / "answers" / "test" / "answers.jsonl").read_text().splitlines()]
    metrics = json.loads((run / "answers" / "test" / "manifest.json").read_text())["metrics"]
    assert len(rows) == metrics["questions"] == len(list(read_jsonl(run / "world" / "test.jsonl")))
    assert metrics["accuracy_all"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert metrics["call_rate"] == pytest.approx(sum(bool(r["thoughts"]) for r in rows) / len(rows))
    assert "base + TTM + router" in output


def test_the_kv_cache_changes_no_answer_and_reads_fewer_tokens(system):
    pseudo, records = system
    cached = pseudo.run(records, "always", max_thoughts=2)
    pseudo.kv_cache = False
    try:
        plain = pseudo.run(records, "always", max_thoughts=2)
    finally:
        pseudo.kv_cache = True
    for a, b in zip(cached, plain, strict=True):
        assert a.choices == b.choices and a.thoughts == b.thoughts
        torch.testing.assert_close(torch.tensor(a.confidence), torch.tensor(b.confidence), atol=1e-3, rtol=0)
        assert a.base_tokens[0] == b.base_tokens[0]  # the first round has nothing to reuse
        assert all(x < y for x, y in zip(a.base_tokens[1:], b.base_tokens[1:], strict=True))


def test_the_loop_holds_no_more_key_value_caches_than_its_budget(system, monkeypatch):
    pseudo, records = system
    unbounded = pseudo.run(records, "always", max_thoughts=2)
    per_question = loop.question_kv_bytes(pseudo, pseudo._call(records), 2)
    budget = 3 * per_question + per_question // 2  # room for three questions' caches at their longest
    held, real_extend = [], ConversationCache.extend

    def extend(cache, keys, sequences):
        out = real_extend(cache, keys, sequences)
        tensors = [t for e in cache.entries.values() for t in [*e.keys, *e.values]]
        held.append((len(cache.entries), sum(t.nbytes for t in tensors)))
        return out

    monkeypatch.setattr(ConversationCache, "extend", extend)
    rounds = []
    pseudo.kv_cache_bytes = budget
    try:
        bounded = pseudo.run(records, "always", max_thoughts=2, on_state=lambda rows, _: rounds.append(rows))
    finally:
        pseudo.kv_cache_bytes = None
    assert loop.chunk_size(pseudo, pseudo._call(records), 2) == 4 * pseudo.batch_size >= len(records)
    assert max(n for n, _ in held) == 3 and max(b for _, b in held) <= budget  # 3 at a time, within the budget
    assert rounds[:3] == [[0, 1, 2]] * 3 and rounds[-1] == [9]  # chunks of 3, each through its rounds
    for a, b in zip(bounded, unbounded, strict=True):
        assert a.choices == b.choices and a.thoughts == b.thoughts


def test_free_text_confidence_read_off_the_generation_equals_a_second_pass(system, monkeypatch):
    pseudo, records = system
    free = [Record(id=r.id, source="user", question=r.question, answer="?") for r in records[:6]]
    passes = []
    second = answer_modes.answer_confidence
    monkeypatch.setattr(answer_modes, "answer_confidence", lambda *a: passes.append(1) or second(*a))
    read_off = pseudo.run(free, "always", max_thoughts=1)
    alone = [pseudo.run([q], "always", max_thoughts=1)[0] for q in free[:3]]
    assert not passes  # a micro model's steps fit: no second pass
    monkeypatch.setattr(
        answer_modes, "READOUT_BYTES", 0
    )  # too little memory to keep the steps: the batched second pass
    second_pass = pseudo.run(free, "always", max_thoughts=1)
    assert passes
    for a, b in zip(read_off, second_pass, strict=True):
        assert a.answers == b.answers and a.thoughts == b.thoughts
        torch.testing.assert_close(torch.tensor(a.confidence), torch.tensor(b.confidence), atol=2e-4, rtol=0)
    for a, b in zip(read_off, alone, strict=False):
        assert a.answers == b.answers
        torch.testing.assert_close(torch.tensor(a.confidence), torch.tensor(b.confidence), atol=2e-4, rtol=0)
    assert all(len(c) == 4 and sum(c) <= 1 + 1e-3 for r in read_off for c in r.confidence)


def test_the_second_pass_is_the_same_batched_and_row_by_row(system):
    pseudo, records = system
    tok = pseudo.tokenizer
    prompt_ids = [tok(r.question, add_special_tokens=False)["input_ids"] for r in records[:4]]
    answer_ids = [tok(text, add_special_tokens=False)["input_ids"] for text in ("7", "The answer is 3", "x", "12 13")]
    states, tops = answer_modes.answer_confidence(pseudo.base, tok, prompt_ids, answer_ids)
    for k in range(4):
        alone_state, alone_top = answer_modes.answer_confidence(
            pseudo.base, tok, prompt_ids[k : k + 1], answer_ids[k : k + 1]
        )
        torch.testing.assert_close(states[k], alone_state[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(tops[k], alone_top[0], atol=1e-4, rtol=1e-4)
