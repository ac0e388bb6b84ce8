"""The project's host harness: set-up of the real ComfyUI, tiny models, in-process and server drivers."""
from __future__ import annotations

import ast
from pathlib import Path

from .paths import ROOT


def pure_pack():
    """The repository root as a package named ``invedit`` without running its ComfyUI entry point, so that the pack's
    pure modules (samplers/, hooks/, losses/, optim/, artifacts/), which import each other relatively, load outside
    ComfyUI (tests/conftest.py does the same for the unit tests)."""
    import sys
    import types
    if "invedit" not in sys.modules:
        pack = types.ModuleType("invedit")
        pack.__path__ = [str(ROOT)]
        sys.modules["invedit"] = pack
    return sys.modules["invedit"]


def pack_node_ids() -> list[str]:
    """Every node id the pack registers, read from the node modules' sources (no ComfyUI import needed)."""
    common = ast.parse((ROOT / "nodes" / "common.py").read_text())
    prefix = next(ast.literal_eval(n.value) for n in common.body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "PREFIX")
    ids = []
    for f in sorted((ROOT / "nodes").glob("*.py")):
        for call in ast.walk(ast.parse(f.read_text())):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "node_id" and call.args:
                ids.append(prefix + ast.literal_eval(call.args[0]))
    return ids
