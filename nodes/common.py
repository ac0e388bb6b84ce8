"""Names shared by every node of the pack: node ids are "InvEdit" + name (collision-safe across the ComfyUI
ecosystem), display names end in "(InvEdit)", categories sit under "InvEdit/"."""
from __future__ import annotations

PREFIX = "InvEdit"
CATEGORY = "InvEdit"


def node_id(name: str) -> str:
    return PREFIX + name


def display(name: str) -> str:
    return f"{name} (InvEdit)"


def combo_inputs(cls) -> dict:
    """{input name: its options} of a node's Combo inputs (from its schema)."""
    from comfy_api.latest import io
    return {i.id: list(i.options) for i in cls.GET_SCHEMA().inputs if isinstance(i, io.Combo.Input)}


def add_combo_validation(cls):
    """Give a V3 node a ``validate_inputs`` that refuses a Combo value outside its list with a message naming the node,
    the input, the value and the options (ComfyUI 0.3.75 checks V3 combos for no node). Its signature names exactly
    the Combo inputs, so ComfyUI keeps its own min/max checks for every other input."""
    import inspect
    combos = combo_inputs(cls)
    if not combos or "validate_inputs" in cls.__dict__:
        return cls
    who = cls.GET_SCHEMA().display_name

    def validate_inputs(c, **values):
        for name, value in values.items():
            options = combos[name]
            if value is None or value in options:  # None: a linked input, known only at run time
                continue
            shown = ", ".join(map(str, options)) if len(options) <= 20 else f"{len(options)} options"
            return f"{who}: {name} = {value!r} is not one of its options ({shown or 'none installed'})"
        return True

    params = [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in combos]
    validate_inputs.__signature__ = inspect.Signature(params)
    cls.validate_inputs = classmethod(validate_inputs)
    return cls
