"""Patch objects under shared clones (ComfyUI ≥ 0.14: ``ModelPatcher.clone()`` copies the dicts and lists of
``model_options`` but not the objects in them), and Asyrp's shared encoder on this host (``hooks.unet_split``'s table
of known forwards; the h-space shift at ``middle_block_after_patch`` where the host has it).

On ComfyUI 0.3.75, whose clone() deep-copies, ``shared_clone`` emulates the new semantics: the clone's model options
are copied dicts and lists holding the very same patch objects. On a newer host it is what clone() does anyway."""
import logging
import re

import pytest
import torch


@pytest.fixture(scope="module")
def world(hspace_world):
    w = hspace_world
    with torch.inference_mode():
        w["sigmas"] = w["C"]["BasicScheduler"].execute(w["model"], "ddim_uniform", 10, 1.0)[0]
    return w


def list_dict_copy(obj):
    """ComfyUI 0.14+'s ``comfy.utils.deepcopy_list_dict``: dicts and lists copied, every other object shared."""
    if isinstance(obj, dict):
        return {k: list_dict_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [list_dict_copy(v) for v in obj]
    return obj


def shared_clone(model):
    c = model.clone()
    c.model_options = list_dict_copy(model.model_options)
    return c


def module(name):
    from harness import host
    return host.pack_module(name)


def apply(w, strength=6.0, mode="asymmetric", t_edit=400):
    return w["C"]["InvEditHSpaceApply"].execute(w["model"], w["dir"], strength, 999, t_edit, mode, "both",
                                                "resize")[0]


def asyrp(shared=True):
    return module("adapters.asyrp").AsyrpSampler(0, 1.0, shared)


def sample(w, model, sampler, seed=3, batch=2, cfg=3.0, sigmas=None):
    import comfy.sample
    lat = torch.zeros(batch, 4, 8, 8)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, comfy.sample.prepare_noise(lat, seed), cfg, sampler,
                                          w["sigmas"] if sigmas is None else sigmas, w["enc"]["a red circle"],
                                          w["enc"][""], lat, disable_pbar=True, seed=seed)


def counts(sampler):
    r = sampler.last_run
    return r.calls, r.hits, r.misses


def patches_of(m):
    return module("adapters.asyrp").hspace_patches(m.model_options)


# ---- Task A: the shift's place and the shared encoder on this host ----------------------------------------------

def test_the_shift_sits_at_middle_block_after_where_the_host_has_it(world):
    m = apply(world)
    p = m.model_options["transformer_options"]["patches"]
    has_hook = hasattr(m, "set_model_middle_block_after_patch")
    where = "middle_block_after_patch" if has_hook else "output_block_patch"
    assert len(patches_of(m)) == 1 and patches_of(m)[0] in p[where]
    assert not any(q in p.get("output_block_patch" if has_hook else "middle_block_after_patch", [])
                   for q in patches_of(m))


def test_split_forward_with_host_patches_equals_the_hosts_forward(world):
    """Patches at every point the split re-runs (a middle_block_after_patch, which the older host's forward does
    not run and neither does the split there; output-block patches): split == ComfyUI's _forward bit for bit."""
    split = module("hooks.unet_split")
    unet = world["model"].get_model_object("diffusion_model")
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([500.0, 500.0])
    context = world["enc"]["a red circle"][0][0].repeat(2, 1, 1)

    def after(args):
        return {"h": args["h"] * 1.25 + args["x"].mean()}

    def out_patch(h, hsp, to):
        return (h, hsp * 0.5) if to["block"] == ("output", 1) else (h, hsp)

    def opts():
        return {"patches": {"middle_block_after_patch": [after], "output_block_patch": [out_patch]}}

    with torch.inference_mode():
        ref = unet._forward(x, t, context=context, y=None, transformer_options=opts())
        out = split.forward(unet, x, t, context, None, None, opts())
        plain = unet._forward(x, t, context=context, y=None, transformer_options={"patches": {
            "output_block_patch": [out_patch]}})
    assert torch.equal(out, ref)
    variant = split.split_variant(unet)
    assert variant is not None and torch.equal(ref, plain) != variant.middle_block_after_patch


def test_asyrp_shares_the_encoder_on_this_host_and_equals_two_full_passes(world, caplog):
    """No fallback on this host: the forward is a known one (no warning), every edit pass reuses the encoder, and
    the result is bit for bit two full passes'. Where the host has the middle-block-after hook, the shift placed at
    output block 0 instead gives the very same latents too."""
    split = module("hooks.unet_split")
    split._variants.clear()  # check the host's forward afresh, so that the warning would show here
    m = apply(world)
    shared, naive = asyrp(), asyrp(False)
    with caplog.at_level(logging.WARNING):
        a = sample(world, m, shared)
    assert not re.search(r"_forward .*two full U-Net passes", caplog.text)
    edit_steps = int((world["sigmas"][:-1] >= float(world["model"].get_model_object("model_sampling").sigma(
        torch.tensor(400)))).sum())
    assert counts(shared) == (edit_steps, edit_steps, 0)
    b = sample(world, m, naive)
    assert torch.equal(a, b) and counts(naive)[0] == edit_steps
    if hasattr(m, "set_model_middle_block_after_patch"):
        ad = module("adapters.asyrp")
        old_place = world["model"].clone()
        old_place.set_model_output_block_patch(patches_of(m)[0])
        ad.with_shared_encoder(old_place)
        assert torch.equal(sample(world, old_place, asyrp()), a)


# ---- Task B: patch objects shared between clones ----------------------------------------------------------------

def test_one_apply_feeding_two_samplers_is_two_independent_applies(world):
    m = apply(world)
    a, b = shared_clone(m), shared_clone(m)
    assert patches_of(a)[0] is patches_of(b)[0] is patches_of(m)[0]  # the new clone semantics
    sa, sb, sf = asyrp(), asyrp(), asyrp()
    out_a, out_b = sample(world, a, sa), sample(world, b, sb)
    fresh = sample(world, apply(world), sf)
    assert torch.equal(out_a, fresh) and torch.equal(out_b, fresh)
    assert counts(sa) == counts(sb) == counts(sf) and counts(sf)[0] > 0


def test_a_clone_repatched_after_apply_changes_nothing_for_the_original(world):
    """Sampling the original, then a clone that shares its patches and carries one more (a second direction), then
    the original again: the original's result and counts do not move; the clone's shift is its own."""
    m = apply(world, 4.0)
    first = asyrp()
    before = sample(world, m, first)
    c = shared_clone(m)
    ad, hs = module("adapters.asyrp"), module("hooks.hspace")
    sigma = float(world["model"].get_model_object("model_sampling").sigma(torch.tensor(400)))
    ad.set_hspace_patch(c, hs.HSpacePatch(world["dir"], -2.0, 1e9, sigma))
    other = asyrp()
    out_c = sample(world, c, other)
    again = asyrp()
    after = sample(world, m, again)
    assert torch.equal(before, after) and counts(first) == counts(again)
    assert not torch.equal(out_c, before) and counts(other)[0] == 2 * counts(first)[0]


def test_the_no_edit_pass_warning_comes_once_per_run_not_once_per_shared_object(world, caplog):
    import comfy.samplers
    m = apply(world, 5.0, t_edit=0)
    euler = comfy.samplers.sampler_object("euler")
    with caplog.at_level(logging.WARNING):
        sample(world, shared_clone(m), euler, batch=1)
        sample(world, shared_clone(m), euler, batch=1)
    assert sum("without the Asyrp Sampler" in r.getMessage() for r in caplog.records) == 2


def test_caso_guidance_shared_by_two_clones_checks_each_run(world, caplog):
    """CASO Guidance with a window no step of the schedule falls in: each sampling run warns, also when two clones
    share the guidance object and are sampled over the very same SIGMAS tensor; results equal."""
    import comfy.samplers
    g = world["C"]["InvEditCASOGuidance"].execute(world["model"], 10.0, 0.05, 0.05).args[0]
    euler = comfy.samplers.sampler_object("euler")
    sig = world["sigmas"][4:]
    a, b = shared_clone(g), shared_clone(g)
    assert a.model_options["sampler_post_cfg_function"][0] is b.model_options["sampler_post_cfg_function"][0]
    with caplog.at_level(logging.WARNING):
        out_a = sample(world, a, euler, batch=1, cfg=7.0, sigmas=sig)
        out_b = sample(world, b, euler, batch=1, cfg=7.0, sigmas=sig)
    assert len(re.findall(r"CASO Guidance.*no step of the sampler's schedule", caplog.text)) == 2
    assert torch.equal(out_a, out_b)
