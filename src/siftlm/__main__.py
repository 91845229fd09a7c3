"""``python -m siftlm``: the command line, also what launchers start (``accelerate launch -m siftlm train ...``)."""

from siftlm.cli import app

if __name__ == "__main__":
    app()
