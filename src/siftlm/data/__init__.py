"""Data layer: read datasets in common post-training formats, validate them, write results."""

from siftlm.data.formats import FORMATS, DataError, Example, Reject, detect_format
from siftlm.data.io import (
    Dataset,
    atomic_write,
    open_dataset,
    read_dataset,
    summarize,
    write_jsonl,
    write_rejects,
    write_selected,
)

__all__ = [
    "FORMATS",
    "DataError",
    "Dataset",
    "Example",
    "Reject",
    "atomic_write",
    "detect_format",
    "open_dataset",
    "read_dataset",
    "summarize",
    "write_jsonl",
    "write_rejects",
    "write_selected",
]
