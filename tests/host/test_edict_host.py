"""EDICT on the real ComfyUI host: stock loaders and samplers, the pack's nodes, the real executor, and tiny SDXL
models (ε and v-prediction) built in the test."""
import logging
import re

import pytest
import torch

from host_models import sdxl_cond, tiny_sdxl

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
SD3 = "sd3.5_medium.safetensors"  # the name an SD3 user has; the harness maps it to the SD3 shapes world
OPTS = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)


def edict_graph(comfy, image, steps=20, schedule="official_980_0", strength=1.0, cfg=3.0, source="a red circle",
                target=None, invert_opts=None, regen_opts=None, regen_sigmas=None, patch=None, ckpt=CKPT):
    """LoadImage -> VAEEncode -> EDICT Sigmas -> EDICT Invert -> EDICT Regenerate -> report; captures the tensors."""
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    model = ck.out(0)
    if patch:
        model = g.node(patch[0], model=model, **patch[1]).out(0)
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text=source)
    neg = g.node("CLIPTextEncode", clip=ck.out(1), text="")
    img = g.node("LoadImage", image=image)
    src = g.node("VAEEncode", pixels=img.out(0), vae=ck.out(2))
    sig = g.node("InvEditEDICTSigmas", model=model, steps=steps, schedule=schedule, strength=strength)
    inv = g.node("InvEditEDICTInvert", model=model, positive=pos.out(0), negative=neg.out(0), latent=src.out(0),
                 sigmas=sig.out(0), cfg=cfg, state_dtype="float64", **(invert_opts or OPTS))
    tgt = pos if target is None else g.node("CLIPTextEncode", clip=ck.out(1), text=target)
    extra = {} if regen_sigmas is None else {"sigmas": g.node("InvEditEDICTSigmas", model=model, **regen_sigmas).out(0)}
    rec = g.node("InvEditEDICTRegenerate", model=model, positive=tgt.out(0), negative=neg.out(0), pair=inv.out(0),
                 cfg=cfg, **(regen_opts or OPTS), **extra)
    report = g.node("InvEditReconstructionReport", original=src.out(0), reconstruction=rec.out(0), vae=ck.out(2),
                    source_image=img.out(0))
    dec = g.node("VAEDecode", samples=rec.out(0), vae=ck.out(2))
    for key, node, slot in (("source", src, 0), ("pair", inv, 0), ("x", rec, 0), ("y", rec, 1), ("image", dec, 0),
                            ("sigmas", sig, 0)):
        g.node("CaptureForTest", value=node.out(slot), key=key)
    return g.finalize(), report.id


def run(comfy, captured, image, **kw):
    prompt, report_id = edict_graph(comfy, image, **kw)
    outputs = comfy.run_prompt(prompt)
    return dict(captured), outputs[report_id]["text"][0]


def maxabs(a, b):
    return float((a.double() - b.double()).abs().max())


def test_edict_nodes_are_registered(comfy):
    import nodes
    for i in ("InvEditEDICTSigmas", "InvEditSamplerEDICT", "InvEditEDICTInvert", "InvEditEDICTRegenerate"):
        assert i in nodes.NODE_CLASS_MAPPINGS and nodes.NODE_DISPLAY_NAME_MAPPINGS[i].endswith("(InvEdit)")


@pytest.mark.parametrize("kw", [
    dict(steps=50, schedule="official_980_0", strength=1.0, cfg=3.0),
    dict(steps=25, schedule="normal", strength=0.8, cfg=7.0),   # odd number of steps used (20 of 25)
    dict(steps=15, schedule="karras", strength=1.0, cfg=1.0,
         invert_opts=dict(mix_p=0.9, leapfrog=False, official_input_scaling=False),
         regen_opts=dict(mix_p=0.9, leapfrog=False, official_input_scaling=False)),
], ids=["official-50-cfg3", "normal-strength0.8-cfg7", "karras-noleapfrog-p0.9"])
def test_invert_then_regenerate_reproduces_the_latent(comfy, captured, example_image_name, kw):
    """The issue's bound is 1e-6 in VAE space; the pack keeps the pair in float64 end to end (LATENT in float32 only
    at the edges), so the round trip is in fact bit-exact."""
    c, text = run(comfy, captured, example_image_name, **kw)
    src, pair, x, y = c["source"]["samples"], c["pair"]["samples"], c["x"]["samples"], c["y"]["samples"]
    assert maxabs(pair, src) > 10.0  # the inversion went far from the image
    assert maxabs(x, src) <= 1e-6 and maxabs(y, src) <= 1e-6, (maxabs(x, src), maxabs(y, src))
    assert float(re.search(r"latent MSE\s+(\S+)", text).group(1)) <= 1e-12
    assert "edict" in text and f"cfg {kw['cfg']}" in text and "float64 state" in text


def test_the_pair_carries_y_and_the_settings(comfy, captured, example_image_name):
    c, _ = run(comfy, captured, example_image_name, steps=10, strength=0.6, cfg=2.0)
    pair = c["pair"]
    meta = pair["invedit_inversion"]
    assert meta["method"] == "edict" and meta["model_family"] == "SD15" and meta["cfg"] == 2.0
    assert meta["p"] == 0.93 and meta["leapfrog"] is True and meta["state_dtype"] == "float64"
    assert len(meta["sigmas"]) == int(10 * 0.6) + 1 and meta["sigmas"] == [float(s) for s in c["sigmas"]]
    assert pair["invedit_edict_y"].shape == pair["samples"].shape
    assert maxabs(pair["invedit_edict_y"], pair["samples"]) > 1e-3  # after inversion x_T != y_T
    assert pair["invedit_edict_pair"]["x"].dtype == torch.float64
    assert "invedit_edict_pair" not in c["x"] and "invedit_edict_y" not in c["x"]  # regenerated latents are plain LATENTs


def test_prompt_swap_edits_colour_and_keeps_the_shape(comfy, captured, example_image_name):
    """Invert 'a red circle' and regenerate with 'a blue circle' (strength 0.8, cfg 3, the paper's edit settings):
    the shapes-world judges must see a blue circle, and the layout must stay close to the source."""
    from harness.paths import BASE
    from harness.shapes import data
    from harness.shapes.models import load_classifier
    from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    c, _ = run(comfy, captured, example_image_name, steps=50, strength=0.8, target="a blue circle")
    img = c["image"].permute(0, 3, 1, 2).clamp(0, 1)
    colour, shape = (load_classifier(BASE / "models" / CLASSIFIER_DIR / f)[0] for f in CLASSIFIERS)
    with torch.no_grad():
        assert data.COLOURS[int(colour(img).argmax(1))] == "blue"
        assert data.SHAPES[int(shape(img).argmax(1))] == "circle"


@pytest.mark.parametrize("change,match", [
    (dict(regen_opts=dict(OPTS, mix_p=0.9)), r"p = 0.93, this node has 0.9"),
    (dict(regen_opts=dict(OPTS, leapfrog=False)), r"leapfrog = True, this node has False"),
    (dict(regen_opts=dict(OPTS, official_input_scaling=False)), "official_input_scaling"),
    (dict(regen_sigmas=dict(steps=12, schedule="official_980_0", strength=1.0)), "SIGMAS differ"),
])
def test_mismatched_settings_are_refused(comfy, captured, example_image_name, change, match):
    with pytest.raises(comfy.PromptError, match=match):
        run(comfy, captured, example_image_name, steps=10, **change)


def test_regenerate_refuses_a_latent_that_is_not_an_edict_pair(comfy):
    import nodes
    model = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)[0]
    regen = nodes.NODE_CLASS_MAPPINGS["InvEditEDICTRegenerate"]
    ddim_like = {"samples": torch.zeros(1, 4, 8, 8), "invedit_inversion": {"method": "ddim"}}
    for latent in ({"samples": torch.zeros(1, 4, 8, 8)}, ddim_like):
        with torch.inference_mode(), pytest.raises(ValueError, match="not an EDICT inversion"):
            regen.execute(model=model, positive=[], negative=[], pair=latent, cfg=3.0, **OPTS)


def test_same_sigmas_connected_explicitly_are_accepted(comfy, captured, example_image_name):
    c, _ = run(comfy, captured, example_image_name, steps=10, regen_sigmas=dict(steps=10, schedule="official_980_0",
                                                                                strength=1.0))
    assert maxabs(c["x"]["samples"], c["source"]["samples"]) <= 1e-6


def test_v_prediction_round_trip(comfy, captured, example_image_name):
    """A v-prediction model (ComfyUI's ModelSamplingDiscrete patch): D is parameterisation-agnostic, so the same
    EDICT code inverts it exactly."""
    c, _ = run(comfy, captured, example_image_name, steps=12, patch=("ModelSamplingDiscrete",
                                                                     dict(sampling="v_prediction", zsnr=False)))
    assert maxabs(c["x"]["samples"], c["source"]["samples"]) <= 1e-6


class Direct:
    """The EDICT nodes called directly (no graph) on the shapes-world SD1.5 model, one prompt for everything."""

    def __init__(self, steps, state_dtype="float64", seed=0):
        import nodes
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)
        self.model, self.C = model, nodes.NODE_CLASS_MAPPINGS
        self.cond = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
        self.src = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed)) * 4}
        with torch.inference_mode():
            sig = self.C["InvEditEDICTSigmas"].execute(model, steps, "official_980_0", 1.0)[0]
            self.pair = self.C["InvEditEDICTInvert"].execute(
                model=model, positive=self.cond, negative=self.cond, latent=self.src, sigmas=sig, cfg=3.0,
                state_dtype=state_dtype, **OPTS)[0]

    def regenerate(self, pair):
        with torch.inference_mode():
            return self.C["InvEditEDICTRegenerate"].execute(model=self.model, positive=self.cond, negative=self.cond,
                                                            pair=pair, cfg=3.0, **OPTS)[0]["samples"]


def test_float32_state_round_trip_is_close_but_not_exact(comfy):
    d = Direct(20, state_dtype="float32", seed=1)
    assert d.pair["invedit_edict_pair"]["x"].dtype == torch.float32
    assert 0 < maxabs(d.regenerate(d.pair), d.src["samples"]) <= 1e-3 * float(d.src["samples"].abs().max())


def test_modified_pair_falls_back_to_the_float32_latents_with_a_warning(comfy, caplog):
    d = Direct(8)
    copied = dict(d.pair, samples=d.pair["samples"].clone())  # same values: still the exact pair
    assert torch.equal(d.regenerate(copied), d.src["samples"])
    with caplog.at_level(logging.WARNING):
        out = d.regenerate(dict(d.pair, samples=d.pair["samples"] + 0.5))
    assert "were changed after inversion" in caplog.text
    assert 1e-4 < maxabs(out, d.src["samples"]) < 5.0


# ---- flow models: the SD3 shapes world (an MMDiT sampled with ModelSamplingSD3, shift 3) ---------------------------


@pytest.mark.parametrize("steps,strength,cfg", [(10, 1.0, 1.0), (25, 1.0, 4.0), (50, 0.8, 3.0)],
                         ids=["10-cfg1", "25-odd-cfg4", "50-strength0.8-cfg3"])
def test_flow_model_round_trip_is_exact(comfy, captured, example_image_name, steps, strength, cfg):
    """EDICT with the flow Euler step on SD3: invert to σ = 1 (or part-way) and regenerate through the real
    executor; the float32 LATENT comes back bit-equal (the pair stays float64 end to end)."""
    c, text = run(comfy, captured, example_image_name, ckpt=SD3, steps=steps, schedule="simple", strength=strength,
                  cfg=cfg)
    src, pair, x, y = c["source"]["samples"], c["pair"]["samples"], c["x"]["samples"], c["y"]["samples"]
    assert c["pair"]["invedit_inversion"]["model_family"] == "SD3" and float(c["sigmas"][0]) <= 1.0
    assert maxabs(pair, src) > 1.0  # the inversion went far from the image
    assert maxabs(x, src) == 0.0 and maxabs(y, src) == 0.0, (maxabs(x, src), maxabs(y, src))
    assert "SD3" in text


def test_flow_model_prompt_swap_edits_the_colour(comfy, captured, example_image_name):
    """'a red circle' inverted on the SD3 world (50 steps, strength 0.8, cfg 3: the paper's edit settings) and
    regenerated as 'a blue circle' turns blue. The toy SD3 world does not keep the shape here (the scorecard's SD3 rows:
    shape kept 50 %), so only the colour is asserted; the reconstruction tests above hold the exactness."""
    from harness.paths import BASE
    from harness.shapes import data
    from harness.shapes.models import load_classifier
    from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    c, _ = run(comfy, captured, example_image_name, ckpt=SD3, steps=50, schedule="simple", strength=0.8,
               target="a blue circle")
    img = c["image"].permute(0, 3, 1, 2).clamp(0, 1)
    colour = load_classifier(BASE / "models" / CLASSIFIER_DIR / CLASSIFIERS[0])[0]
    with torch.no_grad():
        assert data.COLOURS[int(colour(img).argmax(1))] == "blue"


def test_official_schedule_on_a_flow_model_is_the_simple_scheduler(comfy):
    import comfy.samplers
    import nodes
    model = nodes.CheckpointLoaderSimple().load_checkpoint(SD3)[0]
    node = nodes.NODE_CLASS_MAPPINGS["InvEditEDICTSigmas"]
    ms = model.get_model_object("model_sampling")
    got = node.execute(model, 20, "official_980_0", 0.5)[0]
    want = comfy.samplers.calculate_sigmas(ms, "simple", 20)
    assert float(want[0]) == 1.0 and torch.equal(got, want[10:].cpu())


def test_a_vp_schedule_on_a_flow_model_is_refused(comfy, example_image_name):
    """SIGMAS from an SD1.5 model (up to 14.6) given to EDICT Invert on SD3: refused by name, not silently run."""
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=SD3)
    sd15 = g.node("CheckpointLoaderSimple", ckpt_name=CKPT)
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text="a red circle")
    src = g.node("VAEEncode", pixels=g.node("LoadImage", image=example_image_name).out(0), vae=ck.out(2))
    sig = g.node("InvEditEDICTSigmas", model=sd15.out(0), steps=4, schedule="normal", strength=1.0)
    inv = g.node("InvEditEDICTInvert", model=ck.out(0), positive=pos.out(0), negative=pos.out(0),
                 latent=src.out(0), sigmas=sig.out(0), cfg=1.0, state_dtype="float64", **OPTS)
    g.node("CaptureForTest", value=inv.out(0), key="x")
    with pytest.raises(comfy.PromptError, match=r"a flow model's SIGMAS lie in \[0, 1\]"):
        comfy.run_prompt(g.finalize())


def test_a_pair_from_a_vp_model_is_refused_on_a_flow_model(comfy, captured, example_image_name):
    c, _ = run(comfy, captured, example_image_name, steps=4)
    import nodes
    model = nodes.CheckpointLoaderSimple().load_checkpoint(SD3)[0]
    regen = nodes.NODE_CLASS_MAPPINGS["InvEditEDICTRegenerate"]
    with torch.inference_mode(), pytest.raises(ValueError, match="inverted with a SD15 model, this is SD3"):
        regen.execute(model=model, positive=[], negative=[], pair=c["pair"], cfg=3.0, **OPTS)


def sampler_graph(comfy, text, seed, output="x", steps=30, sampler="InvEditSamplerEDICT", batch=4, mix_p=0.93,
                  ckpt=CKPT):
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    guider = g.node("CFGGuider", model=ck.out(0), cfg=5.0,
                    positive=g.node("CLIPTextEncode", clip=ck.out(1), text=text).out(0),
                    negative=g.node("CLIPTextEncode", clip=ck.out(1), text="").out(0))
    if sampler == "InvEditSamplerEDICT":
        smp = g.node(sampler, mix_p=mix_p, leapfrog=True, official_input_scaling=True, state_dtype="float64",
                     output=output)
    else:
        smp = g.node("KSamplerSelect", sampler_name=sampler)
    sig = g.node("InvEditEDICTSigmas", model=ck.out(0), steps=steps, schedule="official_980_0", strength=1.0)
    out = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=seed).out(0), guider=guider.out(0),
                 sampler=smp.out(0), sigmas=sig.out(0),
                 latent_image=g.node("EmptyLatentImage", width=64, height=64, batch_size=batch).out(0))
    g.node("CaptureForTest", value=g.node("VAEDecode", samples=out.out(0), vae=ck.out(2)).out(0), key="image")
    g.node("CaptureForTest", value=out.out(0), key="latent")
    return g.finalize()


@pytest.mark.parametrize("ckpt", [CKPT, SD3], ids=["unet", "sd3"])
def test_edict_sampler_generates_what_the_prompt_asks(comfy, captured, ckpt):
    """The SAMPLER in the stock SamplerCustomAdvanced: 'a blue square' from 4 seeds, judged by the classifiers (on
    the SD3 world the flow chain from σ = 1, the stock EmptyLatentImage widened to 16 channels by ComfyUI)."""
    from harness.paths import BASE
    from harness.shapes import data
    from harness.shapes.models import load_classifier
    from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    comfy.run_prompt(sampler_graph(comfy, "a blue square", seed=3, ckpt=ckpt))
    img = captured["image"].permute(0, 3, 1, 2).clamp(0, 1)
    colour, shape = (load_classifier(BASE / "models" / CLASSIFIER_DIR / f)[0] for f in CLASSIFIERS)
    with torch.no_grad():
        assert (colour(img).argmax(1) == data.COLOURS.index("blue")).float().mean() >= 0.75
        assert (shape(img).argmax(1) == data.SHAPES.index("square")).float().mean() >= 0.75


def test_edict_sampler_outputs_and_the_mixing_layer(comfy, captured):
    """x, y and mean are the two coupled latents and their average; mixing (p = 0.93) keeps x and y much closer
    than no mixing (p = 1), where they drift apart (measured mean |x − y|: 0.83 vs 2.3 at 20 steps, cfg 5)."""
    lat = {}
    for output, p in (("x", 0.93), ("y", 0.93), ("mean", 0.93), ("x", 1.0), ("y", 1.0)):
        comfy.run_prompt(sampler_graph(comfy, "a green triangle", seed=5, output=output, steps=20, batch=1, mix_p=p))
        lat[output, p] = captured["latent"]["samples"].double()
    # x, y and mean are each rounded to float32 (at most 2^-24 of their size each, plus the float32
    # process_latent_out), so the mean of the rounded pair is within a few 2^-24·max|x, y| of the rounded mean
    scale = float(torch.maximum(lat["x", 0.93].abs(), lat["y", 0.93].abs()).max())
    assert float((lat["mean", 0.93] - (lat["x", 0.93] + lat["y", 0.93]) / 2).abs().max()) <= 2 ** -21 * scale
    spread = {p: float((lat["x", p] - lat["y", p]).abs().mean()) for p in (0.93, 1.0)}
    assert 0 < spread[0.93] < 0.6 * spread[1.0], spread


def test_edict_sigmas_node(comfy):
    import nodes
    model = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)[0]
    node = nodes.NODE_CLASS_MAPPINGS["InvEditEDICTSigmas"]
    ms = model.get_model_object("model_sampling")
    s = node.execute(model, 50, "official_980_0", 1.0)[0]
    assert len(s) == 51 and float(s[0]) == float(ms.sigmas[980]) and s[-1] == s[-2] == ms.sigmas[0]
    assert len(node.execute(model, 50, "official_980_0", 0.8)[0]) == 41
    k = node.execute(model, 20, "karras", 0.5)[0]
    assert len(k) == 11 and float(k[-1]) == 0.0
    with pytest.raises(ValueError, match="leaves no step"):
        node.execute(model, 10, "normal", 0.05)


def test_edict_honours_interrupt(assert_interrupts):
    assert_interrupts("InvEditEDICTInvert", cfg=3.0, state_dtype="float64", **OPTS)


# ---- SDXL (tiny, random weights, tests/host_models.py: the latent scale 0.13025, ADM conditioning, family check) --

@pytest.mark.parametrize("v_prediction", [False, True], ids=["eps", "v"])
def test_sdxl_round_trip_and_family_check(comfy, v_prediction):
    import comfy.model_sampling
    import nodes
    C = nodes.NODE_CLASS_MAPPINGS
    model = tiny_sdxl(v_prediction)
    want = comfy.model_sampling.V_PREDICTION if v_prediction else comfy.model_sampling.EPS
    assert isinstance(model.get_model_object("model_sampling"), want)
    pos, neg = sdxl_cond(1), sdxl_cond(2)
    src = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 6}
    with torch.inference_mode():
        sig = C["InvEditEDICTSigmas"].execute(model, 12, "official_980_0", 1.0)[0]
        pair = C["InvEditEDICTInvert"].execute(model=model, positive=pos, negative=neg, latent=src, sigmas=sig,
                                               cfg=4.0, state_dtype="float64", **OPTS)[0]
        assert pair["invedit_inversion"]["model_family"] == "SDXL"
        assert maxabs(pair["samples"], src["samples"]) > 10.0
        x, y = C["InvEditEDICTRegenerate"].execute(model=model, positive=pos, negative=neg, pair=pair, cfg=4.0, **OPTS)
        assert maxabs(x["samples"], src["samples"]) <= 1e-6 and maxabs(y["samples"], src["samples"]) <= 1e-6
        sd15, clip15, _ = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)
        # SDXL prompts on the SD15 model are refused first, by their token width
        with pytest.raises(ValueError, match="width 2048, but SD15 takes 768"):
            C["InvEditEDICTRegenerate"].execute(model=sd15, positive=pos, negative=neg, pair=pair, cfg=4.0, **OPTS)
        # with prompts of its own family, the pair's record of the family refuses it
        pos15 = nodes.CLIPTextEncode().encode(clip15, "a red circle")[0]
        neg15 = nodes.CLIPTextEncode().encode(clip15, "")[0]
        with pytest.raises(ValueError, match="inverted with a SDXL model, this is SD15"):
            C["InvEditEDICTRegenerate"].execute(model=sd15, positive=pos15, negative=neg15, pair=pair, cfg=4.0,
                                                **OPTS)
