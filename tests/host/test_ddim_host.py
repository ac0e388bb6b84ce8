"""DDIM inversion on the real ComfyUI host: stock loaders, stock samplers, the pack's nodes, the real executor."""
import re

import pytest
import torch

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"  # the name a user's workflow has; the harness maps it to the tiny model


def inversion_graph(comfy, image, steps=30, cfg=1.0, regen="SamplerCustom", via_sampler=False, scheduler="normal",
                    ckpt=CKPT, denoise=1.0):
    """LoadImage -> VAEEncode -> invert -> stock regeneration -> report; captures source, noise and reconstruction."""
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text="a red circle and a blue square")
    neg = g.node("CLIPTextEncode", clip=ck.out(1), text="blurry")
    img = g.node("LoadImage", image=image)
    src = g.node("VAEEncode", pixels=img.out(0), vae=ck.out(2))
    sig = g.node("BasicScheduler", model=ck.out(0), scheduler=scheduler, steps=steps, denoise=denoise)
    if via_sampler:
        guider = g.node("CFGGuider", model=ck.out(0), positive=pos.out(0), negative=neg.out(0), cfg=cfg)
        inv = g.node("SamplerCustomAdvanced", noise=g.node("DisableNoise").out(0), guider=guider.out(0),
                     sampler=g.node("InvEditSamplerDDIMInversion").out(0), sigmas=sig.out(0),
                     latent_image=src.out(0))
    else:
        inv = g.node("InvEditDDIMInvert", model=ck.out(0), positive=pos.out(0), negative=neg.out(0),
                     latent=src.out(0), sigmas=sig.out(0), cfg=cfg)
    if regen == "SamplerCustom":
        rec = g.node("SamplerCustom", model=ck.out(0), add_noise=False, noise_seed=0, cfg=cfg, positive=pos.out(0),
                     negative=neg.out(0), sampler=g.node("KSamplerSelect", sampler_name="euler").out(0),
                     sigmas=sig.out(0), latent_image=inv.out(0))
    else:
        rec = g.node("KSamplerAdvanced", model=ck.out(0), add_noise="disable", noise_seed=0, steps=steps, cfg=cfg,
                     sampler_name="ddim", scheduler=scheduler, positive=pos.out(0), negative=neg.out(0),
                     latent_image=inv.out(0), start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable")
    report = g.node("InvEditReconstructionReport", original=src.out(0), reconstruction=rec.out(0), vae=ck.out(2),
                    source_image=img.out(0))
    for key, node in (("source", src), ("noise", inv), ("reconstruction", rec)):
        g.node("CaptureForTest", value=node.out(0), key=key)
    return g.finalize(), report.id


def run(comfy, captured, image, **kw):
    prompt, report_id = inversion_graph(comfy, image, **kw)
    outputs = comfy.run_prompt(prompt)
    text = outputs[report_id]["text"][0]
    return {k: v for k, v in captured.items()}, text


def rms(t):
    return float(t.double().pow(2).mean().sqrt())


def test_pack_registers_its_nodes(comfy):
    import nodes
    from harness import pack_node_ids
    ids = pack_node_ids()
    assert {"InvEditDDIMInvert", "InvEditSamplerDDIMInversion", "InvEditReconstructionReport"} <= set(ids)
    for i in ids:
        assert i in nodes.NODE_CLASS_MAPPINGS
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[i].endswith("(InvEdit)")


def test_invert_then_regenerate_at_cfg1_reproduces_the_latent(comfy, captured, example_image_name):
    """Tolerance: DDIM inversion evaluates ε at the current latent instead of the next one, an error of first order
    in the step. So (a) the round trip must end far closer to the source than the noise it went to: ≤ 3 % of
    ‖noise − source‖ at 30 steps, and (b) doubling the steps must shrink the error clearly (≥ 1.4×; 2× in the
    asymptotic first-order limit, which 30 → 60 steps of a trained model have not reached). Measured with the
    shapes-world model: 1.1 % at 30 steps, 0.54 % at 60, a 1.64× drop; pixel PSNR 32.8 dB at 30 steps."""
    c30, text = run(comfy, captured, example_image_name, steps=30)
    src, noise, rec = c30["source"]["samples"], c30["noise"]["samples"], c30["reconstruction"]["samples"]
    assert noise.shape == src.shape
    travelled = rms(noise - src)
    assert travelled > 0.5 * rms(src)  # the inversion really moved the latent
    err30 = rms(rec - src)
    assert err30 < 0.03 * travelled, (err30, travelled)
    c60, _ = run(comfy, captured, example_image_name, steps=60)
    err60 = rms(c60["reconstruction"]["samples"] - c60["source"]["samples"])
    assert err30 / err60 > 1.4, (err30, err60)
    # the report shows the same figure the test computed
    mse = float(re.search(r"latent MSE\s+(\S+)", text).group(1))
    assert mse == pytest.approx(err30 ** 2, rel=1e-3)
    assert "pixel PSNR" in text and "cfg 1.0" in text


def test_ksampler_advanced_regenerates_the_same_as_sampler_custom(comfy, captured, example_image_name):
    a, _ = run(comfy, captured, example_image_name, steps=12)
    b, _ = run(comfy, captured, example_image_name, steps=12, regen="KSamplerAdvanced")
    # the same sampler over the same ops and batch shapes: bit-identical on any CPU
    assert torch.equal(a["reconstruction"]["samples"], b["reconstruction"]["samples"])


def test_cfg7_inversion_reports_a_larger_error(comfy, captured, example_image_name):
    _, t1 = run(comfy, captured, example_image_name, steps=20, cfg=1.0)
    _, t7 = run(comfy, captured, example_image_name, steps=20, cfg=7.0)
    mse = [float(re.search(r"latent MSE\s+(\S+)", t).group(1)) for t in (t1, t7)]
    assert mse[1] > 2 * mse[0], (t1, t7)
    assert "cfg 7.0" in t7


def test_sampler_node_equals_invert_node(comfy, captured, example_image_name):
    a, _ = run(comfy, captured, example_image_name, steps=10, cfg=3.0)
    b, _ = run(comfy, captured, example_image_name, steps=10, cfg=3.0, via_sampler=True)
    assert torch.equal(a["noise"]["samples"], b["noise"]["samples"])  # one sampler object, two ways to run it


@pytest.mark.parametrize("scheduler", ["karras", "ddim_uniform", "sgm_uniform"])
def test_any_scheduler_round_trips(comfy, captured, example_image_name, scheduler):
    c, _ = run(comfy, captured, example_image_name, steps=30, scheduler=scheduler)
    src, noise, rec = c["source"]["samples"], c["noise"]["samples"], c["reconstruction"]["samples"]
    assert rms(rec - src) < 0.1 * rms(noise - src)


def test_inverted_latent_carries_its_settings(comfy, captured, example_image_name):
    c, _ = run(comfy, captured, example_image_name, steps=8, cfg=2.5)
    meta = c["noise"]["invedit_inversion"]
    assert meta["method"] == "ddim" and meta["cfg"] == 2.5 and meta["model_family"] == "SD15"
    assert len(meta["sigmas"]) == 9 and meta["sigmas"][-1] == 0.0
    assert meta["latent_shape"] == list(c["source"]["samples"].shape)


SD3 = "sd3.5_medium.safetensors"  # the name an SD3 user has; the harness maps it to the SD3 shapes world


def test_a_flow_model_inverts_and_the_stock_sampler_regenerates_it(comfy, captured, example_image_name):
    """The SD3 world (a flow-matching MMDiT) at cfg 1, denoise 0.8 of the simple schedule: the stock SamplerCustom
    (euler, no added noise, the same sigmas) brings the inverted latent back far closer to the source than the
    noise it went to, and the error shrinks with more steps (first order, as for SD1.5)."""
    c20, text = run(comfy, captured, example_image_name, steps=20, ckpt=SD3, scheduler="simple", denoise=0.8)
    src, noise, rec = c20["source"]["samples"], c20["noise"]["samples"], c20["reconstruction"]["samples"]
    assert src.shape[1] == 16 and noise.shape == src.shape
    travelled = rms(noise - src)
    assert travelled > 0.3 * rms(src)
    err20 = rms(rec - src)
    assert err20 < 0.05 * travelled, (err20, travelled)
    c40, _ = run(comfy, captured, example_image_name, steps=40, ckpt=SD3, scheduler="simple", denoise=0.8)
    err40 = rms(c40["reconstruction"]["samples"] - c40["source"]["samples"])
    assert err20 / err40 > 1.4, (err20, err40)
    assert "pixel PSNR" in text
    assert c20["noise"]["invedit_inversion"]["model_family"] == "SD3"


def test_a_flow_schedule_reaching_pure_noise_is_refused_with_a_clear_error(comfy, example_image_name):
    """At σ = 1 the stock samplers start from (1 − σ)·latent = 0 without added noise: the inverter says so."""
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=CKPT)
    flow = g.node("ModelSamplingSD3", model=ck.out(0), shift=3.0)  # turns the model into a flow-matching one
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text="x")
    src = g.node("VAEEncode", pixels=g.node("LoadImage", image=example_image_name).out(0), vae=ck.out(2))
    sig = g.node("BasicScheduler", model=flow.out(0), scheduler="simple", steps=4, denoise=1.0)
    inv = g.node("InvEditDDIMInvert", model=flow.out(0), positive=pos.out(0), negative=pos.out(0),
                 latent=src.out(0), sigmas=sig.out(0), cfg=1.0)
    g.node("CaptureForTest", value=inv.out(0), key="x")
    with pytest.raises(comfy.PromptError, match="reaches σ = 1 .*use denoise below 1"):
        comfy.run_prompt(g.finalize())


def test_mismatched_latent_channels_are_refused(comfy):
    import nodes
    model = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)[0]
    inv = nodes.NODE_CLASS_MAPPINGS["InvEditDDIMInvert"]
    with torch.inference_mode(), pytest.raises(ValueError, match=r"\[B, 4, H, W\]"):
        inv.execute(model=model, positive=[], negative=[], latent={"samples": torch.ones(1, 16, 8, 8)},
                    sigmas=torch.tensor([14.6, 1.0, 0.0]), cfg=1.0)


def test_report_refuses_mismatched_inputs(comfy):
    import nodes
    rep = nodes.NODE_CLASS_MAPPINGS["InvEditReconstructionReport"]
    a, b = {"samples": torch.zeros(1, 4, 8, 8)}, {"samples": torch.zeros(1, 4, 8, 16)}
    with pytest.raises(ValueError, match="differ in shape"):
        rep.execute(original=a, reconstruction=b)
    with pytest.raises(ValueError, match="both a VAE and the source image"):
        rep.execute(original=a, reconstruction=a, source_image=torch.zeros(1, 64, 64, 3))


def test_report_refuses_a_reconstruction_of_another_latent(comfy):
    import nodes
    rep = nodes.NODE_CLASS_MAPPINGS["InvEditReconstructionReport"]
    rec = {"samples": torch.zeros(1, 4, 8, 8), "invedit_inversion": {"latent_shape": [2, 4, 8, 8]}}
    with pytest.raises(ValueError, match=r"inversion of a \[2, 4, 8, 8\] latent"):
        rep.execute(original={"samples": torch.zeros(1, 4, 8, 8)}, reconstruction=rec)


def test_report_refuses_latents_the_vae_cannot_decode(comfy):
    """Issue 30, item 4: SD3 latents (16 channels) and the SD1.5 VAE (4) gave a raw convolution error."""
    import nodes
    rep = nodes.NODE_CLASS_MAPPINGS["InvEditReconstructionReport"]
    vae = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)[2]
    lat = {"samples": torch.zeros(1, 16, 8, 8)}
    with torch.inference_mode(), pytest.raises(ValueError, match=r"Reconstruction Report \(InvEdit\): the latents have 16 "
                                                                 r"channels .* but the VAE decodes 4-channel latents; "
                                                                 r"connect the VAE of the model that made them"):
        rep.execute(original=lat, reconstruction=lat, vae=vae, source_image=torch.zeros(1, 64, 64, 3))


def test_inversion_honours_interrupt(assert_interrupts):
    assert_interrupts("InvEditDDIMInvert", cfg=1.0)
