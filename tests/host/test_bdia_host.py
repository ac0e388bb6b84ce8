"""BDIA on the real ComfyUI host (issue 28): stock loaders and samplers, the pack's nodes, the real executor; the
shapes world's U-Net (SD1.5 layout, ε) and its SD3 world (MMDiT, flow), round trips bit-exact in the float32 LATENT
at several step counts (odd ones too) and cfg; the SAMPLER under SamplerCustom; refusals by name."""
import logging
import re

import pytest
import torch

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
SD3 = "sd3.5_medium.safetensors"


def bdia_graph(comfy, image, steps=20, schedule="official_980_0", strength=1.0, cfg=3.0, gamma=0.8,
               regen_gamma=None, source="a red circle", target=None, regen_sigmas=None, ckpt=CKPT):
    """LoadImage -> VAEEncode -> EDICT Sigmas -> BDIA Invert -> BDIA Regenerate -> report; captures the tensors."""
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    model = ck.out(0)
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text=source)
    neg = g.node("CLIPTextEncode", clip=ck.out(1), text="")
    img = g.node("LoadImage", image=image)
    src = g.node("VAEEncode", pixels=img.out(0), vae=ck.out(2))
    sig = g.node("InvEditEDICTSigmas", model=model, steps=steps, schedule=schedule, strength=strength)
    inv = g.node("InvEditBDIAInvert", model=model, positive=pos.out(0), negative=neg.out(0), latent=src.out(0),
                 sigmas=sig.out(0), cfg=cfg, gamma=gamma, state_dtype="float64")
    tgt = pos if target is None else g.node("CLIPTextEncode", clip=ck.out(1), text=target)
    extra = {} if regen_sigmas is None else {"sigmas": g.node("InvEditEDICTSigmas", model=model, **regen_sigmas).out(0)}
    rec = g.node("InvEditBDIARegenerate", model=model, positive=tgt.out(0), negative=neg.out(0), pair=inv.out(0),
                 cfg=cfg, gamma=gamma if regen_gamma is None else regen_gamma, **extra)
    report = g.node("InvEditReconstructionReport", original=src.out(0), reconstruction=rec.out(0), vae=ck.out(2),
                    source_image=img.out(0))
    dec = g.node("VAEDecode", samples=rec.out(0), vae=ck.out(2))
    for key, node, slot in (("source", src, 0), ("pair", inv, 0), ("x", rec, 0), ("image", dec, 0),
                            ("sigmas", sig, 0)):
        g.node("CaptureForTest", value=node.out(slot), key=key)
    return g.finalize(), report.id


def run(comfy, captured, image, **kw):
    prompt, report_id = bdia_graph(comfy, image, **kw)
    outputs = comfy.run_prompt(prompt)
    return dict(captured), outputs[report_id]["text"][0]


def test_bdia_nodes_are_registered(comfy):
    import nodes
    for i in ("InvEditSamplerBDIA", "InvEditBDIAInvert", "InvEditBDIARegenerate"):
        assert i in nodes.NODE_CLASS_MAPPINGS and nodes.NODE_DISPLAY_NAME_MAPPINGS[i].endswith("(InvEdit)")


@pytest.mark.parametrize("kw", [
    dict(steps=50, cfg=3.0, gamma=0.8),                                  # the official list, 50 steps
    dict(steps=20, cfg=3.0, gamma=0.5),                                  # the paper's γ where it stays exact
    dict(steps=25, schedule="normal", strength=0.8, cfg=7.0, gamma=0.9),  # 20 of 25 steps, ending at σ = 0
    dict(steps=15, schedule="karras", cfg=1.0, gamma=1.0),               # an odd count, no guidance
], ids=["official-50", "gamma0.5-20", "normal-strength0.8-cfg7", "karras-15-cfg1"])
def test_invert_then_regenerate_is_bit_exact(comfy, captured, example_image_name, kw):
    c, text = run(comfy, captured, example_image_name, **kw)
    src, pair, x = c["source"]["samples"], c["pair"]["samples"], c["x"]["samples"]
    assert float((pair - src).abs().max()) > 5.0  # the inversion went far from the image
    assert torch.equal(x, src), float((x - src).abs().max())
    assert float(re.search(r"latent MSE\s+(\S+)", text).group(1)) == 0.0
    assert "bdia" in text and f"gamma {kw['gamma']}" in text


def test_the_pair_carries_the_next_level_and_the_settings(comfy, captured, example_image_name):
    c, _ = run(comfy, captured, example_image_name, steps=10, strength=0.6, cfg=2.0, gamma=0.7)
    pair = c["pair"]
    meta = pair["invedit_inversion"]
    assert meta["method"] == "bdia" and meta["gamma"] == 0.7 and meta["cfg"] == 2.0
    assert meta["state_dtype"] == "float64" and meta["sigmas"] == [float(s) for s in c["sigmas"]]
    assert pair["invedit_edict_pair"]["x"].dtype == torch.float64
    assert pair["invedit_edict_y"].shape == pair["samples"].shape  # z_{T-1}, one level below z_T
    assert float((pair["invedit_edict_y"] - pair["samples"]).abs().max()) > 1e-2
    assert "invedit_edict_pair" not in c["x"] and "invedit_inversion" in c["x"]


def test_prompt_swap_edits_colour_and_keeps_the_shape(comfy, captured, example_image_name):
    """'a red circle' inverted (20 steps, strength 0.8, cfg 3, the paper's γ 0.5: exact there) and regenerated as
    'a blue circle' (γ ≥ 0.7 turns this circle into a square: samplers/bdia.py)."""
    from harness.paths import BASE
    from harness.shapes import data
    from harness.shapes.models import load_classifier
    from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    c, _ = run(comfy, captured, example_image_name, steps=20, strength=0.8, gamma=0.5, target="a blue circle")
    img = c["image"].permute(0, 3, 1, 2).clamp(0, 1)
    colour, shape = (load_classifier(BASE / "models" / CLASSIFIER_DIR / f)[0] for f in CLASSIFIERS)
    with torch.no_grad():
        assert data.COLOURS[int(colour(img).argmax(1))] == "blue"
        assert data.SHAPES[int(shape(img).argmax(1))] == "circle"


@pytest.mark.parametrize("change,match", [
    (dict(regen_gamma=0.7), r"gamma = 0.8, this node has 0.7"),
    (dict(regen_sigmas=dict(steps=12, schedule="official_980_0", strength=1.0)), "SIGMAS differ"),
])
def test_mismatched_settings_are_refused(comfy, captured, example_image_name, change, match):
    with pytest.raises(comfy.PromptError, match=match):
        run(comfy, captured, example_image_name, steps=10, **change)


def test_pairs_of_the_other_method_are_refused_by_name(comfy, captured, example_image_name):
    import nodes
    c, _ = run(comfy, captured, example_image_name, steps=6)
    model = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)[0]
    C = nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode(), pytest.raises(ValueError, match="not an EDICT inversion .it is a bdia inversion"):
        C["InvEditEDICTRegenerate"].execute(model=model, positive=[], negative=[], pair=c["pair"], cfg=3.0,
                                            mix_p=0.93, leapfrog=True, official_input_scaling=True)
    for latent in ({"samples": torch.zeros(1, 4, 8, 8)}, {"samples": torch.zeros(1, 4, 8, 8),
                                                          "invedit_inversion": {"method": "edict"}}):
        with torch.inference_mode(), pytest.raises(ValueError, match="not a BDIA inversion"):
            C["InvEditBDIARegenerate"].execute(model=model, positive=[], negative=[], pair=latent, cfg=3.0, gamma=0.8)


def test_many_steps_at_a_small_gamma_warn_and_an_overflow_is_refused_before_any_work(comfy, captured,
                                                                                    example_image_name, caplog):
    with caplog.at_level(logging.WARNING):
        c, _ = run(comfy, captured, example_image_name, steps=40, gamma=0.5)
    assert "approximate" in caplog.text and "at most 20 steps" in caplog.text
    assert float((c["x"]["samples"] - c["source"]["samples"]).abs().max()) < 1e-2
    with pytest.raises(comfy.PromptError, match="float32 arithmetic"):
        run(comfy, captured, example_image_name, steps=400, gamma=0.1)


def test_sampler_under_samplercustom_generates_with_one_call_a_step(comfy):
    """The SAMPLER in the stock SamplerCustom: a finite 'a red circle' at one model evaluation a step."""
    import nodes
    from harness.paths import BASE
    from harness.shapes import data
    from harness.shapes.models import load_classifier
    from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    C = nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)
    calls = []

    def count(apply_model, args):
        calls.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])
    counted = model.clone()
    counted.set_model_unet_function_wrapper(count)
    with torch.inference_mode():
        pos = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
        neg = nodes.CLIPTextEncode().encode(clip, "")[0]
        sig = C["BasicScheduler"].execute(counted, "normal", 12, 1.0)[0]
        sampler = C["InvEditSamplerBDIA"].execute(gamma=0.5, state_dtype="float64")[0]
        latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
        out = C["SamplerCustom"].execute(model=counted, add_noise=True, noise_seed=7, cfg=5.0, positive=pos,
                                         negative=neg, sampler=sampler, sigmas=sig, latent_image=latent)[0]
        img = vae.decode(out["samples"]).permute(0, 3, 1, 2).clamp(0, 1)
    assert len(calls) == 12  # cond and uncond batched: one evaluation a step
    colour, shape = (load_classifier(BASE / "models" / CLASSIFIER_DIR / f)[0] for f in CLASSIFIERS)
    with torch.no_grad():
        assert data.COLOURS[int(colour(img).argmax(1))] == "red"


# ---- flow models: the SD3 shapes world --------------------------------------------------------------------------

@pytest.mark.parametrize("steps,strength,cfg,gamma", [(10, 1.0, 1.0, 0.5), (25, 1.0, 4.0, 0.8), (50, 0.8, 3.0, 0.8)],
                         ids=["10-cfg1", "25-odd-cfg4", "50-strength0.8-cfg3"])
def test_flow_model_round_trip_is_bit_exact(comfy, captured, example_image_name, steps, strength, cfg, gamma):
    c, text = run(comfy, captured, example_image_name, ckpt=SD3, steps=steps, schedule="simple", strength=strength,
                  cfg=cfg, gamma=gamma)
    src, pair, x = c["source"]["samples"], c["pair"]["samples"], c["x"]["samples"]
    assert c["pair"]["invedit_inversion"]["model_family"] == "SD3"
    assert float((pair - src).abs().max()) > 1.0
    assert torch.equal(x, src), float((x - src).abs().max())
    assert "SD3" in text
