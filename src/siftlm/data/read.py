"""Reading datasets from disk (jsonl, json, parquet, csv, HF save_to_disk, hub datasets) into validated examples, with
every bad record a reject naming its file, line and field."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siftlm.data.formats import (
    FORMATS,
    DataError,
    Example,
    RecordError,
    Reject,
    convert_record,
    detect_format,
)

__all__ = ["DataError", "Dataset", "open_dataset", "read_dataset", "read_records"]

JSONL_EXTS = (".jsonl", ".ndjson")
JSON_EXTS = (".json",)
PARQUET_EXTS = (".parquet", ".pq")
CSV_EXTS = (".csv", ".tsv")
SUPPORTED = "jsonl, json, parquet, csv, or a datasets save_to_disk folder"
JSON_LIST_KEYS = ("data", "train", "examples")

# Reject reasons are grouped by these leading phrases in summarize().
REASON_KINDS = (
    "malformed JSON",
    "record is not a JSON object",
    "missing required field",
    "wrong type",
    "empty response",
    "empty prompt",
    "empty text",
    "empty conversation",
    "unknown role",
    "no assistant turn",
    "conversation must end with an assistant turn",
    "prompt must end with a user turn",
    "text too long",
    "duplicate id",
    "duplicate of line",
    "response does not fit in max_length",
    "no response tokens",
    "chat template",
    "not a preference pair",
    "the prompt tokenises differently",
    "blank line",
    "malformed CSV",
    "chosen and rejected",
    "reply must be an assistant turn",
    "expected a single assistant message",
    "completion must hold assistant turns",
    "unsupported content part type",
)


BLANK = "blank line"   # read_records' marker for a blank jsonl line or CSV row: counted as skipped, not rejected


@dataclass
class Dataset:
    path: str
    format: str
    examples: list[Example]
    rejects: list[Reject]
    n_read: int          # == len(examples) + len(rejects) + n_skipped + n_not_selected
    n_skipped: int = 0   # blank lines
    n_not_selected: int = 0   # valid examples a selection left out (siftlm finetune --selection)


# ---------------------------------------------------------------------------------------------
# reading


def _plain(obj: Any) -> Any:
    """Numpy arrays/scalars and tuples -> plain python lists/scalars, recursively."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy.ndarray and numpy scalars
    if callable(tolist) and type(obj).__module__ == "numpy":
        return _plain(tolist())
    return obj


def _check_dict(n: int, record: Any) -> tuple[int, dict | None, str | None]:
    if isinstance(record, dict):
        return n, _plain(record), None
    return n, None, "record is not a JSON object"


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, None, f"malformed JSON: invalid UTF-8 ({e.reason} at byte {e.start})"
                continue
            if not text.strip():
                yield n, None, BLANK
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield n, None, f"malformed JSON: {e.msg} (column {e.colno})"
                continue
            yield _check_dict(n, record)


def _read_json(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        hint = " (looks like JSON Lines: rename the file to .jsonl)" if e.msg == "Extra data" else ""
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}{hint}") from e
    if isinstance(data, dict):
        key = next((k for k in JSON_LIST_KEYS if isinstance(data.get(k), list)), None)
        if key is None:
            raise DataError(
                f"{path}: top-level JSON object has no list under {', '.join(map(repr, JSON_LIST_KEYS))} "
                f"(keys: {', '.join(map(str, data))})"
            )
        data = data[key]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for n, record in enumerate(data, start=1):
        yield _check_dict(n, record)


def _read_parquet(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:
        raise DataError(f"{path}: cannot read parquet file: {e}") from e
    for n, record in enumerate(rows, start=1):
        yield _check_dict(n, record)


def _read_csv(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Rows as {header: cell} with the file line each record starts on (quoted cells may span lines)."""
    import csv

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=sep)
            header = next(reader, None)
            if header is None:
                return
            prev = reader.line_num
            for row in reader:
                start, prev = prev + 1, reader.line_num
                if not any(cell.strip() for cell in row):
                    yield start, None, BLANK
                elif len(row) != len(header):
                    yield start, None, f"malformed CSV: {len(row)} fields, the header has {len(header)}"
                else:
                    yield start, dict(zip(header, row, strict=True)), None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV file: {e}") from e


def pick_split(loaded, split: str | None, where: str):
    """One split of a DatasetDict: the one named, or the only one; several and none named is an error."""
    import datasets  # a dependency, imported when a datasets object is read

    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if split is None and len(loaded) == 1:
        return next(iter(loaded.values()))
    if split is None or split not in loaded:
        said = f"split {split!r} not found" if split else "holds several splits"
        raise DataError(f"{where}: {said}; pass --split (available splits: {', '.join(loaded)})")
    return loaded[split]


def _read_hf(path: Path, split: str | None) -> Iterator[tuple[int, dict | None, str | None]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{path}: cannot load datasets folder: {e}") from e
    for n, record in enumerate(pick_split(loaded, split, str(path)), start=1):
        yield _check_dict(n, record)


def load_hub_dataset(name: str, *, subset: str | None = None, split: str | None = None):
    """A dataset from the Hugging Face hub by name (when online): the split asked for, or the only one."""
    import datasets
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise DataError(f"offline: {name} is a hub dataset; save it with datasets' save_to_disk and pass the folder")
    try:
        loaded = datasets.load_dataset(name, subset, split=split)
    except Exception as e:
        raise DataError(f"{name}: cannot load from the hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "offline? save it with datasets' save_to_disk and pass the folder") from e
    return pick_split(loaded, split, name)


def parse_columns(columns) -> dict[str, str] | None:
    """'prompt=question,response=answer' (or a mapping) -> {"prompt": "question", "response": "answer"}."""
    if not columns or isinstance(columns, dict):
        return columns or None
    pairs = [p.split("=", 1) for p in str(columns).split(",") if p.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise DataError(f"--columns {columns!r}: write it as target=source pairs, e.g. prompt=question,response=answer")
    return {t.strip(): s.strip() for t, s in pairs}


def open_dataset(data, cfg) -> Dataset:
    """The dataset a verb reads: ``data`` (a path or a datasets object) or ``cfg.dataset_name`` from the hub, with
    ``cfg``'s format, split and column map (``siftlm.config.DataConfig``)."""
    columns = parse_columns(cfg.columns)
    if cfg.dataset_name:
        loaded = load_hub_dataset(cfg.dataset_name, subset=cfg.subset, split=cfg.split)
        return read_dataset(loaded, format=cfg.format, columns=columns, source=cfg.dataset_name)
    if data is None or data == "":
        raise DataError("no data: give a dataset file or folder, or --dataset-name")
    return read_dataset(data, format=cfg.format, split=cfg.split, columns=columns)


def rename_columns(record: dict, columns: dict[str, str] | None) -> dict:
    """``columns``: {siftlm's key: the record's key}, e.g. {"prompt": "question", "response": "answer"}."""
    if not columns:
        return record
    out = {k: v for k, v in record.items() if k not in columns.values()}
    for target, source in columns.items():
        if source in record:
            out[target] = record[source]
    return out


def read_records(path, *, split: str | None = None) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line or record number, record or None, parse error or None) for every record in path.

    jsonl and csv: 1-based file line numbers (blank lines yield the error ``BLANK``). Other types: 1-based record
    numbers.
    """
    if not isinstance(path, (str, Path)):       # a datasets.Dataset (or DatasetDict) already in memory
        return (_check_dict(n, r) for n, r in enumerate(pick_split(path, split, "in-memory dataset"), start=1))
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / n).exists() for n in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return _read_hf(path, split)
        raise DataError(f"{path}: folder is not a datasets save_to_disk folder; supported: {SUPPORTED}")
    ext = path.suffix.lower()
    if ext in JSONL_EXTS:
        return _read_jsonl(path)
    if ext in JSON_EXTS:
        return _read_json(path)
    if ext in PARQUET_EXTS:
        return _read_parquet(path)
    if ext in CSV_EXTS:
        return _read_csv(path)
    raise DataError(f"{path}: unsupported file type '{ext or '(none)'}'; supported: {SUPPORTED}")


def content_id(messages: list[dict], chosen: str | None, rejected: str | None) -> str:
    """The id of an example without its own: a hash of its messages and responses (also the dedup key)."""
    payload = {"messages": messages, "chosen": chosen, "rejected": rejected}
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return "h" + hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:15]


def _record_id(record: dict) -> str | None:
    """The record's own id as a string, None if absent; RecordError if unusable."""
    value = record.get("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # absent or blank (e.g. an empty CSV cell): use the content hash
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError("id", f"wrong type: expected string or integer, got {type(value).__name__}")
    return str(value)


def _too_long(obj: Any, limit: int, path: str = "") -> tuple[str, int] | None:
    """The first string anywhere in obj longer than limit, as (field path, length)."""
    if isinstance(obj, str):
        return (path, len(obj)) if len(obj) > limit else None
    if isinstance(obj, dict):
        items: Iterable[tuple[str, Any]] = ((f"{path}.{k}" if path else str(k), v) for k, v in obj.items())
    elif isinstance(obj, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for sub_path, value in items:
        found = _too_long(value, limit, sub_path)
        if found:
            return found
    return None


def read_dataset(path, *, format: str | None = None, max_chars: int = 100_000, split: str | None = None,
                 columns: dict[str, str] | None = None, source: str | None = None) -> Dataset:
    """Read, convert and validate every record; bad records become Rejects, never exceptions.

    ``path``: a file, a save_to_disk folder, or a ``datasets.Dataset`` / ``DatasetDict`` in memory; ``split`` picks
    one split of a DatasetDict (needed when it has several); ``columns`` renames keys first ({"prompt": "question"}).
    Raises DataError only for problems with the input as a whole (missing/unsupported/broken file,
    unknown or undetectable format).
    """
    source = source or (str(path) if isinstance(path, (str, Path)) else f"<{type(path).__name__}>")
    rows = list(read_records(path, split=split))
    if format is not None and format not in FORMATS:
        raise DataError(f"{source}: unknown format '{format}'; supported formats: {', '.join(FORMATS)}")
    records = [rename_columns(r, columns) for _, r, _ in rows if r is not None]
    if format is not None:
        fmt = format
    elif records:
        try:
            fmt = detect_format(records)
        except DataError as e:
            raise DataError(f"{source}: {e}") from e
    else:
        fmt = "unknown"

    examples: list[Example] = []
    rejects: list[Reject] = []
    first_seen: dict[str, int] = {}
    skipped = 0
    for n, record, error in rows:
        if error == BLANK:
            skipped += 1
            continue
        if record is None:
            rejects.append(Reject(source, n, "", error or "record is not a JSON object"))
            continue
        own_id = None
        try:
            own_id = _record_id(record)
            messages, chosen, rejected = convert_record(rename_columns(record, columns), fmt)
        except RecordError as e:
            rejects.append(Reject(source, n, e.field, e.reason, own_id))
            continue
        ex_id = own_id or content_id(messages, chosen, rejected)
        long = _too_long(record, max_chars)
        if long:
            reason = f"text too long: {long[1]} characters > max_chars {max_chars}"
            rejects.append(Reject(source, n, long[0], reason, ex_id))
            continue
        if ex_id in first_seen:
            reason = (f"duplicate id {ex_id} (first seen at line {first_seen[ex_id]})" if own_id else
                      f"duplicate of line {first_seen[ex_id]} (same content)")
            rejects.append(Reject(source, n, "id", reason, ex_id))
            continue
        first_seen[ex_id] = n
        examples.append(Example(ex_id, messages, chosen, rejected, source, n, record))
    return Dataset(source, fmt, examples, rejects, len(rows), skipped)


