"""Training: preference optimisation through TRL (DPO with the DavIR-DPO loss)."""
