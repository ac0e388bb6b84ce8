"""Names shared by every node of the pack."""
PREFIX = "InvEdit"          # node ids: InvEdit<Name>; collision-safe across the ComfyUI ecosystem
CATEGORY = "InvEdit"


def node_id(name: str) -> str:
    return PREFIX + name


def display(name: str) -> str:
    return f"{name} (InvEdit)"
