"""End-to-end flows over the components: the DavIR pipeline (demo, score), DPO, the DPO length analysis."""
