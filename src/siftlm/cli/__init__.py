"""siftlm command line: each verb parses its options, makes one library call and prints a short table.

Options come from the config dataclasses (``siftlm.config``) through ``siftlm.options.verb``; ``siftlm
--config run.yaml COMMAND`` fills any command's options from the YAML section named after it. Heavy modules
(torch, transformers, TRL) are imported inside the verbs that need them, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

from siftlm.cli.common import app

for _verbs in ("data", "pipeline", "training", "evaluation"):   # each registers its verbs, in the order --help lists
    importlib.import_module(f"siftlm.cli.{_verbs}")

__all__ = ["app"]


def main_entry() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
