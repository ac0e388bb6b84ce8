"""DOODL on the real ComfyUI host: the shapes-world checkpoint through the stock loaders, the colour classifier and the
toy CLIP as losses, the optimiser node in-process and through the real executor."""
import os

import pytest
import torch

from host_helpers import stock_ksampler

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
FAST = dict(seed=1, steps=6, cfg=3.0, mix_p=0.93, iterations=3, lr=300.0, grad_clip=0.02, momentum=0.9,
            perturb_std=1e-4, keep="last", backprop="reversible", pair_steps="shared")


@pytest.fixture(scope="module")
def w(load_world):
    w = load_world("a circle", "", "a red circle")
    with torch.inference_mode():
        w["loss"] = w["C"]["InvEditDOODLClassifierLoss"].execute(
            classifier="shapes_colour.safetensors", architecture="small_cnn", target="blue", num_classes=0,
            normalisation="none", mode="cross_entropy", weight=1.0, crops=4, crop_power=0.3, input_size=64).args[0]
    return w


def optimize(w, latent=None, prompt="a circle", **kw):
    import nodes
    args = dict(FAST, **kw)
    latent = latent or nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    with torch.inference_mode():
        return w["C"]["InvEditDOODLOptimize"].execute(model=w["model"], positive=w["enc"][prompt],
                                                       negative=w["enc"][""], vae=w["vae"], loss=w["loss"],
                                                       latent=latent, **args)


def stock_sample(w):
    return stock_ksampler(w, 6)


def test_generation_lowers_the_classifier_loss_and_the_model_still_samples_normally(w):
    before = stock_sample(w)
    out = optimize(w, iterations=4)
    losses = out.args[2].values
    assert len(losses) == 5 and all(map(lambda v: v == v, losses))  # 4 updates + the final evaluation, no NaN
    assert losses[-1] < losses[0], losses  # measured: 9.340 -> 9.267
    assert out.args[0]["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out.args[0]["samples"]).all()
    assert torch.equal(stock_sample(w), before)  # the shared model samples bit-identically after the node
    assert "loss" in out.ui.as_dict()["text"][0]


def test_the_optimised_pair_regenerates_the_result_exactly(w):
    out = optimize(w, iterations=2)
    with torch.inference_mode():
        regen = w["C"]["InvEditEDICTRegenerate"].execute(model=w["model"], positive=w["enc"]["a circle"],
                                                         negative=w["enc"][""], pair=out.args[1], cfg=3.0,
                                                         mix_p=0.93, leapfrog=True, official_input_scaling=True)[0]
    assert torch.equal(regen["samples"], out.args[0]["samples"])  # the same chain from the same float64 pair


def test_flow_model_generation_lowers_the_loss_and_its_pair_regenerates_exactly(w):
    """DOODL through the flow chain of the SD3 world (simple schedule, its own shift): the classifier loss falls and
    the optimised pair regenerates the result bit-equal with EDICT Regenerate."""
    import nodes
    sd3, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("sd3.5_medium.safetensors")[:3]
    pos, neg = (nodes.CLIPTextEncode().encode(clip, t)[0] for t in ("a circle", ""))
    with torch.inference_mode():
        lat = nodes.NODE_CLASS_MAPPINGS["EmptySD3LatentImage"]().generate(64, 64, 1)[0]
        out = w["C"]["InvEditDOODLOptimize"].execute(model=sd3, positive=pos, negative=neg, vae=vae, loss=w["loss"],
                                                      latent=lat, **dict(FAST, iterations=4))
        pair = out.args[1]
        assert pair["invedit_inversion"]["model_family"] == "SD3" and pair["invedit_inversion"]["sigmas"][0] == 1.0
        regen = w["C"]["InvEditEDICTRegenerate"].execute(model=sd3, positive=pos, negative=neg, pair=pair, cfg=3.0,
                                                         mix_p=0.93, leapfrog=True, official_input_scaling=True)[0]
    losses = out.args[2].values
    assert out.args[0]["samples"].shape == (1, 16, 8, 8) and losses[-1] < losses[0], losses
    assert torch.equal(regen["samples"], out.args[0]["samples"])


def test_same_seed_same_result(w):
    a, b = optimize(w, iterations=1), optimize(w, iterations=1)
    assert torch.equal(a.args[0]["samples"], b.args[0]["samples"]) and a.args[2] == b.args[2]
    assert not torch.equal(optimize(w, iterations=1, seed=2).args[0]["samples"], a.args[0]["samples"])


def test_editing_an_inverted_pair_keeps_it_untied(w, example_image_name):
    import nodes
    C = w["C"]
    with torch.inference_mode():
        img = nodes.LoadImage().load_image(example_image_name)[0]
        src = {"samples": w["vae"].encode(img[..., :3])}
        sig = C["InvEditEDICTSigmas"].execute(w["model"], 6, "official_980_0", 1.0)[0]
        pair = C["InvEditEDICTInvert"].execute(model=w["model"], positive=w["enc"]["a red circle"],
                                               negative=w["enc"][""], latent=src, sigmas=sig, cfg=3.0, mix_p=0.93,
                                               leapfrog=True, official_input_scaling=True, state_dtype="float64")[0]
    out = optimize(w, latent=pair, prompt="a red circle", iterations=0)
    # 0 iterations: the pair is returned unchanged, and the result is the exact reconstruction of the image
    assert torch.equal(out.args[1]["invedit_edict_pair"]["x"], pair["invedit_edict_pair"]["x"])
    assert not torch.equal(out.args[1]["invedit_edict_pair"]["x"], out.args[1]["invedit_edict_pair"]["y"])
    assert torch.equal(out.args[0]["samples"], src["samples"])  # EDICT's exact inverse (as EDICT Regenerate)
    moved = optimize(w, latent=pair, prompt="a red circle", iterations=1)
    assert not torch.equal(moved.args[1]["invedit_edict_pair"]["x"], moved.args[1]["invedit_edict_pair"]["y"])
    changed = dict(pair, samples=pair["samples"] + 0.1)
    with pytest.raises(ValueError, match="not an unchanged EDICT Invert output"):
        optimize(w, latent=changed, prompt="a red circle", iterations=1)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_each_image_of_a_batch_is_optimised_as_it_is_alone(w):
    """Issue 29, item 7: a batch of 2 from one seed (stock noise: the first image's is the seed's noise alone) gives
    a first image equal to that image optimised alone, within the model's batched float32 arithmetic (the relative
    bound of the other inversion and edit nodes, 5e-4); before, the batch shared one loss mean, one norm and one
    perturbation stream (0.128 apart at latent scale 13 after 3 iterations)."""
    import nodes
    for keep in ("last", "best"):
        both = optimize(w, latent=nodes.EmptyLatentImage().generate(64, 64, 2)[0], iterations=3, keep=keep)
        alone = optimize(w, iterations=3, keep=keep)
        assert rel(both.args[0]["samples"][:1], alone.args[0]["samples"]) < 5e-4, keep
        pb, pa = both.args[1]["invedit_edict_pair"], alone.args[1]["invedit_edict_pair"]
        assert rel(pb["x"][:1], pa["x"]) < 5e-4, keep
        assert rel(both.args[0]["samples"][1:], alone.args[0]["samples"]) > 1e-2  # the second image is its own


def test_interrupt_stops_the_optimisation(w):
    import comfy.model_management as mm
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            optimize(w, iterations=2)
    finally:
        mm.interrupt_current_processing(False)


def test_loss_nodes_refuse_bad_input(w, tmp_path):
    import folder_paths
    C = w["C"]
    args = dict(classifier="shapes_colour.safetensors", architecture="small_cnn", target="purple", num_classes=0,
                normalisation="none", mode="cross_entropy", weight=1.0, crops=4, crop_power=0.3, input_size=64)
    with pytest.raises(ValueError, match="not one of the classifier's classes"):
        C["InvEditDOODLClassifierLoss"].execute(**args)
    with pytest.raises(ValueError, match="does not fit a resnet18"):
        C["InvEditDOODLClassifierLoss"].execute(**dict(args, target="blue", architecture="resnet18"))
    root = folder_paths.get_folder_paths("invedit_classifiers")[0]
    bad = os.path.join(root, "test_pickled.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x80\x04pickle")
    try:
        with pytest.raises(ValueError, match="test_pickled.safetensors is a pickle .*never loaded: convert it"):
            C["InvEditDOODLClassifierLoss"].execute(**dict(args, classifier="test_pickled.safetensors", target="0"))
    finally:
        os.remove(bad)
    with pytest.raises(ValueError, match="give a target text or connect reference images"):
        C["InvEditDOODLCLIPLoss"].execute(clip_name="shapes-toy-clip", text=" ", weight=1.0, reduction="min",
                                          crops=4, crop_power=0.3)


def test_clip_losses_prefer_the_described_image(w):
    """The CLIP loss (toy CLIP): a blue circle is closer to 'a blue circle' than a red one; a text target and an
    image target agree on which is closer; an image target's own image is at distance 0."""
    from harness.shapes import data
    C = w["C"]
    red = data.make_batch(4, 3, colour=0, shape=0).images
    blue = data.make_batch(4, 3, colour=2, shape=0).images
    text = C["InvEditDOODLCLIPLoss"].execute(clip_name="shapes-toy-clip", text="a blue circle", weight=1.0,
                                             reduction="mean", crops=0, crop_power=0.3).args[0]
    with torch.inference_mode():
        ref = C["InvEditDOODLCLIPLoss"].execute(clip_name="shapes-toy-clip", text="", weight=1.0, reduction="mean",
                                                crops=0, crop_power=0.3, images=blue[:1].movedim(1, -1)).args[0]
    assert float(text(blue)) < float(text(red))
    assert float(ref(blue[:1])) < 1e-6 < float(ref(red[:1])) and float(ref(blue)) < float(ref(red))


def test_doodl_through_the_real_executor(comfy, captured):
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=CKPT)
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text="a circle")
    neg = g.node("CLIPTextEncode", clip=ck.out(1), text="")
    loss = g.node("InvEditDOODLClassifierLoss", classifier="shapes_colour.safetensors", architecture="small_cnn",
                  target="blue", num_classes=0, normalisation="none", mode="cross_entropy", weight=1.0, crops=4,
                  crop_power=0.3, input_size=64)
    lat = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    opt = g.node("InvEditDOODLOptimize", model=ck.out(0), positive=pos.out(0), negative=neg.out(0), vae=ck.out(2),
                 loss=loss.out(0), latent=lat.out(0), **dict(FAST, iterations=1, steps=4))
    dec = g.node("VAEDecode", samples=opt.out(0), vae=ck.out(2))
    g.node("CaptureForTest", value=dec.out(0), key="image")
    g.node("CaptureForTest", value=opt.out(2), key="history")
    chart = g.node("InvEditLossChart", loss_history=opt.out(2), width=256, height=128, log_scale=False)
    g.node("CaptureForTest", value=chart.out(0), key="chart")
    outputs = comfy.run_prompt(g.finalize())
    assert captured["image"].shape == (1, 64, 64, 3) and len(captured["history"].values) == 2
    assert captured["chart"].shape == (1, 128, 256, 3)
    ui = outputs[opt.id]
    assert ui["invedit_loss"][0]["values"] == captured["history"].values and ui["invedit_loss"][0]["method"] == "DOODL"
    assert any("DOODL" in t for o in outputs.values() for t in o.get("text", []))


def test_one_step_guidance_sampler_is_euler_at_zero_and_lowers_the_loss(w):
    import comfy.sample
    import comfy.samplers
    import nodes
    C = w["C"]
    with torch.inference_mode():
        lat = nodes.EmptyLatentImage().generate(64, 64, 2)[0]["samples"]
        sig = C["BasicScheduler"].execute(w["model"], "ddim_uniform", 8, 1.0)[0]
        noise = comfy.sample.prepare_noise(lat, 4)

        def run(sampler):
            return comfy.sample.sample_custom(w["model"], noise, 3.0, sampler, sig, w["enc"]["a circle"],
                                              w["enc"][""], lat, disable_pbar=True, seed=4)
        plain = run(comfy.samplers.sampler_object("euler"))
        zero = run(C["InvEditDOODLGuidanceSampler"].execute(w["vae"], w["loss"], 0.0, 0)[0])
        guided = run(C["InvEditDOODLGuidanceSampler"].execute(w["vae"], w["loss"], 200.0, 0)[0])
        imgs = [w["vae"].decode(v).movedim(-1, 1) for v in (plain, guided)]
    # DDIM with a zero push vs stock euler: the same step with another order of float32 operations; measured
    # 3.9e-7 of max|x| after 8 steps (a few roundings of 6e-8 per step): bound 1e-5 relative to the latent's scale
    assert float((zero - plain).abs().max()) <= 1e-5 * float(plain.abs().max())
    lp, lg = (float(w["loss"](i, torch.Generator().manual_seed(0))) for i in imgs)
    print(f"one-step guidance, 8 steps at cfg 3: loss {lp:.3f} plain, {lg:.3f} at scale 200")
    assert lg < lp, (lp, lg)


def test_one_step_guidance_differentiates_the_negative_prediction_only(w):
    """The official baseline (DOODL doodl.py, get_generic_cond_fn with one_step_baseline=True) takes the gradient
    through the *unconditional* prediction: at cfg 1 one step's guidance displacement (scale 200 minus scale 0) is
    the same for two positive prompts and changes with the negative. The old baseline differentiated the guider's
    CFG prediction (at cfg 1 the positive's), so its displacement changed with the positive."""
    import comfy.sample
    import nodes
    C = w["C"]
    with torch.inference_mode():
        lat = nodes.EmptyLatentImage().generate(64, 64, 1)[0]["samples"]
        sig = C["BasicScheduler"].execute(w["model"], "ddim_uniform", 8, 1.0)[0][1:3]  # one step inside the chain
        noise = comfy.sample.prepare_noise(lat, 4)

        def run(scale, positive, negative=""):
            sampler = C["InvEditDOODLGuidanceSampler"].execute(w["vae"], w["loss"], scale, 0)[0]
            return comfy.sample.sample_custom(w["model"], noise, 1.0, sampler, sig, w["enc"][positive],
                                              w["enc"][negative], lat, disable_pbar=True, seed=4)

        def displacement(positive, negative=""):
            return run(200.0, positive, negative) - run(0.0, positive, negative)
        a, b = displacement("a circle"), displacement("a red circle")
        other_negative = displacement("a circle", "a red circle")
        plain_gap = float((run(0.0, "a circle") - run(0.0, "a red circle")).norm())
    size = float(a.norm())
    print(f"one-step guidance displacement {size:.3e}: other positive {float((a - b).norm()) / size:.1e}, other "
          f"negative {float((a - other_negative).norm()) / size:.2e} (relative)")
    assert size > 0 and plain_gap > 0
    # the same uncond call and loss backward in both runs; float32 roundings of the step only (measured below 1e-6)
    assert float((a - b).norm()) <= 1e-4 * size, (float((a - b).norm()), size)
    assert float((a - other_negative).norm()) > 0.01 * size


def test_one_step_guidance_under_a_guider_without_negative_differentiates_its_prediction(w):
    """BasicGuider has no negative: the sampler differentiates the guider's own (positive) prediction instead of
    failing, and still lowers the loss."""
    import comfy.sample
    import comfy.samplers
    import nodes
    from comfy_extras.nodes_custom_sampler import Guider_Basic
    C = w["C"]
    with torch.inference_mode():
        lat = nodes.EmptyLatentImage().generate(64, 64, 1)[0]["samples"]
        sig = C["BasicScheduler"].execute(w["model"], "ddim_uniform", 8, 1.0)[0]
        noise = comfy.sample.prepare_noise(lat, 4)

        def run(scale):
            guider = Guider_Basic(w["model"])
            guider.set_conds(w["enc"]["a circle"])
            sampler = C["InvEditDOODLGuidanceSampler"].execute(w["vae"], w["loss"], scale, 0)[0]
            return guider.sample(noise, lat, sampler, sig, disable_pbar=True, seed=4)
        plain, guided = run(0.0), run(200.0)
        lp, lg = (float(w["loss"](w["vae"].decode(v).movedim(-1, 1), torch.Generator().manual_seed(0)))
                  for v in (plain, guided))
    assert torch.isfinite(guided).all() and lg < lp, (lp, lg)


def test_clip_loss_through_a_stock_clip_vision_with_inference_mode_weights(w, tmp_path):
    """An image target through ComfyUI's CLIP_VISION (a tiny random vision tower built the way CLIPVisionLoader builds
    one, weights set under inference mode): the reference image is at distance 0, another image is not, and the
    gradient reaches the generated pixels."""
    from harness.shapes import data
    from host_models import tiny_clip_vision
    cv = tiny_clip_vision(tmp_path)
    with torch.inference_mode():
        blue = data.make_batch(1, 3, colour=2, shape=0).images
        red = data.make_batch(1, 4, colour=0, shape=1).images
        loss = w["C"]["InvEditDOODLCLIPLoss"].execute(clip_name="shapes-toy-clip", text="", weight=1.0,
                                                      reduction="mean", crops=0, crop_power=0.3,
                                                      images=blue.movedim(1, -1), clip_vision=cv).args[0]
    with torch.inference_mode(False):
        gen = red.clone().requires_grad_(True)
        value = loss(gen)
        value.backward()
    assert float(loss(blue)) < 1e-6 < float(value.detach()) and gen.grad.abs().sum() > 0
    with torch.no_grad():  # our out-of-place forward = ComfyUI's CLIP_VISION embedding
        ours = loss.clip.image_features(red)
        theirs = torch.nn.functional.normalize(cv.encode_image(red.movedim(1, -1), crop=True)["image_embeds"], dim=-1)
    torch.testing.assert_close(ours, theirs.float(), rtol=0, atol=2e-2)  # theirs rounds pixels to 8 bits
    with pytest.raises(ValueError, match="has no text tower"):
        w["C"]["InvEditDOODLCLIPLoss"].execute(clip_name="shapes-toy-clip", text="a blue circle", weight=1.0,
                                               reduction="mean", crops=0, crop_power=0.3, clip_vision=cv)


def test_gradient_checkpointing_gives_the_same_result_and_keeps_fewer_activations(w):
    """grad_checkpointing recomputes the U-Net's and the VAE decoder's blocks in the backward passes: the same
    iterates as without (the same arithmetic again), the blocks' forwards restored, fewer activations held."""
    from bench.common import LiveBytes
    unet = w["model"].get_model_object("diffusion_model")
    from harness import host
    # the weights: the shared models' and those of the private copies each run works on (adapters.run)
    weights = host.pack_module("adapters.run").WeightStorages(
        p.untyped_storage().data_ptr() for m in (unet, w["vae"].first_stage_model) for p in m.parameters())
    outs, peaks = {}, {}
    for on in (False, True):
        counter = LiveBytes(distinct=True, exclude=weights)
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            outs[on] = optimize(w, iterations=1, grad_checkpointing=on)
        peaks[on] = counter.peak
    assert torch.allclose(outs[True].args[0]["samples"], outs[False].args[0]["samples"], rtol=1e-5, atol=1e-5)
    assert outs[True].args[2].values == pytest.approx(outs[False].args[2].values, rel=1e-5)
    assert not any("forward" in m.__dict__ for m in (*unet.modules(), *w["vae"].first_stage_model.modules()))
    assert peaks[True] < 0.8 * peaks[False], peaks


def test_block_checkpointing_gives_the_plain_gradient_and_puts_every_forward_back():
    from harness import host
    run = host.pack_module("adapters.run")
    torch.manual_seed(0)
    inner = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh())
    holder = torch.nn.Module()  # no forward: its parent calls its children, as a VAE decoder's ``mid``
    holder.out = torch.nn.Linear(16, 4)
    net = torch.nn.Sequential(torch.nn.ModuleList([inner]), torch.nn.Linear(16, 16), holder)
    own = lambda x: torch.nn.Linear.forward(net[1], x) * 2  # noqa: E731  (a forward already set on the instance)
    net[1].forward = own
    assert run.checkpoint_blocks(net) == [inner[0], inner[1], net[1], holder.out]
    x = torch.randn(3, 8, requires_grad=True)

    def grad():
        return torch.autograd.grad(holder.out(net[1](inner(x))).square().sum(), [x, inner[0].weight])
    plain = grad()
    with run.block_checkpointing(net) as n:
        assert n == 4 and net[1].forward is not own
        checkpointed = grad()
    assert all(torch.equal(a, b) for a, b in zip(plain, checkpointed))
    assert net[1].forward is own and "forward" not in inner[0].__dict__ and "forward" not in holder.out.__dict__
    with run.block_checkpointing(net, enabled=False) as n:
        assert n == 0


def test_block_checkpointing_recomputes_a_block_with_the_options_it_was_given():
    """ComfyUI hands transformer_options down as one dict and changes it while the model runs (the block being run:
    the key of its attention patches); a block recomputed in the backward pass must see what it saw in the forward
    pass, not the dict's last state."""
    from harness import host
    run = host.pack_module("adapters.run")

    class Gate(torch.nn.Module):  # its work depends on the options' current block, as a patch lookup does
        def __init__(self, k):
            super().__init__()
            self.k, self.lin = k, torch.nn.Linear(4, 4)

        def forward(self, x, options):
            return self.lin(x).tanh() if options["block"] == self.k else x * 2

    torch.manual_seed(0)
    gates = torch.nn.ModuleList([Gate(0), Gate(1), Gate(2)])
    x = torch.randn(2, 4, requires_grad=True)

    def grad():
        h, options = x, {}
        for g in gates:
            options["block"] = g.k
            h = g(h, options)
        return torch.autograd.grad(h.square().sum(), [x, *[g.lin.weight for g in gates]])
    plain = grad()
    with run.block_checkpointing(gates):
        checkpointed = grad()
    assert all(torch.equal(a, b) for a, b in zip(plain, checkpointed))
