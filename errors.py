"""The base of the pack's own exception types. ComfyUI shows an error's type as ``module.QualName``, and a custom
node's modules are named after their install path (``/…/custom_nodes/comfyui-invedit.hooks.directions``), so every
subclass is given the module name ``invedit``: users read ``invedit.HSpaceError: <node>: <what and the fix>``.
Pure Python."""
from __future__ import annotations


class InvEditError(ValueError):
    """A problem with the user's input or files, with a message that names the node, the problem and the fix."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__module__ = "invedit"


InvEditError.__module__ = "invedit"


def quote(text, limit: int = 80) -> str:
    """A user's input in a message: repr'd, cut to ``limit`` characters with its length said (a 100 000-character
    prompt must not come back whole inside an error)."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"
