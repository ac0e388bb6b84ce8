"""Make the pack's pure modules (samplers/, metrics.py) and the harness importable as top-level names."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):  # the pack's pure modules; tests/tinynets.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# The pack as a package named "invedit" (without running its ComfyUI entry point), for the pure modules that import
# across the pack's layers with relative imports (optim/ uses samplers/ and hooks/): import them as invedit.<...>.
if "invedit" not in sys.modules:
    import types
    _pack = types.ModuleType("invedit")
    _pack.__path__ = [str(ROOT)]
    sys.modules["invedit"] = _pack
