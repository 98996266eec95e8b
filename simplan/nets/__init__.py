"""torch.nn model definitions used by the presets (imported only when torch is needed)."""
