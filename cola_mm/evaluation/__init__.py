"""Evaluation: Text VAE reconstruction (:mod:`.text_vae`), the image jobs (:mod:`.images`) and
the probe classifier that judges generated images (:mod:`.probe`)."""
