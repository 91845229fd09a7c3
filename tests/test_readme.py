"""The Python examples of the docs run as written (on the tiny model and a small file instead of SmolLM2), and the
README front page stays short and links pages that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OWN_DATA = ROOT / "docs" / "own-data.md"


def _python_blocks() -> list[str]:
    text = OWN_DATA.read_text()
    start = text.index("From Python")
    return re.findall(r"```python\n(.*?)```", text[start:text.index("\n## ", start)], flags=re.S)


def test_from_python_examples_run(tmp_path, model_dir, alpaca_file, monkeypatch, capsys):
    blocks = _python_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        code = code.replace('"builtin:smollm2"', repr(str(model_dir))).replace('"data.jsonl"', repr(str(alpaca_file)))
        exec(compile(code, "docs/own-data.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'read': 24" in out and "ifd=" in out
    assert (tmp_path / "run" / "report.html").exists() and (tmp_path / "sel" / "selected.jsonl").exists()


def test_the_front_page_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    links = re.findall(r"\]\(([^)#]+\.md)\)", text)
    assert links and all((ROOT / link).exists() for link in links)
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.name} links {link}"
