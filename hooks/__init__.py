"""Model patches applied to ModelPatcher clones (h-space delta, value embeddings, attention capture/injection).

Empty until the capabilities that need them land; see docs/architecture.md."""
