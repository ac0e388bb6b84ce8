"""Model patches applied to ModelPatcher clones: the h-space shift (``hspace``) and the U-Net split at the
bottleneck (``unet_split``); value embeddings and attention capture/injection will join them (see
docs/architecture.md)."""
