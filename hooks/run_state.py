"""Per-sampling-run state of the pack's model patches.

Since ComfyUI 0.14, ``ModelPatcher.clone()`` copies the dicts and lists of ``model_options`` but not the objects in
them, so a patch object (``hooks.hspace.HSpacePatch``, ``hooks.unet_split.SharedEncoder``, CASO's guidance) is one
object shared by every clone of a patched MODEL: one Apply output feeding two samplers, or a clone patched again. The
patches are therefore immutable configuration; what changes while a model samples (the shared encoder's cache, counts,
"warned once") lives in a ``RunState`` made fresh for every sampling run by the ``NewRunState`` SAMPLER_SAMPLE
wrapper and carried in ``transformer_options[RUN_KEY]``. ComfyUI copies ``transformer_options`` per call with its
nested dicts but not the objects in it, so every model call of one run (every pass of a multi-pass sampler included)
sees the same ``RunState``, and no two runs do.

Pure Python; ``install`` imports ComfyUI inside the function.
"""
from __future__ import annotations

from typing import Optional

RUN_KEY = "invedit_run"
WRAPPER_KEY = "invedit_run_state"


class RunState:
    """What one sampling run accumulates: the shared encoder's states (``hooks.unet_split``) and its hit / miss
    counts, how many h-space shifts were added (``calls``), which patches already warned, which checks ran."""

    def __init__(self):
        self.encoder_cache: list = []
        self.hits = self.misses = 0
        self.calls = 0
        self.once: set = set()

    def first(self, key) -> bool:
        """True the first time ``key`` is asked in this run (warn once, check once)."""
        if key in self.once:
            return False
        self.once.add(key)
        return True

    def clear_cache(self) -> None:
        self.encoder_cache.clear()


def run_state(transformer_options: Optional[dict], create: bool = False) -> Optional[RunState]:
    """The run's state in ``transformer_options``; with ``create``, one is stored there when it has none (a call
    outside a wrapped sampling run: the state then lasts as long as that dict)."""
    if transformer_options is None:
        return RunState() if create else None
    state = transformer_options.get(RUN_KEY)
    if state is None and create:
        state = transformer_options[RUN_KEY] = RunState()
    return state


def with_run_state(model_options: dict, state: Optional[RunState] = None) -> dict:
    """A copy of ``model_options`` (the dicts on the way copied) carrying ``state`` (a new one by default)."""
    to = dict(model_options.get("transformer_options", {}))
    to[RUN_KEY] = RunState() if state is None else state
    return {**model_options, "transformer_options": to}


class NewRunState:
    """SAMPLER_SAMPLE wrapper: every sampling run gets a fresh ``RunState`` in its model options. Stateless, so one
    instance may be shared by any number of clones. ``extra_args`` is updated in place (it is the run's own dict), so
    an outer wrapper can read the state after the run."""

    def __call__(self, executor, guider, sigmas, extra_args, *args, **kwargs):
        extra_args["model_options"] = with_run_state(extra_args.get("model_options", {}))
        return executor(guider, sigmas, extra_args, *args, **kwargs)


def install(model_options: dict) -> dict:
    """Add the ``NewRunState`` wrapper to a clone's ``model_options`` once."""
    import comfy.patcher_extension as pe
    kind = pe.WrappersMP.SAMPLER_SAMPLE
    if not pe.get_wrappers_with_key(kind, WRAPPER_KEY, model_options, is_model_options=True):
        pe.add_wrapper_with_key(kind, WRAPPER_KEY, NewRunState(), model_options, is_model_options=True)
    return model_options
