"""Make the pack's pure modules (samplers/, metrics.py) and the harness importable as top-level names."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
