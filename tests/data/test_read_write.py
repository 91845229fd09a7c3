"""Reading files of every supported type, reject rows, and atomic writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siftlm.data import DataError, read_dataset, summarize, write_jsonl, write_rejects, write_selected
from siftlm.data.read import BLANK, read_records
from siftlm.data.write import examples_table
from siftlm.files import atomic_write

ROWS = [
    {"id": "a1", "instruction": "Add.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    {"instruction": "Capital of France?", "input": "", "output": "Paris, \"of course\", é."},
]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_reject_reason(tmp_path: Path):
    good = {"instruction": "q", "output": "a"}
    lines = [
        json.dumps({"id": 1, **good}),  # 1 kept
        '{"instruction": "q", "output": ',  # 2 malformed
        "[1, 2]",  # 3 not an object
        "",  # 4 blank: skipped, counted as read and skipped
        json.dumps({"instruction": "q"}),  # 5 missing output
        json.dumps({"instruction": "q", "output": 42}),  # 6 wrong type
        json.dumps({"instruction": "q", "output": "   "}),  # 7 empty response
        json.dumps({"instruction": "q", "output": "a", "history": [["x", ""]]}),  # 8 empty history answer
        json.dumps({"id": 1, "instruction": "other", "output": "b"}),  # 9 duplicate id
        json.dumps({"instruction": "q", "output": "x" * 50}),  # 10 too long
        json.dumps(good),  # 11 kept (hash id)
        json.dumps(good),  # 12 exact duplicate without id
        json.dumps({"id": [1], **good}),  # 13 bad id type
    ]
    ds = read_dataset(write_lines(tmp_path / "bad.jsonl", lines), max_chars=20)
    assert ds.format == "alpaca"
    assert [e.line for e in ds.examples] == [1, 11]
    assert ds.examples[0].id == "1"
    assert ds.examples[1].id.startswith("h") and len(ds.examples[1].id) == 16
    got = [(r.line, r.field, r.reason) for r in ds.rejects]
    expected = [
        (2, "", "malformed JSON:"),
        (3, "", "record is not a JSON object"),
        (5, "output", "missing required field"),
        (6, "output", "expected string, got number"),
        (7, "output", "empty response"),
        (8, "history[0][1]", "empty response"),
        (9, "id", "duplicate id 1 (first seen at line 1)"),
        (10, "output", "text too long: 50 characters"),
        (12, "id", "duplicate of line 11 (same content)"),
        (13, "id", "expected string or integer"),
    ]
    assert len(got) == len(expected)
    for (line, field, reason), (want_line, want_field, want_reason) in zip(got, expected, strict=True):
        assert (line, field) == (want_line, want_field)
        assert want_reason in reason
    assert all(r.source == str(tmp_path / "bad.jsonl") for r in ds.rejects)
    assert ds.n_read == 13 == len(ds.examples) + len(ds.rejects) + ds.n_skipped and ds.n_skipped == 1
    summary = summarize(ds)
    assert summary["n_kept"] == 2 and summary["n_rejected"] == 10 and summary["n_read"] == 13
    assert summary["n_skipped"] == 1
    assert summary["rejects_by_reason"]["empty response"] == 2
    assert summary["rejects_by_reason"]["duplicate id"] == 1 and summary["rejects_by_reason"]["duplicate of line"] == 1
    assert summary["kinds"] == {"sft": 2}


def test_conversation_reject_reasons(tmp_path: Path):
    def conv(*turns: tuple[str, str]) -> str:
        return json.dumps({"conversations": [{"from": f, "value": v} for f, v in turns]})

    lines = [
        conv(("human", "q"), ("gpt", "a")),
        conv(("human", "q"), ("wizard", "a")),
        conv(("human", "q")),
        conv(("human", "q"), ("gpt", "a"), ("human", "again")),
        json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}),
    ]
    ds = read_dataset(write_lines(tmp_path / "conv.jsonl", lines))
    assert ds.format == "sharegpt" and len(ds.examples) == 1
    got = [(r.line, r.field, r.reason) for r in ds.rejects]
    assert got[0][:2] == (2, "conversations[1].from")
    assert "unknown role 'wizard'" in got[0][2] and "gpt" in got[0][2]
    assert got[1] == (3, "conversations", "no assistant turn")
    assert got[2][:2] == (4, "conversations") and "must end with an assistant turn" in got[2][2]
    assert got[3][:2] == (5, "conversations") and "missing required field" in got[3][2]


def test_format_override_and_unknown_format(tmp_path: Path):
    path = write_lines(tmp_path / "x.jsonl", [json.dumps(r) for r in ROWS])
    ds = read_dataset(path, format="messages")
    assert ds.format == "messages" and not ds.examples and len(ds.rejects) == 3
    with pytest.raises(DataError, match="prompt_completion"):
        read_dataset(path, format="nope")


def _write_all_types(tmp_path: Path) -> list[Path]:
    import datasets
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    p = tmp_path / "d.jsonl"
    write_jsonl(ROWS, p)
    paths.append(p)
    p = tmp_path / "list.json"
    p.write_text(json.dumps(ROWS), encoding="utf-8")
    paths.append(p)
    p = tmp_path / "obj.json"
    p.write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    paths.append(p)
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), p)
    paths.append(p)
    p = tmp_path / "d.csv"
    pd.DataFrame(ROWS).to_csv(p, index=False)
    paths.append(p)
    p = tmp_path / "hf"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(p))
    paths.append(p)
    return paths


def test_every_file_type_gives_the_same_examples(tmp_path: Path):
    results = [read_dataset(p) for p in _write_all_types(tmp_path)]
    first = results[0]
    assert first.format == "alpaca" and len(first.examples) == 3 and not first.rejects
    assert first.examples[0].id == "a1"
    for ds in results:
        assert ds.format == "alpaca", ds.path
        assert not ds.rejects, ds.rejects
        assert [e.id for e in ds.examples] == [e.id for e in first.examples], ds.path
        assert [e.messages for e in ds.examples] == [e.messages for e in first.examples]
        csv = ds.path.endswith((".csv", ".tsv"))                   # file lines: the header is line 1
        assert [e.line for e in ds.examples] == ([2, 3, 4] if csv else [1, 2, 3]), ds.path


def test_hf_dataset_dict_split(tmp_path: Path):
    import datasets

    path = tmp_path / "dd"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(path))
    assert len(read_dataset(path, split="test").examples) == 3
    assert len(read_dataset(path).examples) == 3                           # the only split
    with pytest.raises(DataError, match="split 'train' not found; pass --split .available splits: test"):
        read_dataset(path, split="train")
    two = tmp_path / "two"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
                         ).save_to_disk(str(two))
    with pytest.raises(DataError, match="holds several splits; pass --split"):     # never a silent choice
        read_dataset(two)
    assert len(read_dataset(two, split="test").examples) == 1


def test_in_memory_datasets_and_column_maps(tmp_path: Path):
    import datasets

    rows = [{"question": f"q{i}", "reply": f"a{i}"} for i in range(3)]
    ds = read_dataset(datasets.Dataset.from_list(rows), columns={"prompt": "question", "response": "reply"})
    assert ds.format == "prompt_completion" and len(ds.examples) == 3 and ds.path == "<Dataset>"
    assert ds.examples[1].messages == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    assert ds.examples[1].raw == rows[1]                                     # selected.jsonl keeps the user's record


def test_nested_parquet_is_plain_python(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    path = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    ds = read_dataset(path)
    assert ds.format == "messages"
    assert ds.examples[0].raw == rows[0] and type(ds.examples[0].raw["messages"]) is list


def test_nothing_valid_still_returns_a_dataset(tmp_path: Path):
    path = write_lines(tmp_path / "junk.jsonl", ["not json", "[]", json.dumps({"instruction": "q"})])
    ds = read_dataset(path)
    assert ds.examples == [] and ds.n_read == 3 == len(ds.rejects)
    empty = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    ds = read_dataset(empty)
    assert ds.examples == [] and ds.rejects == [] and ds.n_read == 2 == ds.n_skipped


def test_whole_file_errors_name_the_file(tmp_path: Path):
    bad_ext = tmp_path / "data.txt"
    bad_ext.write_text("hello")
    with pytest.raises(DataError, match=r"data\.txt.*jsonl, json, parquet, csv"):
        read_dataset(bad_ext)
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"instruction": "q",\n  "output": }\n]')
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON at line 3 column"):
        read_dataset(broken)
    with pytest.raises(DataError, match="missing.jsonl"):
        read_dataset(tmp_path / "missing.jsonl")
    unknown = write_lines(tmp_path / "unknown.jsonl", [json.dumps({"txt": "x"})])
    with pytest.raises(DataError, match=r"unknown\.jsonl.*keys seen: txt"):
        read_dataset(unknown)


def test_read_records_yields_line_numbers(tmp_path: Path):
    path = write_lines(tmp_path / "r.jsonl", ['{"a": 1}', "", "{bad", "3"])
    got = list(read_records(path))
    assert got[0] == (1, {"a": 1}, None)
    assert got[1] == (2, None, BLANK)
    assert got[2][0] == 3 and got[2][1] is None and got[2][2].startswith("malformed JSON")
    assert got[3] == (4, None, "record is not a JSON object")


def test_csv_rejects_name_the_file_line_even_after_multi_line_cells(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('instruction,output\n"two\nlines",a\n\nq,\nx,y,z\nq2,b\n')
    ds = read_dataset(path)
    assert [e.line for e in ds.examples] == [2, 7]
    assert [(r.line, r.reason.split(":")[0]) for r in ds.rejects] == [(5, "empty response"), (6, "malformed CSV")]
    assert ds.n_skipped == 1 and ds.n_read == 5


def test_format_is_detected_past_broken_records_at_the_top(tmp_path: Path):
    lines = [json.dumps({"junk": i}) for i in range(150)] + [json.dumps(r) for r in ROWS]
    ds = read_dataset(write_lines(tmp_path / "late.jsonl", lines))
    assert ds.format == "alpaca" and len(ds.examples) == 3 and len(ds.rejects) == 150


def test_prompt_response_records_are_prompt_completion(tmp_path: Path):
    rows = [{"prompt": "p1", "response": "r1"}, {"prompt": "p2", "answer": "r2"}, {"prompt": "p3", "output": "r3"}]
    ds = read_dataset(write_lines(tmp_path / "pr.jsonl", [json.dumps(r) for r in rows]))
    assert ds.format == "prompt_completion" and not ds.rejects
    assert [e.messages[-1]["content"] for e in ds.examples] == ["r1", "r2", "r3"]
    ds = read_dataset(write_lines(tmp_path / "bad.jsonl", [json.dumps({"prompt": "p"})]), format="prompt_completion")
    assert ds.rejects[0].field == "completion" and "or response, output, answer" in ds.rejects[0].reason


def test_atomic_write_leaves_nothing_on_error(tmp_path: Path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path
        tmp.write_text("done")
    assert target.read_text() == "done" and list(tmp_path.iterdir()) == [target]


def test_a_full_disk_names_the_file_atomic_write_was_writing(tmp_path: Path, monkeypatch):
    """Writers fail on a full disk in their own words (numpy and pyarrow: an OSError with no file name, torch: a
    RuntimeError); atomic_write says which file it was, whoever wrote it."""
    import errno
    from collections import namedtuple

    import siftlm.files as files
    from siftlm.files import disk_error

    target = tmp_path / "out" / "scores.parquet"
    with pytest.raises(OSError) as e, atomic_write(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.filename == str(target) and f"writing {target}" in disk_error(e.value)
    assert list(target.parent.iterdir()) == []
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(1, 1, 0))
    with pytest.raises(OSError) as e, atomic_write(target) as tmp:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert e.value.filename == str(target) and e.value.errno == errno.ENOSPC


def test_write_selected_writes_raw_records_unchanged(tmp_path: Path):
    src = tmp_path / "in.jsonl"
    write_jsonl(ROWS, src)
    ds = read_dataset(src)
    out = tmp_path / "sub" / "selected.jsonl"
    write_selected(ds.examples[1:], out)
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == ROWS[1:]


def test_write_rejects_and_examples_table(tmp_path: Path):
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}), "x"])
    ds = read_dataset(path)
    write_rejects(ds.rejects, tmp_path / "rejects.jsonl")
    row = json.loads((tmp_path / "rejects.jsonl").read_text())
    assert list(row) == ["source", "line", "field", "reason", "id"] and row["line"] == 2
    table = examples_table(ds.examples)
    assert table.column_names == ["id", "kind", "source", "line", "messages", "chosen", "rejected"]
    first = table.to_pylist()[0]
    assert first["kind"] == "preference" and first["chosen"] == "c" and first["rejected"] == "r"
    assert json.loads(first["messages"]) == [{"role": "user", "content": "p"}]
    assert examples_table([]).num_rows == 0


def test_atomic_write_result_has_umask_permissions(tmp_path):
    import os
    import stat

    from siftlm.files import atomic_write

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
