"""Names shared by every node of the pack: node ids are "InvEdit" + name (collision-safe across the ComfyUI
ecosystem), display names end in "(InvEdit)", categories sit under "InvEdit/"."""
from __future__ import annotations

import functools
import inspect
import math

PREFIX = "InvEdit"
CATEGORY = "InvEdit"


def node_id(name: str) -> str:
    return PREFIX + name


def display(name: str) -> str:
    return f"{name} (InvEdit)"


def combo_inputs(cls) -> dict:
    """{input name: its options} of a node's Combo inputs, read from its schema now (file lists change while the
    server runs: a direction saved a minute ago is an option of h-space Load now)."""
    from comfy_api.latest import io
    return {i.id: list(i.options) for i in cls.define_schema().inputs if isinstance(i, io.Combo.Input)}


def float_inputs(cls) -> dict:
    """{input name: (min, max)} of a node's Float inputs (None where the schema sets no bound)."""
    from comfy_api.latest import io
    return {i.id: (i.min, i.max) for i in cls.define_schema().inputs if isinstance(i, io.Float.Input)}


def bad_float(name: str, value, bounds: tuple) -> str | None:
    """Why ``value`` is not a valid value of a Float input with ``bounds`` (None when it is)."""
    lo, hi = bounds
    span = f"between {lo} and {hi}" if lo is not None and hi is not None else (
        f"at least {lo}" if lo is not None else f"at most {hi}" if hi is not None else "finite")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{name} = {value!r} is not a number; give a number {span}"
    if not math.isfinite(value):
        return f"{name} = {value!r} is not a finite number (NaN or infinite); give a number {span}"
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{name} = {value!r} is outside its range; give a number {span}"
    return None


def add_input_validation(cls):
    """Give a V3 node a ``validate_inputs`` that refuses, with a message naming the node, the input, the value and
    what to give instead:

    - a Combo value outside its list (ComfyUI 0.3.75 checks V3 combos for no node; 0.33 does, except for inputs
      named in validate_inputs, which this check covers);
    - a Float at NaN or ±inf (ComfyUI's min/max comparisons are False for NaN, so NaN reached the math and gave
      black images) or outside its min/max.

    Its signature names exactly these inputs: ComfyUI skips its own min/max check for an input named there, which is
    why the bounds of the Float inputs are checked here, and keeps it for every other input (an INT at NaN or ±inf
    fails ComfyUI's own int() conversion, naming the input)."""
    combos, floats = list(combo_inputs(cls)), float_inputs(cls)
    if not (combos or floats) or "validate_inputs" in cls.__dict__:
        return cls
    who = cls.define_schema().display_name

    def validate_inputs(c, **values):  # c: the locked clone ComfyUI validates with; the schema is read from cls
        options = combo_inputs(cls) if any(values.get(n) is not None for n in combos) else {}
        for name, value in values.items():
            if value is None:  # a linked input, known only at run time
                continue
            if name in floats:
                why = bad_float(name, value, floats[name])
                if why:
                    return f"{who}: {why}"
                continue
            if value in options[name]:
                continue
            opts = options[name]
            shown = ", ".join(map(str, opts)) if len(opts) <= 20 else f"{len(opts)} options"
            return f"{who}: {name} = {value!r} is not one of its options ({shown or 'none installed'})"
        return True

    params = [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in (*combos, *floats)]
    validate_inputs.__signature__ = inspect.Signature(params)
    cls.validate_inputs = classmethod(validate_inputs)
    return cls


def add_conditioning_check(cls):
    """Give a node with a MODEL input and CONDITIONING inputs the one conditioning check
    (``adapters.checks.require_conditioning_width``) before its ``execute`` runs: a CONDITIONING encoded for another
    model family is refused naming the node, the input, both widths and the fix, where the math would fail with a raw
    shape error (or, between SD3 and Flux, whose tokens have the same width, run). The inputs are read from the
    schema, so a new node gets the check by having the inputs."""
    from comfy_api.latest import io
    schema = cls.define_schema()
    models = [i.id for i in schema.inputs if isinstance(i, io.Model.Input)]
    conds = [i.id for i in schema.inputs if isinstance(i, io.Conditioning.Input)]
    if not (models and conds) or "execute" not in cls.__dict__:
        return cls
    run = cls.__dict__["execute"].__func__
    sig, who = inspect.signature(run), schema.display_name

    @functools.wraps(run)
    def execute(c, *args, **kwargs):
        from ..adapters.checks import require_conditioning_width
        given = sig.bind_partial(c, *args, **kwargs).arguments
        if given.get(models[0]) is not None:
            require_conditioning_width(given[models[0]], {n: given[n] for n in conds if given.get(n) is not None},
                                       who)
        return run(c, *args, **kwargs)

    cls.execute = classmethod(execute)
    cls.conditioning_checked = tuple(conds)
    return cls
