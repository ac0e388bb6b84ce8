"""Per-run state of the pack's patches (hooks/run_state.py) and the h-space patch as immutable configuration that
two clones may share (ComfyUI ≥ 0.14 copies model_options' dicts and lists, not the objects in them): pure torch."""
import logging

import torch

from invedit.hooks import passes
from invedit.hooks.directions import Direction
from invedit.hooks.hspace import HSpacePatch
from invedit.hooks.run_state import RUN_KEY, NewRunState, RunState, run_state, with_run_state


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def patch(mode="asymmetric"):
    return HSpacePatch(Direction(rand(1, 8, 4, 4, seed=3), torch.tensor([1.0])), 2.0, 10.0, 1.0, mode)


def call_opts(run=None, pass_=passes.EDIT, block=("output", 0)):
    o = {"block": block, "sigmas": torch.tensor([5.0]), "cond_or_uncond": [0, 1], passes.PASS_KEY: pass_}
    if run is not None:
        o[RUN_KEY] = run
    return o


def test_the_middle_block_after_call_equals_the_output_block_call_and_holds_no_state():
    p = patch()
    h, hsp = rand(2, 8, 4, 4, seed=1), rand(2, 8, 4, 4, seed=2)
    before = dict(vars(p))
    r1, r2 = RunState(), RunState()
    out = p({"h": h, "x": None, "emb": None, "context": None, "y": None, "timesteps": None,
             "transformer_options": call_opts(r1, block=("middle", 0))})
    assert set(out) == {"h"} and torch.equal(out["h"], p(h, hsp, call_opts(r2))[0])
    assert torch.equal(out["h"], h + 2.0 * p.direction.delta[0])
    assert r1.calls == r2.calls == 1 and vars(p).keys() == before.keys()
    assert all(vars(p)[k] is before[k] for k in before)  # nothing on the patch changed


def test_counts_and_the_warning_belong_to_the_run_not_to_the_shared_patch(caplog):
    """One patch object in two 'clones' (two runs): each run counts its own shifts and warns once itself."""
    p = patch()
    h = rand(2, 8, 4, 4, seed=1)
    runs = [RunState(), RunState()]
    for r in runs:
        for _ in range(3):
            p(h, h, call_opts(r))
    assert [r.calls for r in runs] == [3, 3]
    with caplog.at_level(logging.WARNING):
        for r in runs:
            for _ in range(3):
                assert p(h, h, call_opts(r, pass_=None))[0] is h  # a stock sampler: no edit pass
    assert sum("Asyrp Sampler" in rec.getMessage() for rec in caplog.records) == 2


def test_the_run_state_wrapper_gives_every_run_a_fresh_state_and_leaves_the_clones_options_alone():
    model_options = {"transformer_options": {"patches": {}, "x": 1}}
    seen = []

    def executor(guider, sigmas, extra_args, *rest):
        seen.append(run_state(extra_args["model_options"]["transformer_options"]))
        return "out"

    wrapper = NewRunState()
    args = [{"model_options": model_options} for _ in range(2)]
    assert [wrapper(executor, None, None, a, "cb") for a in args] == ["out", "out"]
    assert all(isinstance(s, RunState) for s in seen) and seen[0] is not seen[1]
    assert RUN_KEY not in model_options["transformer_options"]  # the clone's own options are untouched
    assert args[1]["model_options"]["transformer_options"][RUN_KEY] is seen[1]  # readable after the run
    mo = with_run_state(model_options, seen[0])
    assert mo["transformer_options"][RUN_KEY] is seen[0] and mo["transformer_options"]["x"] == 1


def test_without_a_run_state_the_warning_still_comes_once_per_options_dict():
    o = call_opts(pass_=None)
    assert run_state(o) is None
    r = run_state(o, create=True)
    assert run_state(o) is r and r.first("k") and not r.first("k")
