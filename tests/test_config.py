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


def test_apply_preset_reaches_nested_configs():
    from siftlm.config import apply_preset

    cfg = apply_preset(RunConfig(budget=7), "davir-paper")
    assert (cfg.train.full, cfg.train.epochs, cfg.train.lr, cfg.budget) == (True, 3, 2e-5, 7)
    assert apply_preset(cfg, None) is cfg
    with pytest.raises(ValueError, match="unknown preset"):
        apply_preset(cfg, "nope")
