"""Data layer: read datasets in common post-training formats, validate them, write results."""

from siftlm.data.formats import FORMATS, DataError, Example, Reject, detect_format
from siftlm.data.read import Dataset, open_dataset, read_dataset
from siftlm.data.write import require_examples, summarize, write_jsonl, write_rejects, write_selected

__all__ = [
    "FORMATS",
    "DataError",
    "Dataset",
    "Example",
    "Reject",
    "detect_format",
    "open_dataset",
    "read_dataset",
    "require_examples",
    "summarize",
    "write_jsonl",
    "write_rejects",
    "write_selected",
]
