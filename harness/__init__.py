"""The project's host harness: set-up of the real ComfyUI, tiny models, in-process and server drivers."""
from __future__ import annotations

import ast
from pathlib import Path

from .paths import ROOT


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
