"""h-space (Asyrp) on the real ComfyUI host: the shapes-world SD1.5 model through the stock loaders, the pack's nodes,
stock samplers for comparison."""
import pytest
import torch


@pytest.fixture(scope="module")
def world(hspace_world):
    return hspace_world


def generate(w, model, sampler, seed=5, batch=4, steps=12, cfg=3.0, prompt="a red circle"):
    import comfy.sample
    C = w["C"]
    lat = torch.zeros(batch, 4, 8, 8)
    sig = C["BasicScheduler"].execute(w["model"], "ddim_uniform", steps, 1.0)[0]
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, comfy.sample.prepare_noise(lat, seed), cfg, sampler, sig,
                                          w["enc"][prompt], w["enc"][""], lat, disable_pbar=True, seed=seed)


def apply(w, strength, mode="asymmetric", t_start=999, t_edit=0, apply_to="both", direction=None):
    return w["C"]["InvEditHSpaceApply"].execute(w["model"], direction or w["dir"], strength, t_start, t_edit, mode,
                                                apply_to, "resize")[0]


def asyrp_sampler(w, t_boost=0):
    return w["C"]["InvEditSamplerAsyrp"].execute(t_boost, 1.0)[0]


def euler():
    import comfy.samplers
    return comfy.samplers.sampler_object("euler")


def test_direction_from_prompts_has_the_bottleneck_shape(world):
    d = world["dir"]
    assert d.delta.shape == (10, 320, 8, 8) and d.meta["family"] == "SD15"  # shapes-world UNet: 320 ch, 8×8 at 64 px
    assert (d.sigmas[:-1] > d.sigmas[1:]).all() and d.delta.abs().max() > 0


def test_identical_prompts_give_a_zero_direction(world):
    import nodes
    with torch.inference_mode():
        d = world["C"]["InvEditHSpaceFromPrompts"].execute(
            world["model"], world["enc"]["a red circle"], world["enc"]["a red circle"],
            nodes.EmptyLatentImage().generate(64, 64, 1)[0], 4, 0, "global")[0]
    assert d.delta.shape[0] == 1 and torch.count_nonzero(d.delta) == 0


def test_without_a_shift_everything_is_bit_identical_to_stock_euler(world):
    stock = generate(world, world["model"], euler())
    assert torch.equal(generate(world, world["model"], asyrp_sampler(world)), stock)      # no patch
    assert torch.equal(generate(world, apply(world, 0.0), asyrp_sampler(world)), stock)   # strength 0
    assert torch.equal(generate(world, apply(world, 0.0, "symmetric"), euler()), stock)  # symmetric, strength 0


def test_the_shift_acts_only_inside_the_window(world):
    import comfy.model_sampling  # noqa: F401
    m = apply(world, 2.0, t_start=999, t_edit=600)
    sig = world["C"]["BasicScheduler"].execute(world["model"], "ddim_uniform", 12, 1.0)[0]
    lo = float(world["model"].get_model_object("model_sampling").sigma(torch.tensor(600)))
    in_window = int((sig[:-1] >= lo).sum())
    sampler = asyrp_sampler(world)
    generate(world, m, sampler, batch=1)
    # one edit pass (cond+uncond batched) per in-window step, counted in the run's state
    assert 0 < in_window < 12 and sampler.last_run.calls == in_window


def blue_margin(world, latents):
    from harness.paths import BASE
    from harness.shapes.models import load_classifier
    from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    colour = load_classifier(BASE / "models" / CLASSIFIER_DIR / CLASSIFIERS[0])[0]
    with torch.inference_mode():
        img = world["vae"].decode(latents).permute(0, 3, 1, 2).clamp(0, 1)
        logits = colour(img)
    return float((logits[:, 2] - logits[:, 0]).mean()), float((logits.argmax(1) == 2).float().mean())


def test_red_to_blue_direction_turns_red_circles_blue_as_strength_grows(world):
    """The shapes-world check of the issue: red circles ('a red circle', cfg 3) become blue as the strength grows
    (full window, asymmetric); on unconditional samples (all colours) the classifier's blue-vs-red margin rises
    monotonically with the strength and falls for negative strengths (measured: −8.6, −6.8, −3.6, 5.5, 8.9 at
    −1.5 … 1.5; it saturates near ±9 beyond)."""
    _, blue = zip(*(blue_margin(world, generate(world, apply(world, s), asyrp_sampler(world))) for s in (0.0, 10.0)))
    assert blue[0] == 0.0 and blue[1] >= 0.75, blue  # measured: 0 / 0.25 / 1.0 at strength 0 / 6 / 10
    margins = [blue_margin(world, generate(world, apply(world, s), asyrp_sampler(world), prompt="", cfg=1.0,
                                           batch=8))[0] for s in (-1.5, -0.75, 0.0, 0.75, 1.5)]
    assert all(a < b for a, b in zip(margins, margins[1:])), margins


def test_asymmetric_is_stronger_than_symmetric(world):
    base, _ = blue_margin(world, generate(world, world["model"], euler()))
    sym, _ = blue_margin(world, generate(world, apply(world, 3.0, "symmetric"), euler()))
    asy, _ = blue_margin(world, generate(world, apply(world, 3.0), asyrp_sampler(world)))
    assert asy - base > sym - base > 0, (base, sym, asy)


def test_boost_is_seeded_and_changes_the_tail(world):
    a = generate(world, world["model"], asyrp_sampler(world, t_boost=300), seed=1)
    b = generate(world, world["model"], asyrp_sampler(world, t_boost=300), seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, generate(world, world["model"], euler(), seed=1))


def test_save_load_round_trip_and_family_checks(world, tmp_path):
    import folder_paths
    C = world["C"]
    C["InvEditHSpaceSave"].execute(world["dir"], "test_red_to_blue")
    path = folder_paths.get_full_path_or_raise("hspace_directions", "test_red_to_blue.safetensors")
    try:
        loaded = C["InvEditHSpaceLoad"].execute("test_red_to_blue.safetensors")[0]
        assert torch.equal(loaded.delta, world["dir"].delta.float()) and torch.equal(loaded.sigmas, world["dir"].sigmas)
        assert loaded.meta["family"] == "SD15"
        with pytest.raises(ValueError, match="unsafe file name"):
            C["InvEditHSpaceSave"].execute(world["dir"], "../escape")
        sdxl = type(loaded)(loaded.delta, loaded.sigmas, dict(loaded.meta, family="SDXL"))
        with pytest.raises(ValueError, match="made with a SDXL model, this is SD15"):
            apply(world, 1.0, direction=sdxl)
        narrow = type(loaded)(loaded.delta[:, :64], loaded.sigmas, {})
        with pytest.raises(ValueError, match="64 channels but SD15's h-space has 320"):
            apply(world, 1.0, direction=narrow)
    finally:
        import os
        os.remove(path)


def test_combine_node_is_the_weighted_sum(world):
    C = world["C"]
    d = world["dir"]
    c = C["InvEditHSpaceCombine"].execute(d, 2.0, d, -0.5)[0]
    assert torch.equal(c.delta, 1.5 * d.delta)  # 2d and −0.5d are exact, so their sum is 1.5d correctly rounded


def test_flow_models_are_refused_by_the_asyrp_sampler(world):
    import comfy.sample
    flow = world["C"]["ModelSamplingSD3"]().patch(world["model"], 3.0)[0]
    with torch.inference_mode(), pytest.raises(ValueError, match="flow-matching model.*use DDIM Invert, the EDICT "
                                                                   "nodes, DOODL or the EMS Edit Sampler"):
        lat = torch.zeros(1, 4, 8, 8)
        comfy.sample.sample_custom(flow, lat, 1.0, asyrp_sampler(world), torch.tensor([1.0, 0.5, 0.0]),
                                   world["enc"][""], world["enc"][""], lat, disable_pbar=True, seed=0)


def test_a_dit_has_no_h_space_and_the_nodes_say_so(world):
    """The SD3 world's MMDiT: the Asyrp sampler and the direction nodes refuse it, naming the missing bottleneck."""
    import comfy.sample
    import nodes
    sd3, clip = nodes.CheckpointLoaderSimple().load_checkpoint("sd3.5_medium.safetensors")[:2]
    cond = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
    lat = torch.zeros(1, 16, 8, 8)
    with torch.inference_mode(), pytest.raises(ValueError, match="SD3 is a transformer with no U-Net middle block"):
        comfy.sample.sample_custom(sd3, lat, 1.0, asyrp_sampler(world), torch.tensor([0.9, 0.5, 0.0]), cond, cond,
                                   lat, disable_pbar=True, seed=0)
    with torch.inference_mode(), pytest.raises(ValueError, match="no h-space bottleneck"):
        world["C"]["InvEditHSpaceFromPrompts"].execute(sd3, cond, cond, {"samples": lat}, 4, 0, "per_timestep")


# ---- the shared-encoder step (hooks/unet_split.py) -----------------------------------------------------------------

def split_module():
    from harness import host
    return host.pack_module("hooks.unet_split")


@pytest.mark.parametrize("family", ["SD15", "SDXL"])
def test_split_forward_equals_comfyuis_forward_bit_for_bit(world, family):
    from host_models import sdxl_cond, tiny_sdxl
    split = split_module()
    g = torch.Generator().manual_seed(0)
    if family == "SD15":
        model, context, y = world["model"], world["enc"]["a red circle"][0][0], None
    else:
        model = tiny_sdxl()
        cond = sdxl_cond(3)[0]
        context, y = cond[0], torch.randn(1, 2816, generator=g)
    unet = model.get_model_object("diffusion_model")
    x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500.0])
    with torch.inference_mode():
        ref = unet._forward(x, t, context=context, y=y, transformer_options={})
        state = split.encode(unet, x, t, context, y, None, {})
        out = split.decode(unet, state, context, None, {})
    assert split.split_variant(unet) is not None  # this host's forward is one the split knows
    assert torch.equal(out, ref)


def test_shared_encoder_step_equals_two_full_passes(world):
    """Asyrp with the encoder shared (decoder run twice) vs two full U-Net passes: the same latents, and the cache
    was hit on every edit pass."""
    m = apply(world, 6.0, t_edit=400)
    enc = split_module().SharedEncoder
    wrappers = [w for ws in m.model_options["transformer_options"]["wrappers"].values() for v in ws.values()
                for w in v if isinstance(w, enc)]
    sampler = asyrp_sampler(world)
    shared = generate(world, m, sampler, batch=2)
    assert len(wrappers) == 1 and sampler.last_run.hits > 0 and sampler.last_run.misses == 0
    naive = generate(world, m, world["C"]["InvEditSamplerAsyrp"].execute(0, 1.0)[0].__class__(0, 1.0, False),
                     batch=2)
    assert torch.equal(shared, naive)  # the decoder sees the very encoder state a full pass computes
    assert not torch.equal(shared, generate(world, world["model"], euler(), batch=2))  # the edit did act


def test_direction_from_images(world):
    """Identical sets give exactly zero; red-circle images vs blue-circle images give a direction that pushes
    generated red circles towards blue, like the prompt direction."""
    from harness.shapes import data
    C = world["C"]
    encode = lambda b: {"samples": world["vae"].encode(b.images.permute(0, 2, 3, 1))}  # noqa: E731
    with torch.inference_mode():
        red = encode(data.make_batch(4, 31, colour=0, shape=0))
        blue = encode(data.make_batch(4, 32, colour=2, shape=0))
        zero = C["InvEditHSpaceFromImages"].execute(world["model"], red, red, world["enc"]["a red circle"], 6,
                                                    "global")[0]
        d = C["InvEditHSpaceFromImages"].execute(world["model"], red, blue, world["enc"][""], 10, "per_timestep")[0]
    assert torch.count_nonzero(zero.delta) == 0
    assert d.delta.shape == (10, 320, 8, 8) and d.meta["kind"] == "images_per_timestep"
    base, _ = blue_margin(world, generate(world, world["model"], euler()))
    edited, _ = blue_margin(world, generate(world, apply(world, 6.0, direction=d), asyrp_sampler(world)))
    assert edited > base + 1.0, (base, edited)


def test_asyrp_sampler_refuses_a_noise_mask(world):
    import comfy.sample
    lat = torch.zeros(1, 4, 8, 8)
    sig = world["C"]["BasicScheduler"].execute(world["model"], "ddim_uniform", 3, 1.0)[0]
    with torch.inference_mode(), pytest.raises(ValueError, match="noise masks"):
        comfy.sample.sample_custom(world["model"], lat, 1.0, asyrp_sampler(world), sig, world["enc"][""],
                                   world["enc"][""], lat, noise_mask=torch.ones(1, 1, 64, 64), disable_pbar=True,
                                   seed=0)
