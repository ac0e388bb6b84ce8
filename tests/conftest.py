"""Make the pack's pure modules (samplers/, metrics.py) and the harness importable as top-level names."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):  # the pack's pure modules; tests/tinynets.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
