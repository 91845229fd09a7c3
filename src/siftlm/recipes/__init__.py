"""End-to-end flows over the components: the DavIR pipeline (demo, score, run), experiments (pools, grids, the noisy-pool
analysis), DPO, the DPO length analysis, reproduction of the papers' tables, cost planning."""
