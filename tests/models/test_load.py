"""Loading and saving model folders: deterministic configs (same training, same fingerprint), usual permissions."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from siftlm.models.load import folder_fingerprint, load_model, save_folder

TRAIN = textwrap.dedent("""
    import json, sys
    from siftlm.config import SignalConfig, TrainConfig
    from siftlm.data import read_dataset
    from siftlm.models.load import load_model
    from siftlm.signals.prepare import prepare
    from siftlm.train.reference import train_reference
    data, model_dir, out, store = sys.argv[1:5]
    lm = load_model(model_dir, device="cpu")
    prep = prepare(read_dataset(data), lm.tokenizer, SignalConfig(store=store, progress=False))
    frames, fps, _ = train_reference(lm, prep, out, TrainConfig(epochs=1, token_budget=512, lora_r=4))
    print(json.dumps(fps))
""")


def test_identical_trainings_in_different_processes_get_identical_fingerprints(tmp_path, model_dir, alpaca_file):
    """peft keeps target modules in a set: without sorting, adapter_config.json (and so the fingerprint and every
    store key after it) changes with the process's hash seed."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    fps = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, str(script), str(alpaca_file), str(model_dir), str(tmp_path / f"ref{seed}"),
                              str(tmp_path / f"st{seed}")], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        fps.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert fps[0] == fps[1]
    configs = [(tmp_path / f"ref{s}" / "epoch-1" / "adapter_config.json").read_text() for s in ("1", "2")]
    assert configs[0] == configs[1] and json.loads(configs[0])["target_modules"] == sorted(
        json.loads(configs[0])["target_modules"])


def test_saved_files_follow_the_umask(tmp_path, model_dir):
    from peft import LoraConfig, get_peft_model

    lm = load_model(str(model_dir), device="cpu")
    peft = get_peft_model(lm.model, LoraConfig(r=2, target_modules="all-linear"))
    out = save_folder(peft, tmp_path / "adapter")
    mask = os.umask(0)
    os.umask(mask)
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f          # safetensors alone writes 0600
    assert folder_fingerprint(out) == folder_fingerprint(save_folder(peft, tmp_path / "again"))


def test_a_converted_folder_is_reused_only_when_its_record_names_the_same_gguf(tmp_path, monkeypatch):
    """convert_gguf reuses a folder whose record names this file and size; a folder whose record names another
    file (or size), or has none, is converted over, never taken because it exists."""
    import transformers

    from siftlm.models import load

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 10)
    out = tmp_path / "converted"
    out.mkdir()

    class Converting(Exception):
        pass

    def refuse(*a, **k):
        raise Converting

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    with pytest.raises(Converting):                            # a folder without a record: converted
        load.convert_gguf(gguf, out=out)
    (out / load.CONVERTED).write_text(json.dumps({"gguf": str(gguf.resolve()), "size": 11}))
    with pytest.raises(Converting):                            # a record of another size: converted
        load.convert_gguf(gguf, out=out)
    (out / load.CONVERTED).write_text(json.dumps({"gguf": str(gguf.resolve()), "size": 10}))
    assert load.convert_gguf(gguf, out=out) == out             # this file's record: reused, nothing converted
    with pytest.raises(load.MissingInput, match="GGUF file not found"):
        load.convert_gguf(tmp_path / "gone.gguf", out=out)
