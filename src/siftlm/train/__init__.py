"""Training: the one loop (LoRA or full fine-tuning, data-parallel under a launcher or Ray Train), the reference model
and its trajectory, fine-tuning on a selection, and preference optimisation through TRL (DPO, the DavIR-DPO loss)."""
