"""The signals table: the one schema that scores read, selection writes into, and reports plot.

One row per example, keyed by ``id``. Columns (each present when its pass ran):

==========================================  =====================================================================
``n_prompt``, ``n_response``, ``truncated``  token counts of the encoded example; prompt tokens cut by max_length
``base_<stat>``                              the loss pass under the base model
``ref_<stat>``                               the loss pass under the reference model (the base fine-tuned on all)
``uncond_<stat>``                            the response-only pass (no prompt) under the base model, for IFD
``ppl_<i>``, ``acc_<i>``                     response perplexity exp(loss) and token accuracy after epoch i
                                             (i = 0: before training): the fine-tuning trajectory
``grad_norm``, ``vector``                    the grads pass (``vector`` lives in feature files, not here)
==========================================  =====================================================================

with ``<stat>`` one of ``nll_sum`` (summed response NLL), ``loss`` (its mean over response tokens, the
papers' L(y|x)), ``entropy``, ``el2n`` and ``acc``. Score functions take arrays of these columns; the
trajectory is handed to them as matrices ``ppl_trajectory`` / ``acc_trajectory`` (N, n+1).

Pair tables (preference data) have ``chosen_tokens``, ``rejected_tokens``, ``length_diff`` (chosen minus
rejected tokens), ``ref_chosen_logp``, ``ref_rejected_logp`` (log pi_ref(y|x), summed over the response) and,
with a policy, ``policy_chosen_logp``, ``policy_rejected_logp``.

Feature files (``siftlm signals --out``) are ``.parquet`` (id, scalar columns, ``vector``) or ``.npy``
(vectors only, in row order); ``load_features`` reads either, aligned with a list of ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from siftlm.errors import DataError, MissingInput, UsageError
from siftlm.files import atomic_write

STATS = ("nll_sum", "loss", "entropy", "el2n", "acc")
VECTOR_COLUMNS = ("vector", "embedding", "features")


def signals_table(prep, base: pd.DataFrame, ref: pd.DataFrame | None = None, uncond: pd.DataFrame | None = None,
                  trajectory: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per prepared SFT example with every signal given (loss-pass frames in ``prep`` order)."""
    t = pd.DataFrame({"id": prep.ids,
                      "n_prompt": [e.n_prompt for e in prep.encoded],
                      "n_response": [e.n_response for e in prep.encoded],
                      "truncated": [e.truncated for e in prep.encoded]})
    for prefix, frame in (("base", base), ("ref", ref), ("uncond", uncond)):
        if frame is not None:
            for c in STATS:
                t[f"{prefix}_{c}"] = frame[c].to_numpy()
    for i, frame in enumerate(trajectory or []):
        t[f"ppl_{i}"] = np.exp(frame["loss"].to_numpy())
        t[f"acc_{i}"] = frame["acc"].to_numpy()
    return t


def trajectory_columns(table: pd.DataFrame, kind: str) -> list[str]:
    """``kind``_0, ``kind``_1, ... present in ``table``, in epoch order (``kind``: ppl | acc)."""
    cols = [c for c in table.columns if c.startswith(f"{kind}_") and c[len(kind) + 1:].isdigit()]
    return sorted(cols, key=lambda c: int(c[len(kind) + 1:]))


def signal_arrays(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The table as the arrays score functions take, with the trajectories stacked into (N, n+1) matrices."""
    arrays = {c: table[c].to_numpy() for c in table.columns if c != "id"}
    for kind in ("ppl", "acc"):
        cols = trajectory_columns(table, kind)
        if cols:
            arrays[f"{kind}_trajectory"] = table[cols].to_numpy()
    return arrays


def pair_table(reference: pd.DataFrame, policy: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per pair from pair-pass frames: ref_* and (with a policy pass) policy_* log-probs, token counts,
    length difference."""
    t = pd.DataFrame({"id": reference["id"], "chosen_tokens": reference["chosen_tokens"],
                      "rejected_tokens": reference["rejected_tokens"],
                      "ref_chosen_logp": reference["chosen_logp"], "ref_rejected_logp": reference["rejected_logp"]})
    t["length_diff"] = t["chosen_tokens"] - t["rejected_tokens"]
    if policy is not None:
        if list(policy["id"]) != list(reference["id"]):
            raise DataError("policy and reference passes cover different pairs")
        t["policy_chosen_logp"] = policy["chosen_logp"].to_numpy()
        t["policy_rejected_logp"] = policy["rejected_logp"].to_numpy()
    return t


def write_frame(frame: pd.DataFrame, path: str | Path, meta: dict | None = None) -> Path:
    """A pass's rows to ``path``: .parquet (id, scalars, vector; ``meta``, e.g. how the pass was run, in the file's
    metadata) or .npy (the vectors, in row order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix == ".npy" and "vector" not in frame:
        raise UsageError(f"{path}: this pass has no vectors; write it as .parquet")
    with atomic_write(path) as tmp:
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]]))
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if meta:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                       b"siftlm": json.dumps(meta, default=str).encode()})
            pq.write_table(table, tmp)
    return path


def features_meta(path: str | Path) -> dict:
    """How a Parquet feature file was made (``write_frame``'s ``meta``), {} when it does not say."""
    import pyarrow.parquet as pq

    if Path(path).suffix not in (".parquet", ".pq"):
        return {}
    raw = (pq.read_schema(path).metadata or {}).get(b"siftlm")
    return json.loads(raw) if raw else {}


def layer_gradients(path: str | Path, ids: list[str]) -> list[np.ndarray]:
    """Per-layer gradients of a grads pass run with keep_layers (``layer_grads`` + ``layer_sizes``), aligned with
    ``ids``: one (n, p_l) array per layer."""
    frame = pd.read_parquet(path)
    if "layer_grads" not in frame:
        raise DataError(f"{path}: no per-layer gradients; run the grads pass with --keep-layers")
    by_id = dict(zip(frame["id"], frame["layer_grads"], strict=True))
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{path}: no gradients for {len(missing)} ids (first: {missing[0]})")
    flat = np.stack([np.asarray(by_id[i], dtype=np.float32) for i in ids])
    bounds = np.cumsum([0, *frame["layer_sizes"].iloc[0]])
    return [flat[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def load_features(path: str | Path, ids: list[str] | None = None) -> np.ndarray:
    """Feature vectors (N, D): a .npy (rows in the order of ``ids``) or a Parquet file with an ``id`` column and
    one list-valued column (``vector`` / ``embedding`` / ``features``), aligned with ``ids`` when given."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: no such features file")
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
        if x.ndim != 2 or (ids is not None and len(x) != len(ids)):
            want = f"({len(ids)}, D) rows in the scores table's order" if ids is not None else "(N, D)"
            raise DataError(f"{path}: shape {x.shape}, expected {want}")
        return x
    if path.suffix not in (".parquet", ".pq"):
        raise DataError(f"{path}: features must be .npy or .parquet (what `siftlm signals --out` writes)")
    frame = pd.read_parquet(path)
    col = next((c for c in VECTOR_COLUMNS if c in frame), None)
    if "id" not in frame or col is None:
        raise DataError(f"{path}: needs an 'id' column and one of {'/'.join(VECTOR_COLUMNS)}")
    if ids is None:
        return np.stack([np.asarray(v, dtype=np.float32) for v in frame[col]])
    vecs = dict(zip(frame["id"], frame[col], strict=True))
    missing = [i for i in ids if i not in vecs]
    if missing:
        raise DataError(f"{path}: no vector for {len(missing)} ids (first: {missing[0]})")
    return np.stack([np.asarray(vecs[i], dtype=np.float32) for i in ids])
