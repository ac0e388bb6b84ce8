"""The trained h-space direction on the real ComfyUI host: h-space Train Direction (CLIP) on the shapes world with the
toy CLIP from models/invedit_clip/, through the stock loaders, the node API and the real executor."""
import math
import os
import shutil

import pytest
import torch

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
CLIP = "shapes-toy-clip"
TRAIN = dict(source_text="a red circle", target_text="a blue circle", init="inverted", steps=10, t_edit=500,
             lambda_clip=0.8, recon_mult=3.0, lr=0.003, epochs=1, batch_size=1, seed=0)


@pytest.fixture(scope="module")
def trained(load_world):
    from harness.shapes import data
    w = load_world("", "a red circle")
    model, vae = w["model"], w["vae"]
    with torch.inference_mode():
        imgs = data.make_batch(4, 1234, colour=0, shape=0).images
        w["lat"] = {"samples": vae.encode(imgs.permute(0, 2, 3, 1))}
        w["before"] = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
        w["out"] = w["C"]["InvEditHSpaceTrainDirection"].execute(model=model, vae=vae, clip_name=CLIP,
                                                                 neutral=w["enc"][""], latent=w["lat"], **TRAIN)
    return w


def sample(w, model, steps=10, seed=3):
    import comfy.sample
    C = w["C"]
    sig = C["BasicScheduler"].execute(w["model"], "ddim_uniform", steps, 1.0)[0]
    lat = torch.zeros(2, 4, 8, 8)
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, comfy.sample.prepare_noise(lat, seed), 1.0,
                                          C["InvEditSamplerAsyrp"].execute(0, 1.0)[0], sig, w["enc"][""],
                                          w["enc"][""], lat, disable_pbar=True, seed=seed)


def apply(w, direction, strength, t_edit=500):
    return w["C"]["InvEditHSpaceApply"].execute(w["model"], direction, strength, 999, t_edit, "asymmetric", "both",
                                                "resize", True)[0]


def test_training_learns_a_direction_and_leaves_the_unet_alone(trained):
    d = trained["out"].args[0]
    meta = d.meta
    assert meta["kind"] == "implicit" and meta["family"] == "SD15" and meta["num_train_steps"] == "10"
    assert float(meta["train_dt"]) == pytest.approx(100.0)  # ddim_uniform, 10 steps: Δt = 100
    first, last = float(meta["loss_first"]), float(meta["loss_last"])
    assert first == pytest.approx(0.8 * 1.0, abs=1e-4)  # f_t ≡ 0 at the start: L_dir = 1, L1 = 0
    assert last < 0.85 * first, (first, last)            # measured: 0.80 -> 0.58
    after = trained["model"].model.diffusion_model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trained["before"].items())
    assert not any(p.requires_grad for p in d.net.parameters())
    assert "loss" in trained["out"].ui.as_dict()["text"][0]


def test_trained_direction_is_identity_at_strength_zero_and_grows_with_strength(trained):
    d = trained["out"].args[0]
    stock = sample(trained, trained["model"])
    assert torch.equal(sample(trained, apply(trained, d, 0.0)), stock)
    one, two = (sample(trained, apply(trained, d, s)) for s in (1.0, 2.0))
    assert (one - stock).abs().mean() > 1e-3 and (two - stock).abs().mean() > (one - stock).abs().mean()


def test_trained_direction_file_round_trip_and_combination(trained):
    import folder_paths
    C, d = trained["C"], trained["out"].args[0]
    C["InvEditHSpaceSave"].execute(d, "test_trained_f")
    path = folder_paths.get_full_path_or_raise("hspace_directions", "test_trained_f.safetensors")
    try:
        loaded = C["InvEditHSpaceLoad"].execute("test_trained_f.safetensors")[0]
        assert loaded.meta["src_text"] == "a red circle" and loaded.train_dt == d.train_dt
        assert torch.equal(sample(trained, apply(trained, loaded, 1.0)), sample(trained, apply(trained, d, 1.0)))
        half = C["InvEditHSpaceCombine"].execute(d, 0.5, loaded, 0.5)[0]  # interpolating a direction with itself
        # ½·f + ½·f = f in floating point, and each trained term is step-scaled by its own Δt_train: exact
        assert torch.equal(sample(trained, apply(trained, half, 1.0)), sample(trained, apply(trained, d, 1.0)))
        with pytest.raises(ValueError, match="save its parts"):
            C["InvEditHSpaceSave"].execute(half, "test_composite")
    finally:
        os.remove(path)


def train_call(w, **kw):
    args = dict(model=w["model"], vae=w["vae"], clip_name=CLIP, neutral=w["enc"][""], latent=w["lat"], **TRAIN)
    args.update(kw)
    with torch.inference_mode():
        return w["C"]["InvEditHSpaceTrainDirection"].execute(**args)


def test_bad_settings_are_refused_with_the_fix(trained):
    with pytest.raises(ValueError, match="lower t_edit"):
        train_call(trained, steps=2, t_edit=998)
    with pytest.raises(ValueError, match="init inverted needs images"):
        train_call(trained, latent={"samples": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(ValueError, match="no CLIP folder 'nope'"):
        train_call(trained, clip_name="nope")
    with pytest.raises(ValueError, match="no U-Net middle block|flow-matching"):
        train_call(trained, model=trained["C"]["ModelSamplingSD3"]().patch(trained["model"], 3.0)[0])


def test_a_clip_folder_with_pickled_weights_is_refused(trained):
    import folder_paths
    root = folder_paths.get_folder_paths("invedit_clip")[0]
    bad = os.path.join(root, "test_pickled_clip")
    os.makedirs(bad, exist_ok=True)
    try:
        shutil.copy(os.path.join(root, CLIP, "config.json"), bad)
        with open(os.path.join(bad, "pytorch_model.bin"), "wb") as f:
            f.write(b"\x80\x04pickle")
        with pytest.raises(ValueError, match="pickled .bin weights are refused"):
            train_call(trained, clip_name="test_pickled_clip")
    finally:
        shutil.rmtree(bad)


def test_training_honours_interrupt(trained):
    import comfy.model_management as mm
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            train_call(trained, init="random", latent={"samples": torch.zeros(1, 4, 8, 8)})
    finally:
        mm.interrupt_current_processing(False)


def test_local_clip_sees_the_colour_change_and_passes_gradients(comfy):
    """The loss's CLIP: E_I(blue circles) − E_I(red circles) points along ΔT('a red circle' → 'a blue circle'), and the
    directional loss has a gradient with respect to the images."""
    from harness.paths import BASE
    from harness.shapes import data
    losses = comfy.pack_module("losses.directional")
    clip = comfy.pack_module("losses.clip").LocalCLIP(BASE / "models" / "invedit_clip" / CLIP)
    red = data.make_batch(8, 5, colour=0, shape=0).images
    blue = red.clone()
    blue_mask = (red - data.RGB[0].view(1, 3, 1, 1)).abs().sum(1, keepdim=True) < 0.05
    blue = torch.where(blue_mask, data.RGB[2].view(1, 3, 1, 1).expand_as(red), red).requires_grad_(True)
    text = clip.text_direction("a red circle", "a blue circle")
    loss = losses.directional_clip_loss(clip.image_features(blue), clip.image_features(red), text)
    loss.backward()
    assert float(loss.detach()) < 0.8 and blue.grad is not None and blue.grad.abs().sum() > 0
    wrong = losses.directional_clip_loss(clip.image_features(red), clip.image_features(blue.detach()), text)
    assert float(wrong) > 1.2  # the reverse change points against ΔT


def test_training_through_the_real_executor(comfy, captured, example_image_name):
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name=CKPT)
    neutral = g.node("CLIPTextEncode", clip=ck.out(1), text="")
    img = g.node("LoadImage", image=example_image_name)
    lat = g.node("VAEEncode", pixels=img.out(0), vae=ck.out(2))
    tr = g.node("InvEditHSpaceTrainDirection", model=ck.out(0), vae=ck.out(2), clip_name=CLIP, neutral=neutral.out(0),
                latent=lat.out(0), **dict(TRAIN, steps=6))
    m = g.node("InvEditHSpaceApply", model=ck.out(0), direction=tr.out(0), strength=1.0, t_start=999, t_edit=500,
               mode="asymmetric", apply_to="both", spatial_mode="resize", step_scaling=True)
    g.node("CaptureForTest", value=tr.out(0), key="direction")
    g.node("CaptureForTest", value=m.out(0), key="model")
    outputs = comfy.run_prompt(g.finalize())
    d = captured["direction"]
    assert d.meta["kind"] == "implicit" and float(d.meta["loss_last"]) < float(d.meta["loss_first"])
    assert any("trained f_t" in t for o in outputs.values() for t in o.get("text", []))


def estimate(w, metric="auto", **kw):
    args = dict(model=w["model"], vae=w["vae"], latent=w["lat"], neutral=w["enc"][""], steps=10, metric=metric,
                edit_threshold=0.33, boost_threshold=1.2, text_cosine=1.0)
    args.update(kw)
    with torch.inference_mode():
        return w["C"]["InvEditHSpaceEstimateIntervals"].execute(**args)


def test_interval_estimator_falls_back_to_the_documented_defaults(trained, monkeypatch):
    import json
    from harness import host
    metrics = host.pack_module("metrics")
    monkeypatch.setattr(metrics, "local_lpips", lambda device: (None, "the lpips package is not installed"))
    out = estimate(trained)
    assert out.args[:2] == (650, 200) and json.loads(out.args[2])["source"] == "defaults"
    assert "not installed" in out.ui.as_dict()["text"][0]
    assert estimate(trained, "defaults").args[:2] == (650, 200)


def test_interval_estimator_reads_the_measured_curves(trained, monkeypatch):
    """With a perceptual metric (here a stand-in: mean absolute pixel difference), t_edit / t_boost are the first t of
    the inversion whose mean distances reach the thresholds, and the distances grow with t."""
    import json
    from harness import host
    metrics = host.pack_module("metrics")
    calls = []

    def fake(device):
        def distance(a, b):
            calls.append(a.shape)
            return (a - b).abs().mean(dim=(1, 2, 3))
        return distance, ""
    monkeypatch.setattr(metrics, "local_lpips", fake)
    t_edit, t_boost, curves = estimate(trained, edit_threshold=0.05, boost_threshold=0.2).args
    c = json.loads(curves)
    assert c["source"] == "lpips" and len(c["t"]) == 10 and c["t"] == sorted(c["t"]) and calls
    assert c["lpips_x0_P_t"][-1] > c["lpips_x0_P_t"][0] and c["lpips_x0_x_t"][-1] > c["lpips_x0_x_t"][0]
    first = next((t for t, v in zip(c["t"], c["lpips_x0_P_t"]) if v >= 0.05), c["t"][-1])
    assert t_edit == first and t_boost <= t_edit


def test_training_pushes_every_step_to_the_live_chart(trained, monkeypatch):
    """Each optimiser step goes to the chart on the running node as an 'invedit.loss' message (to the client that
    queued the prompt), in order, and the node's ui output carries the same history."""
    import server
    from comfy_execution.utils import CurrentNodeContext

    class FakeServer:
        client_id = "client-1"
        sent = []

        def send_sync(self, event, data, sid=None):
            self.sent.append((event, data, sid))
    fake = FakeServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    with CurrentNodeContext("prompt-1", "17"):
        out = train_call(trained, steps=4, t_edit=250)
    history = out.args[1]
    msgs = [d for e, d, sid in fake.sent if e == "invedit.loss" and sid == "client-1"]
    n = 4 * 3  # 4 training images × the 3 steps of a 4-step schedule with t ≥ 250
    assert len(msgs) == len(history.values) == n and [m["step"] for m in msgs] == list(range(n))
    assert [m["value"] for m in msgs] == history.values and all(m["node"] == "17" for m in msgs)
    assert all(m["expected"] == n and m["prompt_id"] == "prompt-1" for m in msgs)
    assert out.ui.as_dict()["invedit_loss"][0]["values"] == history.values


def test_the_official_loss_takes_the_real_image_as_clip_source(trained, monkeypatch):
    """Issue 24, item 5: loss "official" (diffusion_latent.py): −log((2 − L_dir)/2) with x0, the training image, as
    CLIP's source, embedded once per start (init inverted: the VAE decode of the latent; init random: of the plain
    DDIM sample of the same noise); the paper's loss takes P_t^src of every step."""
    from harness.paths import BASE
    from harness import host
    adapter = host.pack_module("adapters.hspace_train")
    seen = []
    real = adapter.directional_clip_loss

    def spy(edit, source, text):
        seen.append(source.detach().clone())
        return real(edit, source, text)
    monkeypatch.setattr(adapter, "directional_clip_loss", spy)
    out = train_call(trained, loss="official", steps=4, t_edit=250)
    d = out.args[0]
    assert d.meta["loss"] == "official" and d.meta["prompt_templates"] == "imagenet (79)"
    assert len(seen) == 4 * 3  # 4 images × 3 steps, one source embedding per image, the same at each of its steps
    assert all(torch.equal(seen[3 * k], seen[3 * k + j]) for k in range(4) for j in (1, 2))
    clip = host.pack_module("losses.clip").LocalCLIP(BASE / "models" / "invedit_clip" / CLIP)
    with torch.no_grad():
        x0 = trained["vae"].decode(trained["lat"]["samples"]).permute(0, 3, 1, 2)  # clamped to [0, 1]: ≈ decode_01
        want = clip.image_features(x0)
    for k in range(4):
        assert float((seen[3 * k][0].cpu() - want[k].cpu()).abs().max()) < 2e-3
    first = out.args[1].values[0]
    assert 0.0 < first < 0.8 * 1.0 and first != pytest.approx(0.8)  # not L_dir = 1 at the identity: x0 ≠ P_t
    seen.clear()
    train_call(trained, steps=4, t_edit=250)  # the paper's: P_t^src, a new one at every step
    assert len(seen) == 12 and not torch.equal(seen[0], seen[1])
    seen.clear()
    out = train_call(trained, loss="official", init="random", latent={"samples": torch.zeros(2, 4, 8, 8)}, steps=4,
                     t_edit=250, seed=5)
    assert len(seen) == 6 and torch.equal(seen[0], seen[2]) and not torch.equal(seen[0], seen[3])
    assert out.args[0].meta["init"] == "random" and math.isfinite(out.args[1].values[-1])


def test_the_text_direction_averages_the_prompt_templates_by_default(trained, monkeypatch):
    """Issue 24, item 7: ΔT over the official 79 templates (losses.directional), or the bare texts when
    prompt_templates is off; the node's file records which."""
    from harness import host
    lc = host.pack_module("losses.clip").LocalCLIP
    calls = []
    real = lc.text_direction

    def spy(self, source, target, templates=host.pack_module("losses.directional").IMAGENET_TEMPLATES):
        calls.append(templates)
        return real(self, source, target, templates)
    monkeypatch.setattr(lc, "text_direction", spy)
    train_call(trained, steps=2, t_edit=500)
    out = train_call(trained, steps=2, t_edit=500, prompt_templates=False)
    assert len(calls) == 2 and len(calls[0]) == 79 and calls[1] is None
    assert out.args[0].meta["prompt_templates"] == "none"
