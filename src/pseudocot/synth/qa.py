"""Document-grounded question-answer pairs (paper 1.2): ``pseudocot synth qa CONFIG``.

From a folder of documents (plain text and Markdown; PDF when ``pypdf`` is installed):

1. each document is split into overlapping chunks of ``chunk_tokens`` tokens (the writing model's
   tokenizer), each with its character offsets into the document, so ``text[start:end]`` is the chunk;
2. the large model is asked (:func:`pseudocot.prompts.qa_messages`) for question-answer pairs
   grounded in each chunk, a batch of chunks at a time;
3. its output is parsed robustly (:func:`parse_pairs`: ``Q:``/``A:`` lines, numbered or bold, or a JSON
   list); anything it cannot read is counted as malformed and skipped, never an error;
4. exact duplicates (same question after normalising case, spaces and punctuation) and near duplicates
   (word-set Jaccard similarity at least ``near_duplicate``) are dropped, the first kept;
5. with ``support: overlap``, a pair is kept only if at least ``min_support`` of its answer's content
   words occur in its chunk.

Output directory::

    qa.jsonl          kept pairs: id, source, subject (the document), question, answer, and provenance
                      (document, chunk, start, end); readable as a ``jsonl`` data source (task set)
    rejected.jsonl    dropped pairs with the reason (duplicate, near_duplicate, unsupported)
    progress.jsonl    the model's raw output per chunk (what a resumed run skips)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from pseudocot import prompts
from pseudocot.config import QAConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.progress import console
from pseudocot.synth import log_batches, read_log

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
PROGRESS = "progress.jsonl"
_STOPWORD_TEXT = """a an the and or of to in on at for by with from is are was were be been it its this that these
those as into than then so if not no do does did can could should would will may might you your we our they their"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Chunk:
    """A window of a document: its text and character offsets (``document_text[start:end] == text``)."""

    document: str
    index: int
    start: int
    end: int
    text: str

    @property
    def key(self) -> str:
        return f"{self.document}#{self.index}"


def document_files(folder: str | Path) -> list[Path]:
    """The document files of ``folder`` (recursively): .txt, .md and .pdf.

    Raises:
        PseudoCoTError: the folder is missing.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PseudoCoTError(
            f"document folder {root} does not exist; set synth.qa.documents to a folder of .txt/.md files."
        )
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (*TEXT_SUFFIXES, ".pdf"))


def read_documents(folder: str | Path) -> dict[str, str]:
    """Every document of ``folder`` (recursively) by its path relative to the folder.

    Raises:
        PseudoCoTError: the folder is missing or holds no documents, or holds PDFs without pypdf.
    """
    root = Path(folder)
    docs: dict[str, str] = {}
    for path in document_files(root):
        name = str(path.relative_to(root))
        if path.suffix.lower() == ".pdf":
            docs[name] = _pdf_text(path)
        else:
            try:
                docs[name] = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                raise PseudoCoTError(f"{path} is not UTF-8 text; save it as UTF-8 and run again.") from None
    docs = {name: text for name, text in docs.items() if text.strip()}
    if not docs:
        raise PseudoCoTError(f"document folder {root} has no non-empty .txt, .md or .pdf files; add some documents.")
    return docs


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise PseudoCoTError(f"{path} is a PDF; pip install pypdf to read PDFs, or convert it to text.") from None
    return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)


def chunk_text(document: str, text: str, tokenizer: PreTrainedTokenizerBase, size: int, overlap: int) -> list[Chunk]:
    """Overlapping windows of ``size`` tokens (consecutive windows share ``overlap``), as text spans."""
    if not 0 <= overlap < size:
        raise ValueError(f"overlap ({overlap}) must be at least 0 and smaller than the chunk size ({size})")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    offsets = [(a, b) for a, b in offsets if b > a]
    chunks = []
    step = size - overlap
    for index, first in enumerate(range(0, max(1, len(offsets) - overlap), step)):
        window = offsets[first : first + size]
        if not window:
            break
        start, end = window[0][0], window[-1][1]
        chunks.append(Chunk(document, index, start, end, text[start:end]))
    return chunks


_PAIR_LINE = re.compile(
    r"^\s*(?:[-*]\s*)?(?:\d+[.)]\s*)?\**\s*(Q|Question|A|Answer)\s*\d*\s*\**\s*[:.)-]\s*\**\s*(.*)$", re.IGNORECASE
)


def parse_pairs(text: str) -> tuple[list[tuple[str, str]], int]:
    """The question-answer pairs in a model's output, and how many malformed entries were skipped.

    Reads ``Q:``/``A:`` lines (also ``Question:``/``Answer:``, numbered, bulleted or in bold, an answer
    running over several lines) or a JSON list of ``{"question", "answer"}`` objects. A question
    without an answer, an answer without a question, or an empty side counts as malformed.
    """
    stripped = (text or "").strip()
    start = stripped.find("[")
    if start != -1:
        # A JSON list of objects, possibly in a code fence or between other text.
        try:
            data, _ = json.JSONDecoder().raw_decode(stripped[start:])
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, list) and any(isinstance(d, dict) for d in data):
            pairs = [
                (str(d["question"]).strip(), str(d["answer"]).strip())
                for d in data
                if isinstance(d, dict) and d.get("question") and d.get("answer")
            ]
            return pairs, len(data) - len(pairs)
    pairs: list[tuple[str, str]] = []
    malformed = 0
    question: str | None = None
    answer: list[str] | None = None

    def close() -> None:
        nonlocal question, answer, malformed
        if question is not None and answer is not None and question.strip() and " ".join(answer).strip():
            pairs.append((question.strip(), " ".join(answer).strip()))
        elif question is not None or answer is not None:
            malformed += 1
        question, answer = None, None

    for line in stripped.splitlines():
        line = " ".join(line.split())  # runs of spaces would make the pattern backtrack at length
        match = _PAIR_LINE.match(line)
        if match and match.group(1).lower().startswith("q"):
            close()
            question = match.group(2).strip().strip("*").strip()
        elif match:
            if answer is not None or question is None:
                close()  # an answer with no question of its own
                answer = [match.group(2).strip().strip("*").strip()]
                close()
                continue
            answer = [match.group(2).strip().strip("*").strip()]
        elif answer is not None and line.strip():
            answer.append(line.strip())  # an answer running over several lines
    close()
    return pairs, malformed


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _words(text: str) -> set[str]:
    return set(_normal(text).split())


def support(answer: str, chunk: str) -> float:
    """Share of the answer's content words (not stopwords) that occur in the chunk."""
    words = [w for w in _normal(answer).split() if w not in _STOPWORDS]
    if not words:
        return 0.0
    present = _words(chunk)
    return sum(w in present for w in words) / len(words)


def filter_pairs(
    candidates: Sequence[dict[str, Any]], near_duplicate: float, min_support: float | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drops exact and near duplicate questions (first kept) and, with ``min_support``, unsupported
    answers. Returns (kept, rejected with a ``reason``)."""
    kept: list[dict[str, Any]] = []
    kept_words: list[set[str]] = []
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    for pair in candidates:
        norm = _normal(pair["question"])
        words = set(norm.split())
        if norm in seen:
            rejected.append(pair | {"reason": "duplicate"})
        elif any(len(words & k) / max(1, len(words | k)) >= near_duplicate for k in kept_words):
            rejected.append(pair | {"reason": "near_duplicate"})
        elif min_support is not None and support(pair["answer"], pair["chunk_text"]) < min_support:
            rejected.append(pair | {"reason": "unsupported"})
        else:
            kept.append(pair)
            kept_words.append(words)
        seen.add(norm)
    return kept, rejected


def synthesize_qa(
    cfg: QAConfig,
    tokenizer: PreTrainedTokenizerBase,
    write: Callable[[list[str]], list[str]],
    out: Path,
) -> dict[str, Any]:
    """Chunks the documents, asks ``write`` (prompts -> outputs) for pairs, filters and writes them.

    ``write`` is the large model's batched generation; each prompt is a chat-rendered
    :func:`pseudocot.prompts.qa_messages` conversation.
    """
    docs = read_documents(cfg.documents)
    chunks = [
        c for name, text in docs.items() for c in chunk_text(name, text, tokenizer, cfg.chunk_tokens, cfg.chunk_overlap)
    ]
    done = {row["chunk"]: row["output"] for row in read_log(out / PROGRESS)}
    todo = [c for c in chunks if c.key not in done]
    started = time.perf_counter()
    batches = list(enumerate(todo[s : s + cfg.batch_size] for s in range(0, len(todo), cfg.batch_size)))
    log_batches(
        out / PROGRESS,
        "document Q&A",
        len(chunks),
        done,
        batches,
        lambda chunk: chunk.key,
        ("chunk", "output"),
        lambda _, batch: write(
            [prompts.render(tokenizer, prompts.qa_messages(c.text, cfg.pairs_per_chunk)) for c in batch]
        ),
    )
    seconds = time.perf_counter() - started
    candidates: list[dict[str, Any]] = []
    malformed = 0
    for chunk in chunks:
        pairs, bad = parse_pairs(done[chunk.key])
        malformed += bad
        for j, (question, answer) in enumerate(pairs):
            candidates.append(
                {
                    "id": f"{chunk.key}-q{j}",
                    "source": "synth_qa",
                    "subject": chunk.document,
                    "question": question,
                    "answer": answer,
                    "document": chunk.document,
                    "chunk": chunk.index,
                    "start": chunk.start,
                    "end": chunk.end,
                    "chunk_text": chunk.text,
                }
            )
    min_support = cfg.min_support if cfg.support == "overlap" else None
    kept, rejected = filter_pairs(candidates, cfg.near_duplicate, min_support)
    for name, rows in (("qa.jsonl", kept), ("rejected.jsonl", rejected)):
        with open(out / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({k: v for k, v in row.items() if k != "chunk_text"}) + "\n")
    reasons = {r: sum(x["reason"] == r for x in rejected) for r in ("duplicate", "near_duplicate", "unsupported")}
    if not kept:
        console.print("[yellow]no question-answer pair was kept; see rejected.jsonl and progress.jsonl.[/]")
    return {
        "documents": len(docs),
        "chunks": len(chunks),
        "pairs_parsed": len(candidates),
        "malformed": malformed,
        **{f"dropped_{r}": n for r, n in reasons.items()},
        "kept": len(kept),
        "generated_chunks": len(todo),
        "chunks_per_s": round(len(todo) / seconds, 2) if todo else None,
    }
