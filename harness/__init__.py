"""The project's host harness: set-up of the real ComfyUI, tiny models, in-process and server drivers."""
from __future__ import annotations

import ast
from pathlib import Path

from .paths import ROOT


def pack_node_ids() -> list[str]:
    """Every node id the pack registers, read from the node modules' sources (no ComfyUI import needed)."""
    ids = []
    for f in sorted((ROOT / "nodes").glob("*.py")):
        for call in ast.walk(ast.parse(f.read_text())):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "node_id" and call.args:
                ids.append("InvEdit" + ast.literal_eval(call.args[0]))
    return ids
