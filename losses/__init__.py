"""Losses of the pack's gradient procedures, pure torch (+ transformers for CLIP): ``clip`` (LocalCLIP and CLIP's
preprocessing), ``directional`` (Asyrp's directional CLIP loss), ``pixel`` (the one pixel-loss interface: CLIP,
classifier, aesthetic, weighted sums), ``classifiers`` (the declared classifier architectures)."""
