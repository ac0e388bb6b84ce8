"""Names shared by every node of the pack: node ids are "InvEdit" + name (collision-safe across the ComfyUI
ecosystem), display names end in "(InvEdit)", categories sit under "InvEdit/"."""
from __future__ import annotations

PREFIX = "InvEdit"
CATEGORY = "InvEdit"


def node_id(name: str) -> str:
    return PREFIX + name


def display(name: str) -> str:
    return f"{name} (InvEdit)"
