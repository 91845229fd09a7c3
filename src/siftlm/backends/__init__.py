"""Where work runs. ``local`` (the default) is the in-process shard loop of ``siftlm.signals.store.compute_pass``;
``siftlm.backends.ray`` runs the same shards, and other independent pieces of work (DPP parts, k-means
assignment), on a Ray cluster. Nothing here knows what a shard computes: callers pass picklable callables."""

BACKENDS = {"local": "in this process, one device", "ray": "a Ray cluster (--ray-address, default a local one)"}
