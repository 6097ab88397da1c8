"""Loaders: turn source datasets into records of the schema in :mod:`pseudocot.records`.

Supported sources (``SourceConfig.kind``):

* ``tiny``: one subject of the built tiny world (``path`` is the subject, e.g. ``tiny_math``).
* ``jsonl`` / ``csv``: records, one a line or row. ``path`` may hold ``{split}`` (``data/{split}.jsonl``);
  without it the file is the train split. Options come as a ``choices`` list (JSON text in CSV) or
  as columns ``A``..``D``; the answer as a letter or a 0-based index.
* ``mmlu_csv``: the original MMLU release (Hendrycks): CSV files without a header (question, A, B, C,
  D, answer letter) named ``<subject>_<split>.csv`` anywhere under ``path``.
* ``mmlu_parquet``: the Hugging Face ``cais/mmlu`` layout: ``<path>/<subject>/<split>-*.parquet``
  with columns question, subject, choices (list), answer (index).
* ``hf``: any dataset ``datasets.load_dataset`` can open by name (needs a reachable hub or cache);
  ``hf_splits`` says which of its splits (or slices, ``train[-500:]``) each of ours reads.

Sources whose columns have other names map them onto the record's fields (``fields``: MetaMathQA's
``{question: query, reasoning: response}``). Reasoning sets that write the final answer at the end of a
free-text worked solution (GSM8K's ``#### 72``, MetaMathQA's ``The answer is: 72``) name it with a
pattern (``final_answer``): the record's answer is read off the solution, which then ends with the
protocol's ``The answer is 72.`` in its place. Options that carry their own letters (AQuA-RAT's
``A)21``) lose them, as the prompts letter the options themselves.

MMLU has no train split per subject; ``train`` maps to its ``dev`` split (5 items each).
Bad rows are skipped and reported with their file and line. Values are read as text, so an option
whose text is "None" stays the string "None". Only LF, CRLF and CR end a line of a CSV or JSONL
file: real MMLU text holds U+0085 (NEL) inside fields, and JSON text may hold a raw U+2028;
``str.splitlines`` would break at both. A CSV field may hold up to ``MAX_FIELD_CHARS`` characters
(the csv module's own limit is 131,072); a row with a longer one is reported as a bad row and the
rows after it read as usual.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pseudocot.config import SourceConfig
from pseudocot.errors import PseudoCoTError
from pseudocot.prompts import ANSWER_PREFIX
from pseudocot.records import LETTERS, Record, read_jsonl

MMLU_SPLITS = {"train": "dev", "validation": "val", "test": "test"}
MAX_FIELD_CHARS = 1_000_000
CAIS_SPLITS = {"train": "dev", "validation": "validation", "test": "test"}


@dataclass
class Loaded:
    """Records of one source and split, and the rows that were skipped (``file:line: why``)."""

    records: list[Record] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)


def _answer_letter(answer: Any, n_choices: int) -> str:
    text = str(answer).strip()
    if n_choices and text.isdigit():
        index = int(text)
        if not 0 <= index < n_choices:
            raise ValueError(f"answer index {index} is out of range for {n_choices} options")
        return LETTERS[index]
    return text.upper() if n_choices and len(text) == 1 else text


def _choices(row: dict[str, Any]) -> list[str]:
    choices = row.get("choices")
    if isinstance(choices, str):
        try:
            choices = json.loads(choices) if choices.strip() else []
        except json.JSONDecodeError:
            raise ValueError("'choices' is not a JSON list") from None
    if choices is None:
        columns = [row.get(x) for x in LETTERS]
        present = [c not in (None, "") for c in columns]
        last = max((i for i, p in enumerate(present) if p), default=-1)
        if not all(present[: last + 1]):
            raise ValueError("option columns have a gap (an empty option before a filled one)")
        choices = columns[: last + 1]
    if not isinstance(choices, list | tuple):
        raise ValueError("'choices' must be a list of options")
    choices = [str(c) for c in choices]
    lettered = [_OWN_LETTER.match(c) for c in choices]
    if choices and all(m and m.group(1) == LETTERS[i] for i, m in enumerate(lettered)):
        choices = [c[m.end() :] for c, m in zip(choices, lettered, strict=True)]
    return choices


_OWN_LETTER = re.compile(r"\s*\(?([A-J])\)\s*")  # "A)21", "(B) 21.5": an option that letters itself


def with_fields(row: dict[str, Any], src: SourceConfig) -> dict[str, Any]:
    """A source row with its columns renamed to the record's fields (``src.fields``) and, where the
    source writes its final answer into a worked solution (``src.final_answer``), that answer read off it.

    Raises:
        ValueError: the worked solution does not state its final answer as the pattern expects.
    """
    if src.fields:
        named = set(src.fields.values())
        row = {k: v for k, v in row.items() if k not in named} | {f: row.get(c) for f, c in src.fields.items()}
    if src.final_answer:
        worked = str(row.get("reasoning") or "")
        matches = list(re.finditer(src.final_answer, worked))
        if not matches or not matches[-1].group(1).strip():
            raise ValueError(f"the reasoning states no final answer matching {src.final_answer!r}")
        last, answer = matches[-1], matches[-1].group(1).strip()
        steps = (worked[: last.start()] + worked[last.end() :]).strip()
        row = row | {"answer": answer, "reasoning": f"{steps}\n{ANSWER_PREFIX} {answer}.".strip()}
    return row


def normalize_row(row: dict[str, Any], source: str, default_id: str, subject: str = "") -> Record:
    """A record from a loosely shaped row (JSONL object, CSV row, dataset row).

    Raises:
        ValueError: if the row lacks a question or answer, or they do not fit its options.
    """
    choices = _choices(row)
    if row.get("answer") in (None, ""):
        raise ValueError("missing 'answer'")
    difficulty = row.get("difficulty")
    data = {
        "id": str(row.get("id") or default_id),
        "source": source,
        "subject": str(row.get("subject") or subject),
        "question": str(row.get("question") or "").strip(),
        "choices": choices,
        "answer": _answer_letter(row["answer"], len(choices)),
        "reasoning": row.get("reasoning") or None,
        "difficulty": int(difficulty) if difficulty not in (None, "") else None,
    }
    return Record.model_validate(data)


def _collect(rows: Iterable[tuple[str, dict[str, Any] | Exception]], src: SourceConfig, split: str) -> Loaded:
    out = Loaded()
    for n, (where, row) in enumerate(rows):
        try:
            if isinstance(row, Exception):
                raise row
            out.records.append(
                normalize_row(with_fields(row, src), src.name, f"{src.name}-{split}-{n}", src.subject or "")
            )
        except (ValueError, ValidationError, KeyError) as err:
            reason = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            out.bad_rows.append(f"{where}: {reason}")
    return out


def _text_lines(path: Path) -> list[str]:
    """A file's lines, each with the end it was written with; a file that is not UTF-8 text is a clear error.

    ``newline=""`` splits only at LF, CRLF and CR (not at U+0085 or U+2028, as ``str.splitlines`` does)
    and keeps them, as csv needs to tell a line break inside a quoted field.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(f)
    except UnicodeDecodeError:
        raise PseudoCoTError(f"{path} is not UTF-8 text; save it as UTF-8 and run again.") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    for n, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            yield f"{path}:{n}", row if isinstance(row, dict) else ValueError("not a JSON object")
        except json.JSONDecodeError as err:
            yield f"{path}:{n}", ValueError(f"not valid JSON ({err.msg})")


def _csv_rows(path: Path, header: list[str] | None = None) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    # The parser's limit is global and, once hit, leaves it mid-row (what follows would be misread), so
    # it is lifted and long fields are counted here instead. 2**31 - 1 fits a C long on every platform.
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(_text_lines(path))
    names = header or next(reader, [])
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        longest = max(map(len, row))
        if longest > MAX_FIELD_CHARS:
            yield where, ValueError(f"a field of {longest:,} characters is over the {MAX_FIELD_CHARS:,} limit")
        elif len(row) != len(names):
            yield where, ValueError(f"expected {len(names)} columns, found {len(row)}")
        else:
            yield where, dict(zip(names, row, strict=True))


def _split_path(template: str, split: str) -> Path | None:
    if "{split}" in template:
        return Path(template.format(split=split))
    return Path(template) if split == "train" else None


def _mmlu_csv(directory: Path, subject: str, split: str) -> Path:
    name = f"{subject}_{MMLU_SPLITS[split]}.csv"
    found = sorted(directory.rglob(name))
    if not found:
        raise PseudoCoTError(f"no {name} under {directory}; point path at the MMLU data directory.")
    return found[0]


def _cais_parquet(directory: Path, subject: str, split: str) -> list[Path]:
    files = sorted((directory / subject).glob(f"{CAIS_SPLITS[split]}-*.parquet"))
    if not files:
        raise PseudoCoTError(
            f"no {CAIS_SPLITS[split]}-*.parquet in {directory / subject}; point path at a cais/mmlu snapshot."
        )
    return files


def _parquet_rows(files: list[Path]) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    import pyarrow.parquet as pq

    for file in files:
        for n, row in enumerate(pq.read_table(file).to_pylist()):
            yield f"{file}:row {n}", row


def hf_split_of(src: SourceConfig, split: str) -> str:
    """The dataset split (or slice) an hf source reads for one of ours; '' when it has none."""
    if src.hf_splits and split in src.hf_splits:
        return src.hf_splits[split]
    return CAIS_SPLITS[split] if src.path == "cais/mmlu" else split


def _hf_rows(src: SourceConfig, split: str) -> Iterator[tuple[str, dict[str, Any] | Exception]]:
    import datasets

    name = src.hf_config or src.subject
    hf_split = hf_split_of(src, split)
    try:
        ds = datasets.load_dataset(src.path, name, split=hf_split)
    except Exception as err:
        raise PseudoCoTError(
            f"could not load split {hf_split!r} of dataset {src.path!r} ({type(err).__name__}); "
            "check the name and split, or use a local file."
        ) from None
    for n, row in enumerate(ds):
        yield f"{src.path}[{hf_split}]:row {n}", row


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a clear error naming it."""
    if not path.is_file():
        raise PseudoCoTError(f"{what} {path} does not exist; check the path in the config.")
    return path


def source_files(src: SourceConfig, split: str, world_dir: Path | None = None) -> list[Path]:
    """The local files a source reads for one split (none for hub datasets), each checked to exist.

    Raises:
        PseudoCoTError: a file or directory the source names does not exist.
    """
    if src.kind == "tiny":
        if world_dir is None:
            raise PseudoCoTError("a 'tiny' source needs the world; add a world section to the config.")
        return [require_file(Path(world_dir) / f"{split}.jsonl", "tiny-world split")]
    if src.kind in ("jsonl", "csv"):
        path = _split_path(src.path, split)
        return [require_file(path, f"{src.kind.upper()} file")] if path else []
    if src.kind == "hf":
        return []
    if not src.subject:
        raise PseudoCoTError(f"source {src.name!r} needs a subject, e.g. college_mathematics.")
    directory = Path(src.path)
    if not directory.is_dir():
        raise PseudoCoTError(f"MMLU directory {directory} does not exist; check the path in the config.")
    if src.kind == "mmlu_csv":
        return [_mmlu_csv(directory, src.subject, split)]
    return _cais_parquet(directory, src.subject, split)


def load_source(src: SourceConfig, split: str, world_dir: Path | None = None) -> Loaded:
    """Records of one source and split (empty when the source has no such split).

    Raises:
        PseudoCoTError: a file or directory the source names does not exist, or is not UTF-8 text.
    """
    files = source_files(src, split, world_dir)
    if src.kind == "tiny":
        records = [r for r in read_jsonl(files[0]) if r.subject == src.path]
        if not records:
            raise PseudoCoTError(f"the tiny world has no subject {src.path!r}; use tiny_math or tiny_cs.")
        return Loaded([r.model_copy(update={"source": src.name}) for r in records])
    if src.kind == "hf" and not hf_split_of(src, split):
        return Loaded()
    if src.kind == "hf":
        rows = _hf_rows(src, split)
    elif src.kind == "mmlu_parquet":
        rows = _parquet_rows(files)
    elif not files:
        return Loaded()
    elif src.kind == "jsonl":
        rows = _jsonl_rows(files[0])
    else:
        header = ["question", "A", "B", "C", "D", "answer"] if src.kind == "mmlu_csv" else None
        rows = _csv_rows(files[0], header=header)
    return _collect(rows, src, split)
