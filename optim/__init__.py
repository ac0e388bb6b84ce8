"""Gradient procedures (DOODL, CASO training, CSDS, StyleDiffusion inversion, h-space training) and their losses.

Empty until the capabilities that need them land; see docs/architecture.md."""
