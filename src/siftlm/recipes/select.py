"""Selection with a target given as data: the target's features are computed as the training features were (the
pass, model and settings a ``siftlm signals --out`` file records), then the selection runs on cached features."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from siftlm.config import GradConfig, SelectConfig, SignalConfig, UsageError, from_dict
from siftlm.recipes.runtime import executor_for
from siftlm.recipes.signals import compute_signals
from siftlm.select.run import Selected, resolve, run_selection
from siftlm.signals.table import features_meta

FEATURE_SUFFIXES = (".parquet", ".pq", ".npy")


def target_features(cfg: SelectConfig, out: Path, store: str) -> str:
    """``cfg.target`` as a features file: as given, or computed from a data file like ``cfg.features`` was."""
    if Path(cfg.target).suffix in FEATURE_SUFFIXES:
        return cfg.target
    meta = features_meta(cfg.features) if cfg.features else {}
    if not meta:
        raise UsageError(f"--target {cfg.target} is data: the --features file must be a .parquet written by "
                         "`siftlm signals --out` (it records how to compute the target's features)")
    grad = from_dict(GradConfig, meta["grad"]) if meta.get("grad") else None
    signals = SignalConfig(store=store, **meta["signals"], progress=True)
    path = out / f"target-{meta['pass']}.parquet"
    compute_signals(cfg.target, meta["pass"], signals, model=meta["model"], adapter=meta.get("adapter"), grad=grad,
                    text=meta.get("text", "full"), out=path)
    return str(path)


def select(cfg: SelectConfig, out: str | Path, *, store: str = "siftlm-store") -> Selected:
    """``run_selection``, first turning a data-file ``--target`` into features."""
    out = Path(out)
    if cfg.target and cfg.target != "centroid" and resolve(cfg).method in ("less", "repr", "datainf"):
        out.mkdir(parents=True, exist_ok=True)
        cfg = replace(cfg, target=target_features(cfg, out, store))
    return run_selection(cfg, out, executor=executor_for(cfg))
