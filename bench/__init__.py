"""Benchmarks: speed and memory ratios measured side by side in one run, printed as tables (`make bench`)."""
