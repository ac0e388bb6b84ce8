"""EMS / CSDS on the real ComfyUI host: the SD3 shapes world (and the U-Net world) through the stock loaders, the
pack's EMS nodes in-process, the guider inside the stock SamplerCustomAdvanced path (comfy.samplers.CFGGuider.sample)."""
import pytest
import torch

from harness.inputs import EXAMPLE_IMAGES

SD3 = "sd3.5_medium.safetensors"
SD15 = "v1-5-pruned-emaonly-fp16.safetensors"
CSDS = dict(iterations=4, lr_start=0.1, lr_end=0.01, lr_schedule="geometric", lambda_=0.5, csds_cfg=1.0,
            direction="toward_attribute", grad_mode="delta", step_space="auto")


@pytest.fixture(scope="module")
def world(comfy):
    import nodes
    example_image_name = next(iter(EXAMPLE_IMAGES))
    out = {}
    for name, ckpt in (("sd3", SD3), ("unet", SD15)):
        with torch.inference_mode():
            model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)
            img = nodes.LoadImage().load_image(example_image_name)[0]
            enc = nodes.NODE_CLASS_MAPPINGS["InvEditEMSEncodeEditPrompts"].execute(
                clip, "a red circle", "a blue circle", "blue", "").args
            latent = {"samples": vae.encode(img[..., :3])}
        out[name] = {"model": model, "clip": clip, "vae": vae, "latent": latent,
                     "c_source": enc[0], "c_target": enc[1], "c_attr": enc[2], "c_negative": enc[3]}
    return out


def node(name):
    import nodes
    return nodes.NODE_CLASS_MAPPINGS[f"InvEdit{name}"]


def manip(w, alpha, **kw):
    args = dict(edit_tokens=True, edit_pooled=True, token_part="all", length_mismatch="zero_pad", **kw)
    with torch.inference_mode():
        return node("EMSTextManipulate").execute(w["c_source"], w["c_target"], alpha, **args).args[0]


def test_encoded_prompts_match_in_shape_and_the_manipulation_ends_are_exact(world):
    for w in world.values():
        (s, sd), (t, td) = w["c_source"][0], w["c_target"][0]
        assert s.shape == t.shape and sd["pooled_output"].shape == td["pooled_output"].shape
        assert not torch.equal(s, t)
        c0, c1 = manip(w, 0.0), manip(w, 1.0)
        assert torch.equal(c0[0][0], s) and torch.equal(c0[0][1]["pooled_output"], sd["pooled_output"])
        torch.testing.assert_close(c1[0][0], t, rtol=0, atol=1e-5)
    assert world["sd3"]["c_source"][0][0].shape[-1] == 4096  # SD3's joint width (CLIP-L padded)


def edit_sampler(w, iterations, alpha=1.0, seed=3, steps=12, **kw):
    with torch.inference_mode():
        return node("EMSEditSampler").execute(
            model=w["model"], positive=manip(w, alpha), negative=w["c_negative"], attribute=w["c_attr"],
            latent_image=w["latent"], seed=seed, steps=steps, strength=0.75, strength_mode="diffusers", cfg=5.0,
            sampler_name="euler", scheduler="simple", **dict(CSDS, iterations=iterations, **kw))


@pytest.mark.parametrize("which", ["sd3", "unet"])
def test_zero_iterations_equal_the_stock_guider_with_the_same_seed(world, which):
    import comfy.sample
    import comfy.samplers
    w = world[which]
    out = edit_sampler(w, 0)
    ms = w["model"].get_model_object("model_sampling")
    sig = comfy.samplers.calculate_sigmas(ms, "simple", 12).cpu()[3:]  # int(12 − 0.75·12) = 3
    with torch.inference_mode():
        g = comfy.samplers.CFGGuider(w["model"])
        g.set_conds(manip(w, 1.0), w["c_negative"])
        g.set_cfg(5.0)
        lat = w["latent"]["samples"]
        want = g.sample(comfy.sample.prepare_noise(lat, 3), lat, comfy.samplers.sampler_object("euler"), sig,
                        disable_pbar=True, seed=3)
    assert torch.equal(out.args[0]["samples"], want)
    assert "text only" in out.ui.as_dict()["text"][0]


@pytest.mark.parametrize("which", ["sd3", "unet"])
def test_csds_moves_the_noisy_latent_and_the_sampler_starts_from_it(world, which):
    """The guider hands the refined z'_t to the stock sampler as noise' = noise + (z'_t − z_t)/B (B = σ0 on both
    coordinates, flow and VE): the sampler's own noise scaling rebuilds z'_t; the attribute gap falls; the result
    differs from text-only EMS."""
    import comfy.sample
    import comfy.samplers
    w = world[which]
    ms = w["model"].get_model_object("model_sampling")
    sig = comfy.samplers.calculate_sigmas(ms, "simple", 12).cpu()[3:]
    cfg = node("EMSCSDSGuider").execute(w["model"], manip(w, 1.0), w["c_negative"], w["c_attr"], 5.0,
                                        **CSDS).args[0].config
    from harness import host
    ad = host.pack_module("adapters.csds")
    guider = ad.CSDSGuider(w["model"], cfg)
    guider.set_conds(manip(w, 1.0), w["c_negative"], w["c_attr"])
    guider.set_cfg(5.0)
    lat = w["latent"]["samples"]
    noise = comfy.sample.prepare_noise(lat, 3)
    seen = {}

    class Spy(comfy.samplers.KSAMPLER):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, *rest, **kw):
            seen["start"] = model_wrap.inner_model.model_sampling.noise_scaling(sigmas[0], noise, latent_image)
            return super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, *rest, **kw)
    with torch.inference_mode():
        guider.sample(noise, lat, Spy(comfy.samplers.sampler_object("euler").sampler_function), sig,
                      disable_pbar=True, seed=3)
    z_t, z_ref = guider.z_t, guider.z_refined
    assert float((z_ref - z_t).abs().max()) > 1e-3
    torch.testing.assert_close(seen["start"], z_ref, rtol=1e-5, atol=1e-5 * float(z_ref.abs().max()))
    r = guider.result.residuals
    assert len(r) == 4 and r[-1] < r[0], r
    assert not torch.equal(edit_sampler(w, 4).args[0]["samples"], edit_sampler(w, 0).args[0]["samples"])


def test_the_unet_world_runs_the_same_nodes_with_the_ve_step_factor(world):
    out = edit_sampler(world["unet"], 2)
    assert out.args[0]["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out.args[0]["samples"]).all()
    assert "CSDS 2 iterations" in out.ui.as_dict()["text"][0] and len(out.args[2].values) == 2


def test_multi_attribute_chain_and_bad_conditioning_are_handled(world):
    import nodes
    w, u = world["sd3"], world["unet"]
    with torch.inference_mode():
        c2 = nodes.NODE_CLASS_MAPPINGS["InvEditEMSEncodeEditPrompts"].execute(
            w["clip"], "a red circle", "a red square", "square", "").args
    base = manip(w, 1.0)
    args = dict(edit_tokens=True, edit_pooled=True, token_part="all", length_mismatch="zero_pad")
    with torch.inference_mode():
        both = node("EMSTextManipulate").execute(c2[0], c2[1], 0.5, accumulate_onto=base, **args).args[0]
    s = w["c_source"][0][0]
    want = s + (w["c_target"][0][0] - s) + 0.5 * (c2[1][0][0] - c2[0][0][0])
    torch.testing.assert_close(both[0][0], want, rtol=0, atol=1e-5)
    with torch.inference_mode(), pytest.raises(ValueError, match="encode source and target with the same text"):
        node("EMSTextManipulate").execute(u["c_source"], w["c_target"], 1.0, **args)
    bad = [[w["c_target"][0][0] * float("nan"), dict(w["c_target"][0][1])]]
    with torch.inference_mode(), pytest.raises(ValueError, match="NaN/inf"):
        node("EMSTextManipulate").execute(w["c_source"], bad, 1.0, **args)


def test_sde_metric_and_latent_linear_edit(world):
    w = world["sd3"]
    x = torch.zeros(1, 8, 8, 3)
    out = node("EMSSDEMetric").execute(x, x + 0.1, x + 0.5, "rmse", 1e-8)
    l2 = 0.2 + 0.5 * (8 * 8 * 3) ** 0.5  # Eq. 1 with the L2 norm: the same ratio, the distance ×sqrt(H·W·C)
    assert out.args[0] == pytest.approx(0.7) and "SDE (per-pixel RMSE) 0.7000" in out.args[3]
    assert f"SDE (L2 norm, the paper's Eq. 1) {l2:.4f}" in out.args[3]  # the report names both (issue 24)
    assert node("EMSSDEMetric").execute(x, x + 0.1, x + 0.5, "l2", 1e-8).args[0] == pytest.approx(l2)
    default = next(i for i in node("EMSSDEMetric").define_schema().inputs if i.id == "distance").default
    assert default == "l2"  # the paper's Eq. 1 (issue 24; was rmse)
    three = x.repeat(3, 1, 1, 1)  # issue 29, 8: three identical images gave "SDE nan = ratio nan"
    with pytest.raises(ValueError, match=r"EMS SDE Metric \(InvEdit\): recon_flipped equals the original in "
                                         r"image\(s\) \[1, 2, 3\]"):
        node("EMSSDEMetric").execute(three, three, three, "l2", 0.0)
    lat = w["latent"]
    ref = {"samples": lat["samples"] + 1.0}
    assert torch.equal(node("EMSLatentLinearEdit").execute(lat, ref, 0.0).args[0]["samples"], lat["samples"])
    with pytest.raises(ValueError, match="differ in shape"):
        node("EMSLatentLinearEdit").execute(lat, world["unet"]["latent"], 1.0)


def test_prompt_triplet_node(comfy):
    out = node("EMSPromptTriplet").execute("A Red circle", "red", "blue", False, "", "").args
    assert out[:3] == ("A Red circle", "A blue circle", "blue") and "blue" in out[3]


def test_strength_mapping_determinism_and_a_conditioning_of_another_family(world):
    import comfy.samplers
    from harness import host
    ad = host.pack_module("adapters.csds")
    assert ad.start_index(50, 0.75) == 12 and ad.start_index(50, 0.75, "comfy_denoise") == 12
    ms = world["sd3"]["model"].get_model_object("model_sampling")
    assert float(comfy.samplers.calculate_sigmas(ms, "simple", 50)[12]) == pytest.approx(0.904, abs=0.002)
    a, b = edit_sampler(world["sd3"], 2), edit_sampler(world["sd3"], 2)
    assert torch.equal(a.args[0]["samples"], b.args[0]["samples"])
    w, u = world["sd3"], world["unet"]
    with torch.inference_mode(), pytest.raises(ValueError, match="the positive conditioning has tokens of width 768, "
                                                                 "but SD3 takes 4096"):
        node("EMSEditSampler").execute(
            model=w["model"], positive=u["c_target"], negative=w["c_negative"], attribute=w["c_attr"],
            latent_image=w["latent"], seed=0, steps=4, strength=0.75, strength_mode="diffusers", cfg=5.0,
            sampler_name="euler", scheduler="simple", **CSDS)


def test_sdxl_conditioning_with_pooled_runs_through_the_guider(comfy):
    """SDXL (tiny, random): the pooled 1280 moves with the tokens, the ADM keys come from the source, CSDS runs."""
    import comfy.sample
    import comfy.samplers
    from harness import host
    from host_models import sdxl_cond, tiny_sdxl
    ad = host.pack_module("adapters.csds")
    oc = host.pack_module("optim.csds")
    model = tiny_sdxl()
    c0, c1, ca = sdxl_cond(1), sdxl_cond(2), sdxl_cond(3)
    for c in (c0, c1, ca):
        c[0][1].update(width=64, height=64)
    with torch.inference_mode():
        c = ad.manipulate(c0, c1, 0.5)
        half = (c0[0][1]["pooled_output"] + c1[0][1]["pooled_output"]) / 2
        torch.testing.assert_close(c[0][1]["pooled_output"], half)
        assert c[0][1]["width"] == 64
        g = ad.CSDSGuider(model, oc.CSDSConfig(iterations=2))
        g.set_conds(c, c0, ca)
        g.set_cfg(3.0)
        lat = torch.zeros(1, 4, 8, 8)
        sig = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4)[1:]
        out = g.sample(comfy.sample.prepare_noise(lat, 0), lat, comfy.samplers.sampler_object("euler"), sig,
                       disable_pbar=True, seed=0)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all() and len(g.result.losses) == 2


def test_ems_edit_honours_interrupt(world):
    """With ComfyUI's interrupt flag set, the CSDS iterations stop with InterruptProcessingException."""
    import comfy.model_management as mm
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            edit_sampler(world["sd3"], 20)
    finally:
        mm.interrupt_current_processing(False)


def test_the_constraint_holds_the_latent_closer_as_lambda_grows_and_autograd_mode_descends(world):
    """On the SD3 world's MMDiT: ‖z'_t − z_t‖ non-increasing over λ 0.1, 0.3, 1, 3 (delta mode, a fixed seed); the
    autograd mode backpropagates through the model and its Eq. 2 loss falls. η 0.25: the steps η 0.5 took before
    issue 24 made η the paper's (the full gradient of Eq. 2, twice the old step)."""
    from harness import host
    ad, oc = host.pack_module("adapters.csds"), host.pack_module("optim.csds")
    import comfy.sample
    import comfy.samplers
    w = world["sd3"]
    ms = w["model"].get_model_object("model_sampling")
    sig = comfy.samplers.calculate_sigmas(ms, "simple", 12).cpu()[3:4]  # the refinement only: one level
    lat = w["latent"]["samples"]
    moved, losses = [], None
    for lam, mode in ((0.1, "delta"), (0.3, "delta"), (1.0, "delta"), (3.0, "delta"), (0.5, "autograd")):
        g = ad.CSDSGuider(w["model"], oc.CSDSConfig(iterations=6, lr_start=0.25, lr_end=0.25, lr_schedule="constant",
                                                    lam=lam, mode=mode))
        g.set_conds(manip(w, 1.0), w["c_negative"], w["c_attr"])
        g.set_cfg(5.0)
        with torch.inference_mode():
            g.sample(comfy.sample.prepare_noise(lat, 3), lat, comfy.samplers.sampler_object("euler"),
                     torch.cat([sig, sig.new_zeros(1)]), disable_pbar=True, seed=3)
        if mode == "delta":
            moved.append(float((g.z_refined - g.z_t).norm()))
        else:
            losses = g.result.losses
    assert moved[0] > 0 and all(b <= a for a, b in zip(moved, moved[1:])), moved
    assert losses[-1] < losses[0], losses
