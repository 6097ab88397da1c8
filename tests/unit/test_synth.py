"""Synthetic data: chunking, parsing, duplicates, support, the traces' acceptance filter, resume."""

import itertools
import json

import pytest

from pseudocot.config import QAConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.infer.choice import reached_choice
from pseudocot.records import Record
from pseudocot.synth.qa import chunk_text, filter_pairs, parse_pairs, read_documents, support, synthesize_qa
from pseudocot.synth.traces import reaches_gold

DOC = "# Widget\n\nThe Widget 3000 charges in 40 minutes. " + " ".join(
    f"Fact {i} is about part {i}." for i in range(60)
)


def test_chunks_have_the_size_overlap_and_offsets_asked(tokenizer):
    chunks = chunk_text("a.md", DOC, tokenizer, size=32, overlap=8)
    assert len(chunks) > 3
    ids = [tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in chunks]
    assert all(abs(len(i) - 32) <= 2 for i in ids[:-1])  # re-tokenizing a span may merge at its edges
    for chunk in chunks:
        assert DOC[chunk.start : chunk.end] == chunk.text
    for a, b in itertools.pairwise(chunks):
        assert a.start < b.start < a.end  # consecutive chunks overlap
        assert a.text[b.start - a.start :].strip()
    assert chunks[0].start == 0 and chunks[-1].end == len(DOC.rstrip())
    single = chunk_text("s.txt", "One short line.", tokenizer, size=64, overlap=8)
    assert len(single) == 1 and single[0].text == "One short line."
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("a", DOC, tokenizer, size=8, overlap=8)


def test_parse_pairs_reads_formats_and_counts_malformed():
    good = "Q: How long does it charge?\nA: 40 minutes.\n\nQ: What colour?\nA: Blue,\nor green."
    assert parse_pairs(good) == ([("How long does it charge?", "40 minutes."), ("What colour?", "Blue, or green.")], 0)
    numbered = "1. **Question:** Where is it made?\n**Answer:** In Norway.\n2) Q2: Why?\nA2: Because."
    assert parse_pairs(numbered) == ([("Where is it made?", "In Norway."), ("Why?", "Because.")], 0)
    partly = "Q: First?\nQ: Second?\nA: Two.\nA: orphan answer\nQ: Empty answer?\nA:\nsome chatter"
    pairs, malformed = parse_pairs(partly)
    assert pairs == [("Second?", "Two."), ("Empty answer?", "some chatter")]
    assert malformed == 2  # the question without an answer, the answer without a question
    assert parse_pairs('[{"question": "Q1?", "answer": "A1"}, {"question": "no answer"}]') == ([("Q1?", "A1")], 1)
    assert parse_pairs("") == ([], 0)
    assert parse_pairs("I cannot help with that.") == ([], 0)
    assert parse_pairs("[not json") == ([], 0)
    assert parse_pairs("[" * 100_000) == ([], 0)  # deeply nested: not a crash
    fenced = 'Here you go:\n```json\n[{"question": "Q?", "answer": "A."}]\n```\nHope it helps.'
    assert parse_pairs(fenced) == ([("Q?", "A.")], 0)
    assert parse_pairs("Q" + " " * 5000 + "x\nA:" + " " * 5000) == ([], 1)  # quick, and the bare "A:" is malformed


def _pair(question, answer="It charges in 40 minutes.", chunk=DOC):
    return {"question": question, "answer": answer, "chunk_text": chunk}


def test_filter_drops_exact_and_near_duplicates_and_unsupported_answers():
    candidates = [
        _pair("How long does the Widget 3000 take to charge?"),
        _pair("how long does the widget 3000 take to charge"),  # exact after normalising
        _pair("How long does the Widget 3000 take to charge fully?"),  # near
        _pair("What is the warranty?", "Five years of cover."),  # not in the chunk
        _pair("What is fact 7 about?", "Part 7."),
    ]
    kept, rejected = filter_pairs(candidates, near_duplicate=0.8, min_support=0.7)
    assert [k["question"] for k in kept] == ["How long does the Widget 3000 take to charge?", "What is fact 7 about?"]
    assert [r["reason"] for r in rejected] == ["duplicate", "near_duplicate", "unsupported"]
    kept, _ = filter_pairs(candidates, near_duplicate=1.0, min_support=None)
    assert len(kept) == 4  # only the exact duplicate goes
    assert support("Five years of cover.", DOC) == 0.0 and support("the part", DOC) == 1.0


def test_traces_are_accepted_only_when_they_reach_the_gold_answer():
    record = Record(id="q", source="t", question="?", choices=["3", "8", "7", "1"], answer="B")
    right = "Start with 7. Then add 1: 7 + 1 = 8. So the result is 8."
    wrong = "Start with 7. Then add 1: 7 + 1 = 8. So the result is 7."
    lucky_step = "Start with 7. Then add 1: 7 + 1 = 8. Then add 1: 8 + 1 = 9. So the result is 9."
    assert reaches_gold(right, record) == (True, "B")
    assert reaches_gold(wrong, record) == (False, "C")
    assert reaches_gold(lucky_step, record) == (False, None)  # 8 appears in a step, not in the conclusion
    assert reaches_gold("", record) == (False, None)
    assert reached_choice("Therefore, the answer is (B). Because 7 + 1 = 8.", record.choices) == 1
    free = Record(id="f", source="t", question="Capital?", answer="Oslo")
    assert reaches_gold("Norway's capital is Oslo. So the answer is Oslo.", free)[0]
    assert not reaches_gold("So the answer is Bergen.", free)[0]
    eight = Record(id="n", source="t", question="?", answer="8")
    assert not reaches_gold("So the result is 18.", eight)[0] and reaches_gold("So the result is 8.", eight)[0]


def test_missing_or_empty_document_folder_is_one_sentence(tmp_path):
    with pytest.raises(PseudoCoTError, match="does not exist"):
        read_documents(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.md").write_text("  \n")
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(PseudoCoTError, match=r"has no non-empty \.txt, \.md or \.pdf files"):
        read_documents(tmp_path / "empty")


def test_qa_writes_provenance_and_resumes_without_redoing_chunks(tokenizer, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "widget.md").write_text(DOC)
    (docs / "notes.txt").write_text("The office opens at nine. The office closes at five.")
    cfg = QAConfig(model="unused", documents=str(docs), chunk_tokens=48, chunk_overlap=8, batch_size=2)
    calls: list[int] = []

    def write(prompts):  # stands in for the model: answers from the passage it is shown
        calls.append(len(prompts))
        outs = []
        for p in prompts:
            passage = p.split("Passage:\n", 1)[1].split("\n\nWrite", 1)[0]
            first = passage.split(".")[0].strip()
            outs.append(f"Q: What does the passage say first?\nA: {first}.\nQ: Dangling?")
        return outs

    out = tmp_path / "run1"
    out.mkdir()
    metrics = synthesize_qa(cfg, tokenizer, write, out)
    rows = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    assert metrics["malformed"] == metrics["chunks"] and metrics["generated_chunks"] == metrics["chunks"]
    assert metrics["kept"] == len(rows) and metrics["dropped_duplicate"] == metrics["pairs_parsed"] - len(rows)
    texts = {"widget.md": DOC, "notes.txt": (docs / "notes.txt").read_text()}
    for row in rows:
        chunk = texts[row["document"]][row["start"] : row["end"]]
        assert row["answer"].rstrip(".") in chunk and row["source"] == "synth_qa"
    # A run killed after two chunks: the rerun asks the model for the others only.
    progress = (out / "progress.jsonl").read_text().splitlines()
    resumed = tmp_path / "run2"
    resumed.mkdir()
    (resumed / "progress.jsonl").write_text("\n".join(progress[:2]) + '\n{"chunk": "cut sho')
    calls.clear()
    again = synthesize_qa(cfg, tokenizer, write, resumed)
    assert sum(calls) == metrics["chunks"] - 2 and again["generated_chunks"] == metrics["chunks"] - 2
    assert (resumed / "qa.jsonl").read_text() == (out / "qa.jsonl").read_text()
    logged = [json.loads(line)["chunk"] for line in (resumed / "progress.jsonl").read_text().splitlines()]
    assert sorted(logged) == sorted(json.loads(line)["chunk"] for line in progress)  # the cut line is gone


def test_pdf_without_pypdf_is_one_sentence(tmp_path):
    import importlib.util

    if importlib.util.find_spec("pypdf") is not None:
        pytest.skip("pypdf is installed here, so PDFs are read")
    (tmp_path / "manual.pdf").write_bytes(b"%PDF-1.4 not really")
    with pytest.raises(PseudoCoTError, match="pip install pypdf"):
        read_documents(tmp_path)


def test_the_sample_documents_read_and_chunk(tokenizer):
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "examples" / "documents"
    docs = read_documents(folder)
    assert sorted(docs) == ["getting-started.md", "troubleshooting.md", "warranty.txt"]
    for name, text in docs.items():
        chunks = chunk_text(name, text, tokenizer, size=128, overlap=16)
        assert chunks and all(text[c.start : c.end] == c.text for c in chunks)
