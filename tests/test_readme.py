"""The README's Python examples run as written (on the tiny model and a small file instead of SmolLM2)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("From Python")
    return re.findall(r"```python\n(.*?)```", text[start:text.index("\n## ", start)], flags=re.S)


def test_from_python_examples_run(tmp_path, model_dir, alpaca_file, monkeypatch, capsys):
    blocks = _python_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        code = code.replace('"builtin:smollm2"', repr(str(model_dir))).replace('"data.jsonl"', repr(str(alpaca_file)))
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'read': 24" in out and "ifd=" in out
    assert (tmp_path / "run" / "report.html").exists() and (tmp_path / "sel" / "selected.jsonl").exists()
