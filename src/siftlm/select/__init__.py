"""Selectors: each method file returns a ``Picked``; ``siftlm.select.run`` writes the selection files."""
