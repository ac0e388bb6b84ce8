"""Make the harness and tests/tinynets.py importable, and the pack's pure modules as the package ``invedit``."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):  # the pack's pure modules; tests/tinynets.py
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# The pack as a package named "invedit" (without running its ComfyUI entry point), for the pure modules that import
# across the pack's layers with relative imports: the tests import them as invedit.<layer>.<module>.
from harness import pure_pack  # noqa: E402

pure_pack()
