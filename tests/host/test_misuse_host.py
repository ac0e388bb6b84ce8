"""Issue 12's failures seen through the real host, each reproduced first: odd-sized images in the report, empty
SIGMAS, a noise mask through inversion, one image taken out of an EDICT pair batch, DOODL on a pair inverted with
leapfrog off, an asymmetric direction under a stock sampler, h-space From Prompts on a 16-channel latent, two saves
under one name, NaN strengths."""
import math
import os

import pytest
import torch

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
EDICT = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)


@pytest.fixture(scope="module")
def w(load_world):
    return load_world("", "a red circle", "a blue circle")


def run(w, node, **kw):
    with torch.inference_mode():
        return w["C"][node].execute(**kw)


def test_the_report_compares_an_odd_sized_image_with_the_region_vae_encode_kept(w):
    img = torch.rand(1, 67, 61, 3)
    with torch.inference_mode():
        lat = {"samples": w["vae"].encode(img)}  # VAE Encode crops to 64 x 56
    out = run(w, "InvEditReconstructionReport", original=lat, reconstruction=lat, vae=w["vae"], source_image=img)
    assert "pixel PSNR" in out.args[0]


def test_empty_sigmas_are_refused_by_the_inverters(w):
    lat = {"samples": torch.randn(1, 4, 8, 8)}
    empty = torch.zeros(0)
    with pytest.raises(ValueError, match="no step to invert"):
        run(w, "InvEditDDIMInvert", model=w["model"], positive=w["enc"][""], negative=w["enc"][""], latent=lat,
            sigmas=empty, cfg=1.0)
    with pytest.raises(ValueError, match="no step to invert"):
        run(w, "InvEditEDICTInvert", model=w["model"], positive=w["enc"][""], negative=w["enc"][""], latent=lat,
            sigmas=empty, cfg=1.0, state_dtype="float64", **EDICT)


def test_a_noise_mask_is_refused_by_ddim_inversion(w):
    lat = {"samples": torch.randn(1, 4, 8, 8), "noise_mask": torch.ones(1, 1, 64, 64)}
    sig = w["C"]["BasicScheduler"]().execute(w["model"], "ddim_uniform", 4, 1.0)[0]
    with pytest.raises(ValueError, match="noise mask"):
        run(w, "InvEditDDIMInvert", model=w["model"], positive=w["enc"][""], negative=w["enc"][""], latent=lat,
            sigmas=sig, cfg=1.0)


def test_one_image_taken_out_of_an_edict_pair_batch_regenerates_exactly(w):
    import nodes
    from harness.shapes import data
    with torch.inference_mode():
        src = {"samples": w["vae"].encode(data.make_batch(2, 9, colour=0, shape=0).images.permute(0, 2, 3, 1))}
    sig = run(w, "InvEditEDICTSigmas", model=w["model"], steps=6, schedule="official_980_0", strength=1.0)[0]
    pair = run(w, "InvEditEDICTInvert", model=w["model"], positive=w["enc"]["a red circle"], negative=w["enc"][""],
               latent=src, sigmas=sig, cfg=3.0, state_dtype="float64", **EDICT)[0]
    one = nodes.LatentFromBatch().frombatch(pair, 1, 1)[0]
    regen = run(w, "InvEditEDICTRegenerate", model=w["model"], positive=w["enc"]["a red circle"],
                negative=w["enc"][""], pair=one, cfg=3.0, **EDICT)[0]
    # The model now sees a batch of 1 where the inversion saw 2: float32 kernels may round differently for another
    # batch shape, so the regeneration is exact up to that rounding (measured 1e-4 of values ~13), not bit for bit.
    err = float((regen["samples"] - src["samples"][1:2]).abs().max())
    assert err <= 1e-4 * float(src["samples"].abs().max()) * 10, err
    # before, the pair's keys did not follow the selection: "size of tensor a (4) must match ... b (2)"
    assert regen["samples"].shape == (1, 4, 8, 8)


def test_doodl_takes_leapfrog_and_input_scaling_from_the_pair(w, example_image_name):
    import nodes
    with torch.inference_mode():
        img = nodes.LoadImage().load_image(example_image_name)[0]
        src = {"samples": w["vae"].encode(img[..., :3])}
    sig = run(w, "InvEditEDICTSigmas", model=w["model"], steps=4, schedule="official_980_0", strength=1.0)[0]
    pair = run(w, "InvEditEDICTInvert", model=w["model"], positive=w["enc"]["a red circle"], negative=w["enc"][""],
               latent=src, sigmas=sig, cfg=3.0, state_dtype="float64", mix_p=0.93, leapfrog=False,
               official_input_scaling=False)[0]
    loss = run(w, "InvEditDOODLClassifierLoss", classifier="shapes_colour.safetensors", architecture="small_cnn",
               target="blue", num_classes=0, normalisation="none", mode="cross_entropy", weight=1.0, crops=2,
               crop_power=0.3, input_size=64).args[0]
    out = run(w, "InvEditDOODLOptimize", model=w["model"], positive=w["enc"]["a red circle"], negative=w["enc"][""],
              vae=w["vae"], loss=loss, latent=pair, seed=0, steps=4, cfg=3.0, mix_p=0.93, iterations=0, lr=1.0,
              grad_clip=1e-3, momentum=0.9, perturb_std=0.0, keep="last", backprop="reversible")
    assert torch.equal(out.args[0]["samples"], src["samples"])  # 0 iterations: the exact reconstruction


def test_an_asymmetric_direction_under_a_stock_sampler_warns(w, caplog):
    import logging
    import comfy.sample
    d = run(w, "InvEditHSpaceFromPrompts", model=w["model"], source=w["enc"]["a red circle"],
            target=w["enc"]["a blue circle"], latent={"samples": torch.zeros(2, 4, 8, 8)}, steps=4, seed=0,
            reduce="global").args[0]
    m = w["C"]["InvEditHSpaceApply"].execute(w["model"], d, 5.0, 999, 0, "asymmetric", "both", "resize", True)[0]
    lat = torch.zeros(1, 4, 8, 8)
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 0), 4, 1.0, "euler", "normal", w["enc"][""],
                            w["enc"][""], lat, disable_pbar=True, seed=0)
    assert any("without the Asyrp Sampler" in r.getMessage() for r in caplog.records)


def test_from_prompts_on_a_16_channel_latent_names_the_channels(w):
    with pytest.raises(ValueError, match=r"works on \[B, 4, H, W\] latents"):
        run(w, "InvEditHSpaceFromPrompts", model=w["model"], source=w["enc"]["a red circle"],
            target=w["enc"]["a blue circle"], latent={"samples": torch.randn(1, 16, 8, 8)}, steps=4, seed=0,
            reduce="global")


def test_two_saves_under_one_name_keep_both_files_and_nan_strength_is_refused(w):
    import folder_paths
    d = run(w, "InvEditHSpaceFromPrompts", model=w["model"], source=w["enc"]["a red circle"],
            target=w["enc"]["a blue circle"], latent={"samples": torch.zeros(1, 4, 8, 8)}, steps=4, seed=0,
            reduce="global").args[0]
    root = folder_paths.get_folder_paths("hspace_directions")[0]
    made = []
    try:
        for _ in range(2):
            out = run(w, "InvEditHSpaceSave", direction=d, name="test_twice")
            made.append(os.path.join(root, out.ui.as_dict()["text"][0].split()[1].rstrip(":")))
        assert [os.path.basename(p) for p in made] == ["test_twice.safetensors", "test_twice_00001.safetensors"]
        assert all(os.path.isfile(p) for p in made)
    finally:
        for p in made:
            if os.path.isfile(p):
                os.remove(p)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="h-space Apply Direction.*strength"):
            w["C"]["InvEditHSpaceApply"].execute(w["model"], d, bad, 999, 0, "asymmetric", "both", "resize", True)
        with pytest.raises(ValueError, match="weight"):
            w["C"]["InvEditHSpaceCombine"].execute(d, 1.0, d, bad)


def test_a_combo_value_outside_its_list_is_refused_by_the_validator_naming_it(comfy):
    """ComfyUI 0.3.75 does not check V3 combo values; every pack node with a Combo now does (issue 12, item 8)."""
    from harness.host import PromptError
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=CKPT)
    g.node("InvEditEDICTSigmas", model=ck.out(0), steps=10, schedule="Official", strength=1.0)
    sampler = g.node("InvEditSamplerEDICT", mix_p=0.93, leapfrog=True, official_input_scaling=True,
                     state_dtype="float16", output="x")
    lat = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    sig = g.node("InvEditEDICTSigmas", model=ck.out(0), steps=2, schedule="normal", strength=1.0)
    guider = g.node("BasicGuider", model=ck.out(0), conditioning=g.node("CLIPTextEncode", clip=ck.out(1),
                                                                          text="x").out(0))
    out = g.node("SamplerCustomAdvanced", noise=g.node("DisableNoise").out(0), guider=guider.out(0),
                 sampler=sampler.out(0), sigmas=sig.out(0), latent_image=lat.out(0))
    g.node("CaptureForTest", value=out.out(0), key="x")
    with pytest.raises(PromptError) as e:
        comfy.run_prompt(g.finalize())
    text = str(e.value.details)
    assert "EDICT Sampler (InvEdit): state_dtype = 'float16' is not one of its options (float64, float32)" in text
    # a valid graph still passes the same validator: bounds on the other inputs are ComfyUI's own
    g2 = comfy.graph()
    ck2 = g2.node("CheckpointLoaderSimple", ckpt_name=CKPT)
    sig2 = g2.node("InvEditEDICTSigmas", model=ck2.out(0), steps=0, schedule="normal", strength=1.0)
    g2.node("CaptureForTest", value=sig2.out(0), key="s")
    with pytest.raises(PromptError, match="invalid"):
        comfy.run_prompt(g2.finalize())


def test_a_direction_saved_while_the_host_runs_loads_by_name_through_the_validator(comfy, w, captured):
    """The combo check reads the file list when it validates: a direction saved a moment ago is an option of h-space
    Load (a list frozen at start refused it as 'not one of its options')."""
    import folder_paths
    d = run(w, "InvEditHSpaceFromPrompts", model=w["model"], source=w["enc"]["a red circle"],
            target=w["enc"]["a blue circle"], latent={"samples": torch.zeros(1, 4, 8, 8)}, steps=4, seed=0,
            reduce="global").args[0]
    out = run(w, "InvEditHSpaceSave", direction=d, name="test_saved_now")
    name = out.ui.as_dict()["text"][0].split()[1].rstrip(":")
    path = os.path.join(folder_paths.get_folder_paths("hspace_directions")[0], name)
    try:
        g = comfy.graph()
        g.node("CaptureForTest", value=g.node("InvEditHSpaceLoad", name=name).out(0), key="d")
        comfy.run_prompt(g.finalize())
        assert torch.equal(captured["d"].delta, d.delta.float())
    finally:
        os.remove(path)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_at_nan_or_inf_is_refused_by_the_validator_naming_node_and_input(comfy, value):
    """ComfyUI's min/max comparisons are False for NaN: a NaN strength passed validation and wrote black images. Every
    pack Float now refuses NaN and ±inf at validation, naming node, input and the range to give."""
    from harness.host import PromptError
    g = comfy.graph()
    sig = g.node("InvEditEDICTSigmas", model=g.node("CheckpointLoaderSimple", ckpt_name=CKPT).out(0), steps=4,
                 schedule="normal", strength=value)
    g.node("CaptureForTest", value=sig.out(0), key="s")
    with pytest.raises(PromptError) as e:
        comfy.run_prompt(g.finalize())
    text = str(e.value.details)
    assert f"EDICT Sigmas (InvEdit): strength = {value!r} is not a finite number" in text, text
    assert "give a number between 0.0 and 1.0" in text
    # the bounds of a Float named by validate_inputs are checked here (ComfyUI skips its own check for it)
    g = comfy.graph()
    sig = g.node("InvEditEDICTSigmas", model=g.node("CheckpointLoaderSimple", ckpt_name=CKPT).out(0), steps=4,
                 schedule="normal", strength=1.5)
    g.node("CaptureForTest", value=sig.out(0), key="s")
    with pytest.raises(PromptError) as e:
        comfy.run_prompt(g.finalize())
    assert "strength = 1.5 is outside its range; give a number between 0.0 and 1.0" in str(e.value.details)
