"""Config dataclasses: built from plain mappings with unknown keys refused, and one source of help for the CLI."""

from dataclasses import fields

import pytest

from siftlm.config import (
    DataConfig,
    DPOTrainConfig,
    GradConfig,
    RunConfig,
    SelectConfig,
    SignalConfig,
    TrainConfig,
    closest,
    from_dict,
)

ALL = (DataConfig, SignalConfig, TrainConfig, GradConfig, SelectConfig, DPOTrainConfig, RunConfig)


def test_from_dict_builds_nested_configs():
    cfg = from_dict(RunConfig, {"budget": 5, "signals": {"max_length": 256}, "train": {"epochs": 3}})
    assert cfg.budget == 5 and cfg.signals.max_length == 256 and cfg.train.epochs == 3
    assert cfg.signals.token_budget == SignalConfig().token_budget      # the rest keep their defaults


def test_unknown_keys_name_the_closest_known_one():
    with pytest.raises(ValueError, match=r"RunConfig: unknown key 'budgett' \(did you mean 'budget'\?\)"):
        from_dict(RunConfig, {"budgett": 3})
    with pytest.raises(ValueError, match=r"RunConfig.train: unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        from_dict(RunConfig, {"train": {"epoch": 3}})
    assert closest("zzzz", ["budget"]) == ""


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_cli_field_has_help(cls):
    for f in fields(cls):
        if not f.metadata.get("hidden") and not isinstance(f.default_factory, type):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_one_yaml_loader_checks_keys_and_takes_paths_relative_to_the_file(tmp_path):
    from siftlm.config import ExperimentConfig
    from siftlm.files import load_yaml

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "grid.yaml").write_text("data: d.jsonl\nout: ../o\nscores: /abs/s.parquet\n"
                                             "signals: {store: st, max_length: 64}\nmodel: builtin:smollm2\n")
    cfg = load_yaml(ExperimentConfig, tmp_path / "g" / "grid.yaml", paths=("data", "out", "scores", "signals.store",
                                                                            "model"))
    assert cfg.data == str(tmp_path / "g" / "d.jsonl") and cfg.out == str(tmp_path / "g" / ".." / "o")
    assert cfg.scores == "/abs/s.parquet" and cfg.model == "builtin:smollm2"
    assert cfg.signals.store == str(tmp_path / "g" / "st") and cfg.signals.max_length == 64
    (tmp_path / "bad.yaml").write_text("signals: {max_lenght: 3}\n")
    with pytest.raises(ValueError, match="unknown key 'max_lenght' \\(did you mean 'max_length'\\?\\)"):
        load_yaml(ExperimentConfig, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="expected a mapping, got list"):
        load_yaml(ExperimentConfig, tmp_path / "list.yaml")
    with pytest.raises(FileNotFoundError, match="no such grid file"):
        load_yaml(ExperimentConfig, tmp_path / "none.yaml", what="grid file")


def test_the_signal_settings_that_key_results_are_the_four_they_always_were():
    """Experiment cells and pool scores are keyed by SignalConfig.identity(); where and how passes run (the store,
    the backend, --lock-timeout) must never enter it, or every cached cell would be recomputed."""
    from siftlm.config import SignalConfig

    cfg = SignalConfig(max_length=512, template="chat", store="elsewhere", lock_timeout=60, backend="ray")
    assert cfg.identity() == {k: getattr(cfg, k) for k in ("max_length", "template", "loss_on", "dtype")}
