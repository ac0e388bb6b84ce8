"""CASO on the real host (issue 14, first part): a class embedding encoded by the pack equals the stock
CLIPTextEncode of ``embedding:<its file>`` bit for bit, and the text encoder is differentiable in it without
changing its values."""
import math
import os
import re

import pytest
import torch


@pytest.fixture(scope="module")
def w(load_world):
    return load_world("")


def saved(folder_paths, name, tensors):
    from safetensors.torch import save_file
    root = folder_paths.get_folder_paths("embeddings")[0]
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"{name}.safetensors")
    save_file(tensors, path)
    return path


def test_the_pack_encodes_a_class_as_the_stock_encoder_encodes_its_file(w):
    import folder_paths
    import nodes
    from harness import host
    ad = host.pack_module("adapters.caso")
    e = {"clip_l": torch.randn(1, 768, generator=torch.Generator().manual_seed(0))}
    path = saved(folder_paths, "test_caso_class", e)
    try:
        with torch.inference_mode():
            stock = nodes.CLIPTextEncode().encode(w["te"], "embedding:test_caso_class")[0]
            ours = ad.encode_class(w["te"], e, "test")
        assert torch.equal(stock[0][0], ours[0][0]) and stock[0][0].shape == (1, 77, 768)
        assert torch.equal(stock[0][1]["pooled_output"], ours[0][1]["pooled_output"])
        two = {"clip_l": torch.randn(2, 768, generator=torch.Generator().manual_seed(1))}  # two tokens a class
        saved(folder_paths, "test_caso_class", two)
        with torch.inference_mode():
            assert torch.equal(nodes.CLIPTextEncode().encode(w["te"], "embedding:test_caso_class")[0][0][0],
                               ad.encode_class(w["te"], two, "test")[0][0])
    finally:
        os.remove(path)
    with pytest.raises(ValueError, match="has a clip_l text encoder and the embedding has"):
        ad.encode_class(w["te"], {"clip_g": torch.zeros(1, 1280)}, "test")
    with pytest.raises(ValueError, match=r"takes \[n, 768\]"):
        ad.encode_class(w["te"], {"clip_l": torch.zeros(1, 64)}, "test")


def test_the_text_encoder_is_differentiable_in_the_embedding_with_the_same_values(w):
    from harness import host
    ad, clip_ad = host.pack_module("adapters.caso"), host.pack_module("adapters.clip")
    from comfy.clip_model import CLIPLayer
    e = torch.randn(1, 768, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        plain = ad.encode_class(w["te"], {"clip_l": e}, "test")[0][0]
    with torch.inference_mode(False), torch.enable_grad(), clip_ad.differentiable_text_encoder(w["te"]) as te:
        p = torch.nn.Parameter(e.clone())
        cond = ad.class_cond_tensor(te, {"clip_l": p}, "test")  # a private copy of the CLIP
        (cond ** 2).sum().backward()
    assert torch.equal(cond.detach(), plain)
    assert p.grad is not None and float(p.grad.abs().sum()) > 0
    layers = [m for m in w["te"].cond_stage_model.modules() if isinstance(m, CLIPLayer)]
    assert layers and all("forward" not in vars(m) for m in layers)  # the layers' own forward is back


def same(a, b):
    """Bit-equal, NaN included: a weight the checkpoint lacks (the toy CLIP-L's unused text_projection) is ComfyUI's
    uninitialised memory, which may hold NaNs (NaN != NaN for torch.equal)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0, 0.0, 0.0), b.nan_to_num(0.0, 0.0, 0.0))


def training_inputs(w, n, seed):
    """The latents of ``n`` shapes-world images and the colour classifier (its network and as a classifier)."""
    from harness import host
    from harness.paths import BASE
    from harness.shapes import data
    cl, ac = host.pack_module("losses.classifiers"), host.pack_module("artifacts.classifier")
    with torch.inference_mode():
        lat = w["vae"].encode(data.make_batch(n, seed).images.permute(0, 2, 3, 1))
    with torch.inference_mode(False):
        net, classes = ac.load_classifier(BASE / "models/invedit_classifiers/shapes_colour.safetensors", "small_cnn",
                                          None, "test")
    return lat, net, cl.ImageClassifier.network(net, classes)


def test_training_lowers_the_class_loss_and_leaves_every_model_unchanged(w):
    """40 steps on 16 shapes-world images with the colour classifier (4 classes, λ 10, the official step): the class
    loss falls, the classifier labels more of the guided estimates as their class, and the U-Net, VAE, text encoder
    and classifier weights are bit-identical afterwards."""
    from harness import host
    ad, oc = host.pack_module("adapters.caso"), host.pack_module("optim.caso")
    lat, net, clf = training_inputs(w, 16, 77)
    modules = {"unet": w["model"].get_model_object("diffusion_model"), "vae": w["vae"].first_stage_model,
               "text": w["te"].cond_stage_model, "classifier": net}
    before = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in modules.items()}
    s = ad.CASOSettings(config=oc.TrainConfig(steps=40, batch_size=2, scale=10.0, seed=0))
    with torch.inference_mode():
        embs, res = ad.train(w["model"], w["te"], w["vae"], clf, lat, s, "test")
    assert [e.name for e in embs] == ["red", "green", "blue", "yellow"] and embs[0].tokens["clip_l"].shape == (1, 768)
    q = len(res.losses) // 4
    assert sum(res.losses[-q:]) < sum(res.losses[:q]), res.losses
    assert sum(res.hits[-q:]) >= sum(res.hits[:q])
    for k, m in modules.items():
        after = m.state_dict()
        changed = [n for n in before[k] if not same(before[k][n], after[n])]
        assert not changed, (k, changed[:5])
    assert all(p.grad is None for m in modules.values() for p in m.parameters())
    assert ad.training_timestep(0.4, 50) == 401 and ad.training_timestep(0.3, 50) == 301


def test_gradient_checkpointing_trains_the_same_embeddings_with_fewer_activations(w):
    """grad_checkpointing recomputes the text encoder, the U-Net call, the decode and the classifier (and inside them
    the U-Net's and the decoder's blocks) in the backward pass: the same losses and embeddings as without, every
    forward put back, and a tenth of the tensors held for backward at once."""
    from bench.common import LiveBytes
    from harness import host
    ad, oc = host.pack_module("adapters.caso"), host.pack_module("optim.caso")
    lat, _, clf = training_inputs(w, 4, 78)
    runs, peaks = {}, {}
    for on in (False, True):
        s = ad.CASOSettings(config=oc.TrainConfig(steps=3, batch_size=2, scale=10.0, seed=0, checkpointing=on))
        counter = LiveBytes()
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack), torch.inference_mode():
            runs[on] = ad.train(w["model"], w["te"], w["vae"], clf, lat, s, "test")
        peaks[on] = counter.peak
    (plain, rp), (ckpt, rc) = runs[False], runs[True]
    assert rc.losses == pytest.approx(rp.losses, rel=1e-5)
    for a, b in zip(plain, ckpt):
        assert torch.allclose(a.tokens["clip_l"], b.tokens["clip_l"], rtol=1e-5, atol=1e-6)
    unet, vae = w["model"].get_model_object("diffusion_model"), w["vae"].first_stage_model
    assert not any("forward" in m.__dict__ for m in (*unet.modules(), *vae.modules()))
    assert peaks[True] < peaks[False] / 10, peaks


@pytest.fixture(scope="module")
def trained(w):
    from harness.shapes import data
    C = w["C"]
    with torch.inference_mode():
        lat = {"samples": w["vae"].encode(data.make_batch(16, 77).images.permute(0, 2, 3, 1))}
        clf = C["InvEditClassifierLoad"].execute("shapes_colour.safetensors", "small_cnn", 0, "none").args[0]
        out = C["InvEditCASOTrain"].execute(model=w["model"], clip=w["te"], vae=w["vae"], classifier=clf, latent=lat,
                                            attribute="colour", steps=60, batch_size=2, scale=10.0, level=0.4,
                                            lr=0.02, weight_decay=0.005, gamma=0.0, n_tokens=1, init="repo_uniform",
                                            hflip=True, seed=0)
    return out.args[0], clf


def stock_sample(w, model, positive, negative, latent, cfg=3.0, steps=10, on_step=None):
    """The stock euler over the ddim_uniform grid's t 501, 401, …, 1; ``on_step`` gets each step's denoised."""
    import comfy.sample
    import comfy.samplers
    sig = comfy.samplers.calculate_sigmas(w["model"].get_model_object("model_sampling"), "ddim_uniform", steps)
    callback = None if on_step is None else lambda i, x0, x, total: on_step(x0.clone())
    with torch.inference_mode():
        return comfy.sample.sample_custom(model, torch.zeros_like(latent), cfg, comfy.samplers.sampler_object("euler"),
                                          sig[4:], positive, negative, latent, disable_pbar=True, seed=0,
                                          callback=callback)


def test_the_guidance_patch_at_zero_scale_or_outside_its_window_is_the_negative_prompt_bit_for_bit(w, trained,
                                                                                                   caplog):
    """λ 0 = the stock sampler at cfg 0 (D_u, cond and uncond batched alike); the steps outside a window = the stock
    sampler at cfg 1 with the negative prompt as its positive, taking that prediction as it is (D_u evaluated alone:
    outside the window the conditional prediction is not computed; the stock cfg-1 step itself computes
    u + (c − u)·1, which is not c to the bit); the full window at λ 3 = the stock cfg 3. A window that no step of the
    sampler's schedule falls in runs the negative prompt's sampling with a warning that names the node and the fix (it
    used to, silently; not an error: a pass of a split sampling may lie outside the window)."""
    C = w["C"]
    embs, _ = trained
    pos, neg = C["InvEditCASOEncode"].execute(w["te"], embs, "blue").args
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    m0 = C["InvEditCASOGuidance"].execute(w["model"], 0.0, 1.0, 0.0).args[0]
    assert torch.equal(stock_sample(w, m0, pos, neg, x, cfg=7.0), stock_sample(w, w["model"], pos, neg, x, cfg=0.0))
    last = C["InvEditCASOGuidance"].execute(w["model"], 10.0, 0.0, 0.0, 10).args[0]  # only the last step, t 1
    alone = w["model"].clone()
    alone.set_model_sampler_post_cfg_function(lambda args: args["cond_denoised"])
    seen = {"last": [], "alone": []}
    stock_sample(w, last, pos, neg, x, cfg=7.0, on_step=seen["last"].append)
    stock_sample(w, alone, neg, neg, x, cfg=1.0, on_step=seen["alone"].append)
    assert len(seen["last"]) == 6 and all(torch.equal(a, b) for a, b in zip(seen["last"][:5], seen["alone"][:5]))
    assert not torch.equal(seen["last"][5], seen["alone"][5])  # the one step in the window is guided
    m3 = C["InvEditCASOGuidance"].execute(w["model"], 3.0, 1.0, 0.0).args[0]  # a full window: the stock cfg 3
    torch.testing.assert_close(stock_sample(w, m3, pos, neg, x, cfg=7.0), stock_sample(w, w["model"], pos, neg, x),
                               rtol=0, atol=1e-5)
    off_grid = C["InvEditCASOGuidance"].execute(w["model"], 10.0, 0.05, 0.05).args[0]  # t 41: not on a 10-step grid
    with caplog.at_level("WARNING"):
        unguided = stock_sample(w, off_grid, pos, neg, x, cfg=7.0)
    assert re.search(r"CASO Guidance.*no step of the sampler's schedule .*set its steps", caplog.text)
    assert torch.equal(unguided, stock_sample(w, alone, neg, neg, x, cfg=1.0))
    with pytest.raises(ValueError, match=r"is below window_end .*swap them"):
        C["InvEditCASOGuidance"].execute(w["model"], 1.0, 0.2, 0.5)


def test_window_fractions_are_steps_of_the_grid_as_the_training_level(w):
    """Issue 24, item 2: a fraction names a step of the DDIM grid as the training level does (0.3 → t 301 at 50
    steps, as training_timestep), so on the 50-step ddim_uniform grid 0.3 … 0 guides 16 steps from t 301,
    [0.8, 0.9] and [0, 0.1] 6 each, and window_start = window_end one (the old t = round(f·999) gave 15, 5, 5, 0)."""
    import comfy.samplers
    from harness import host
    ad, oc = host.pack_module("adapters.caso"), host.pack_module("optim.caso")
    ms = w["model"].get_model_object("model_sampling")
    grid = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", 50)[:-1]

    def guided(start, end):
        s0, s1 = ad.window_sigmas(w["model"], start, end, 50)
        on = [i for i, s in enumerate(grid) if oc.in_window(float(s), s0, s1)]
        return len(on), round(float(ms.timestep(grid[on[0]]))) if on else None
    assert guided(0.3, 0.0) == (16, 301)
    assert guided(0.9, 0.8) == (6, 901) and guided(0.1, 0.0) == (6, 101)
    assert guided(0.3, 0.3) == (1, 301) and guided(0.0, 0.0) == (1, 1)
    assert guided(1.0, 0.0) == (50, 981)
    assert ad.window_sigmas(w["model"], 0.3, 0.0, 50)[0] == float(ms.sigma(torch.tensor(ad.training_timestep(0.3, 50))))
    assert ad.check_window(grid.tolist() + [0.0], *ad.window_sigmas(w["model"], 0.3, 0.0, 50), "test") == 16


def test_a_single_step_window_computes_the_conditional_prediction_once_through_a_wrapper_already_there(w, trained):
    """The spec's §8.5: a window holding one step of the grid (window_start = window_end) makes one conditional
    call, in CASO Guidance with any sampler on that grid and in CASO Edit; a model_function_wrapper already on the
    model (here a call counter) still sees every call."""
    from harness.shapes import data
    C = w["C"]
    embs, _ = trained
    pos, neg = C["InvEditCASOEncode"].execute(w["te"], embs, "blue").args
    calls = []

    def counter(apply_model, args):
        calls.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])
    counted = w["model"].clone()
    counted.set_model_unet_function_wrapper(counter)
    m = C["InvEditCASOGuidance"].execute(counted, 3.0, 0.4, 0.4, 10).args[0]  # t 401, the second step sampled
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    stock_sample(w, m, pos, neg, x, cfg=7.0)
    assert len(calls) == 6 and sum(0 in c for c in calls) == 1 and 0 in calls[1], calls
    calls.clear()
    with torch.inference_mode():
        lat = {"samples": w["vae"].encode(data.make_batch(1, 5).images.permute(0, 2, 3, 1))}
        C["InvEditCASOEdit"].execute(counted, pos, neg, lat, 10, 3.0, 0.4, 0.4, "ddim", 0)
    guided = [c for c in calls if 0 in c and 1 in c]  # the inversion's calls are the negative prompt's alone
    assert len(guided) == 1, calls


def test_images_are_flipped_before_the_vae_as_the_official_code_and_a_latent_alone_is_mirrored(w, capsys):
    """Issue 24, item 9: CASO Train given the images beside their latent encodes their mirror images once; a sample
    drawn flipped takes its mirror's latent E(flip(x)) (the official flip, before the VAE). Given the latent alone it
    mirrors the latent, flip(E(x)), which on the shapes world's VAE differs from E(flip(x)) by the help page's
    figure. Images that are not the latent's are refused."""
    from harness import host
    from harness.shapes import data
    ad, oc = host.pack_module("adapters.caso"), host.pack_module("optim.caso")
    C = w["C"]
    images = data.make_batch(4, 79).images.permute(0, 2, 3, 1)
    _, _, clf = training_inputs(w, 1, 79)
    kw = dict(model=w["model"], clip=w["te"], vae=w["vae"], classifier=clf, attribute="colour", steps=3,
              batch_size=2, scale=10.0, level=0.4, lr=0.02, weight_decay=0.005, gamma=0.0, n_tokens=1,
              init="repo_uniform", hflip=True, seed=0)
    with torch.inference_mode():
        lat, mirror = w["vae"].encode(images), w["vae"].encode(images.flip(2))
        node = C["InvEditCASOTrain"].execute(latent={"samples": lat}, images=images, **kw).args[0]
        s = ad.CASOSettings(config=oc.TrainConfig(steps=3, batch_size=2, scale=10.0, seed=0))
        direct, _ = ad.train(w["model"], w["te"], w["vae"], clf, lat, s, "test", mirrored=mirror)
        latent_flip = C["InvEditCASOTrain"].execute(latent={"samples": lat}, **kw).args[0]
    assert all(torch.equal(a.tokens["clip_l"], b.tokens["clip_l"]) for a, b in zip(node, direct))
    assert not all(torch.equal(a.tokens["clip_l"], b.tokens["clip_l"]) for a, b in zip(node, latent_flip))
    gap = float((lat.flip(-1) - mirror).norm() / mirror.norm())
    with capsys.disabled():
        print(f"\nshapes VAE: |flip(E(x)) − E(flip(x))| / |E(flip(x))| = {gap:.3f}")
    assert 0.3 < gap < 0.6, gap  # 0.42 (the help page)
    with pytest.raises(ValueError, match="is not this VAE's encoding of images .*; connect the images the latent"):
        C["InvEditCASOTrain"].execute(latent={"samples": lat}, images=images.flip(1), **kw)


def test_the_trained_class_edits_towards_it_and_a_negative_scale_away(w, trained):
    from harness.shapes import data
    C = w["C"]
    embs, clf = trained
    pos, neg = C["InvEditCASOEncode"].execute(w["te"], embs, "blue").args
    src = data.make_batch(1, 5, colour=0, shape=0).images
    with torch.inference_mode():
        lat = {"samples": w["vae"].encode(src.permute(0, 2, 3, 1))}

    def p(cls, scale, positive):
        with torch.inference_mode():
            ed = C["InvEditCASOEdit"].execute(w["model"], positive, neg, lat, 50, scale, 0.6, 0.0, "ddim",
                                              0).args[0]
            return float(clf.logits(w["vae"].decode(ed["samples"]).permute(0, 3, 1, 2)).softmax(1)[0, cls])
    assert p(2, 3.0, pos) > 0.9 > p(2, 0.0, pos)  # red -> blue
    red = C["InvEditCASOEncode"].execute(w["te"], embs, "red").args[0]
    kept, reversed_ = p(0, 0.0, red), p(0, -3.0, red)  # away from red: its probability falls
    assert reversed_ < kept, (kept, reversed_)


def test_saved_classes_are_the_stock_encoders_embedding_and_misuse_is_named(w, trained, caplog):
    import folder_paths
    import nodes
    C = w["C"]
    embs, _ = trained
    text = C["InvEditCASOSave"].execute(embs, "test_caso_save").ui.as_dict()["text"][0]
    root = folder_paths.get_folder_paths("embeddings")[0]
    names = [n.split(":")[1] for n in text.removeprefix("saved: ").split(", ")]
    try:
        assert names == [f"test_caso_save_{c}" for c in ("red", "green", "blue", "yellow")]
        with torch.inference_mode():
            stock = nodes.CLIPTextEncode().encode(w["te"], "embedding:test_caso_save_blue")[0]
            loaded = C["InvEditCASOLoad"].execute("test_caso_save_blue.safetensors").args[0]
            ours = C["InvEditCASOEncode"].execute(w["te"], loaded, "").args[0]
        assert torch.equal(stock[0][0], ours[0][0])
        with pytest.raises(ValueError, match="not one of the classifier's classes"):
            C["InvEditCASOEncode"].execute(w["te"], embs, "purple")
        loaded[0].meta["te_clip_l"] = "0" * 16  # as if trained with another text encoder
        with caplog.at_level("WARNING"):
            C["InvEditCASOEncode"].execute(w["te"], loaded, "")
        assert "was trained with another clip_l text encoder" in caplog.text
    finally:
        for n in names:
            p = os.path.join(root, f"{n}.safetensors")
            if os.path.isfile(p):
                os.remove(p)


def test_a_save_with_one_bad_name_writes_no_file(w, trained, monkeypatch):
    """Issue 30, item 3: every class's file name is checked before the first file is written (the red file was
    written, then a 130-character class name stopped the save); a failure while writing removes what it wrote."""
    import dataclasses
    import folder_paths
    from harness import host
    C = w["C"]
    embs, _ = trained
    root = folder_paths.get_folder_paths("embeddings")[0]
    before = set(os.listdir(root)) if os.path.isdir(root) else set()
    bad = [embs[0], dataclasses.replace(embs[1], name="g" * 130), embs[2], embs[3]]
    with pytest.raises(ValueError, match=r"too long \(139 characters, at most 120\).*\(the file of class 'ggg.*nothing "
                                         r"was saved"):
        C["InvEditCASOSave"].execute(bad, "p10_long")
    assert set(os.listdir(root)) == before
    art = host.pack_module("artifacts")
    real, calls = art.save, []

    def failing(path, *a, **k):  # the third file fails to write (a full disk)
        calls.append(path)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(path, *a, **k)
    monkeypatch.setattr(art, "save", failing)
    with pytest.raises(OSError, match="No space left"):
        C["InvEditCASOSave"].execute(embs, "test_caso_full_disk")
    assert set(os.listdir(root)) == before


def test_a_latent_of_another_channel_count_is_refused_even_empty(w):
    """Issue 29, item 6: an empty 16-channel latent (Empty SD3 Latent Image) with the SD1.5 model ran and reported a
    loss (the stock empty-latent fix gave it 4 zero channels); CASO Train's latent is its training images."""
    C = w["C"]
    with torch.inference_mode():
        clf = C["InvEditClassifierLoad"].execute("shapes_colour.safetensors", "small_cnn", 0, "none").args[0]
        with pytest.raises(ValueError, match=r"CASO Train Embeddings \(InvEdit\): the LATENT has shape \(2, 16, 8, 8\) "
                                             r"but SD15 works on \[B, 4, H, W\] latents. Encode the image"):
            C["InvEditCASOTrain"].execute(model=w["model"], clip=w["te"], vae=w["vae"], classifier=clf,
                                          latent={"samples": torch.zeros(2, 16, 8, 8)}, attribute="colour", steps=1,
                                          batch_size=1, scale=10.0, level=0.4, lr=0.02, weight_decay=0.005,
                                          gamma=0.0, n_tokens=1, init="repo_uniform", hflip=True, seed=0)


def test_an_interrupted_training_returns_nothing(w, trained):
    import comfy.model_management as mm
    C = w["C"]
    _, clf = trained
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException), torch.inference_mode():
            C["InvEditCASOTrain"].execute(model=w["model"], clip=w["te"], vae=w["vae"], classifier=clf,
                                          latent={"samples": torch.zeros(2, 4, 8, 8)}, attribute="colour", steps=50,
                                          batch_size=1, scale=10.0, level=0.4, lr=0.02, weight_decay=0.005,
                                          gamma=0.0, n_tokens=1, init="repo_uniform", hflip=True, seed=0)
    finally:
        mm.interrupt_current_processing(False)


def test_stitched_classes_are_the_stock_prompt_of_their_files_or_the_stock_concat(w):
    """Several attributes in one edit: 'tokens' = CLIPTextEncode('embedding:a embedding:b'), 'concat_conditioning'
    = the stock ConditioningConcat of each class encoded alone; the classes are looked up in embeddings then extra."""
    import folder_paths
    import nodes
    from harness import host
    oc = host.pack_module("optim.caso")
    C = w["C"]
    g = torch.Generator().manual_seed(3)
    a = oc.ClassEmbedding("blue", 0, {"clip_l": torch.randn(1, 768, generator=g)}, {})
    b = oc.ClassEmbedding("circle", 0, {"clip_l": torch.randn(2, 768, generator=g)}, {})
    paths = [saved(folder_paths, "test_caso_a", a.tokens), saved(folder_paths, "test_caso_b", b.tokens)]
    try:
        with torch.inference_mode():
            stock = nodes.CLIPTextEncode().encode(w["te"], "embedding:test_caso_a embedding:test_caso_b")[0]
            ours = C["InvEditCASOEncode"].execute(w["te"], [a], "blue, circle", extra=[b]).args[0]
            assert torch.equal(stock[0][0], ours[0][0])
            assert torch.equal(stock[0][1]["pooled_output"], ours[0][1]["pooled_output"])
            back = C["InvEditCASOEncode"].execute(w["te"], [a], "circle, blue", extra=[b]).args[0]
            assert not torch.equal(back[0][0], ours[0][0])  # the order is the prompt's order
            alone = [C["InvEditCASOEncode"].execute(w["te"], [e], "").args[0] for e in (a, b)]
            stock_concat = nodes.ConditioningConcat().concat(alone[0], alone[1])[0]
            concat = C["InvEditCASOEncode"].execute(w["te"], [a], "blue, circle", extra=[b],
                                                    stitch="concat_conditioning").args[0]
        assert concat[0][0].shape == (1, 154, 768) and torch.equal(stock_concat[0][0], concat[0][0])
        assert torch.equal(stock_concat[0][1]["pooled_output"], concat[0][1]["pooled_output"])
    finally:
        for p in paths:
            os.remove(p)
    with pytest.raises(ValueError, match="'square' is not one of the classifier's classes"):
        C["InvEditCASOEncode"].execute(w["te"], [a], "blue, square", extra=[b])


def test_sdxl_classes_train_through_its_two_encoders_and_are_the_stock_embedding(w):
    """A tiny SDXL (the stock SDXL text encoder with 3 layers each, the shapes VAE and colour classifier): training
    reaches both encoders (clip_l [1, 768], clip_g [1, 1280]) and the model's pooled output; the saved file typed as
    embedding:<name> into the stock CLIPTextEncode gives the pack's Encode, cond and pooled, bit for bit."""
    import folder_paths
    import nodes
    from harness.shapes import data
    from host_models import tiny_sdxl, tiny_sdxl_clip
    C = w["C"]
    root = folder_paths.get_folder_paths("embeddings")[0]
    clip, model = tiny_sdxl_clip(root), tiny_sdxl()
    with torch.inference_mode():
        lat = {"samples": w["vae"].encode(data.make_batch(4, 78).images.permute(0, 2, 3, 1))}
        clf = C["InvEditClassifierLoad"].execute("shapes_colour.safetensors", "small_cnn", 0, "none").args[0]
        embs, history = C["InvEditCASOTrain"].execute(
            model=model, clip=clip, vae=w["vae"], classifier=clf, latent=lat, attribute="colour", steps=3,
            batch_size=2, scale=10.0, level=0.4, lr=0.02, weight_decay=0.005, gamma=0.0, n_tokens=1,
            init="repo_uniform", hflip=True, seed=0).args
    assert {k: tuple(v.shape) for k, v in embs[2].tokens.items()} == {"clip_l": (1, 768), "clip_g": (1, 1280)}
    assert len(history.values) == 3 and all(map(math.isfinite, history.values)), history.values
    text = C["InvEditCASOSave"].execute(embs, "test_caso_sdxl").ui.as_dict()["text"][0]
    names = [n.split(":")[1] for n in text.removeprefix("saved: ").split(", ")]
    try:
        with torch.inference_mode():
            stock = nodes.CLIPTextEncode().encode(clip, "embedding:test_caso_sdxl_blue")[0]
            loaded = C["InvEditCASOLoad"].execute("test_caso_sdxl_blue.safetensors").args[0]
            ours = C["InvEditCASOEncode"].execute(clip, loaded, "").args[0]
        assert stock[0][0].shape == (1, 77, 2048) and torch.equal(stock[0][0], ours[0][0])
        assert torch.equal(stock[0][1]["pooled_output"], ours[0][1]["pooled_output"])
        with pytest.raises(ValueError, match="has a clip_g text encoder and the embedding has"):
            C["InvEditCASOEncode"].execute(clip, [type(loaded[0])("blue", 2, {"clip_l": torch.zeros(1, 768)}, {})],
                                           "")
    finally:
        for n in names:
            os.remove(os.path.join(root, f"{n}.safetensors"))


def test_sd2_classes_train_through_clip_h_and_are_the_stock_embedding(w, tmp_path):
    """Issue 26: SD2.x (its stock OpenCLIP-H encoder, shrunk to 3 layers; the random SD2.1-v U-Net of the family
    matrix through the stock loader): the class trains into ``clip_h`` [1, 1024], and the saved file typed as
    embedding:<name> into the stock CLIPTextEncode gives the pack's Encode bit for bit."""
    import comfy.sd
    import folder_paths
    import nodes
    from harness import families
    from harness.shapes import data
    from host_models import tiny_sd2_clip
    C = w["C"]
    root = folder_paths.get_folder_paths("embeddings")[0]
    families.write("SD2.1-v", tmp_path / "sd21.safetensors")
    clip, model = tiny_sd2_clip(root), comfy.sd.load_diffusion_model(str(tmp_path / "sd21.safetensors"))
    with torch.inference_mode():
        lat = {"samples": w["vae"].encode(data.make_batch(4, 78).images.permute(0, 2, 3, 1))}
        clf = C["InvEditClassifierLoad"].execute("shapes_colour.safetensors", "small_cnn", 0, "none").args[0]
        embs, history = C["InvEditCASOTrain"].execute(
            model=model, clip=clip, vae=w["vae"], classifier=clf, latent=lat, attribute="colour", steps=2,
            batch_size=2, scale=10.0, level=0.4, lr=0.02, weight_decay=0.005, gamma=0.0, n_tokens=1,
            init="repo_uniform", hflip=True, seed=0).args
    assert {k: tuple(v.shape) for k, v in embs[2].tokens.items()} == {"clip_h": (1, 1024)}
    assert all(map(math.isfinite, history.values)), history.values
    text = C["InvEditCASOSave"].execute(embs, "test_caso_sd2").ui.as_dict()["text"][0]
    names = [n.split(":")[1] for n in text.removeprefix("saved: ").split(", ")]
    try:
        with torch.inference_mode():
            stock = nodes.CLIPTextEncode().encode(clip, "embedding:test_caso_sd2_blue")[0]
            loaded = C["InvEditCASOLoad"].execute("test_caso_sd2_blue.safetensors").args[0]
            ours = C["InvEditCASOEncode"].execute(clip, loaded, "").args[0]
        assert stock[0][0].shape == (1, 77, 1024) and torch.equal(stock[0][0], ours[0][0])
    finally:
        for n in names:
            os.remove(os.path.join(root, f"{n}.safetensors"))


def test_a_linear_probe_on_a_stock_clip_vision_classifies_held_out_images_and_is_differentiable(w, tmp_path):
    """Fitted on 32 labelled shapes images (colour), the probe separates them all and labels 32 held-out ones well
    above chance (25 %; a random 16-d tower carries little colour: 53 % here), its logits are differentiable in the
    pixels, the tower's weights do not change, and bad labels are named."""
    from harness.shapes import data
    from host_models import tiny_clip_vision
    C = w["C"]
    cv = tiny_clip_vision(tmp_path)
    before = {k: v.clone() for k, v in cv.model.state_dict().items()}
    train, held = data.make_batch(32, 90), data.make_batch(32, 91)
    labels = ", ".join(data.COLOURS[int(c)] for c in train.colour)
    with torch.inference_mode():
        out = C["InvEditCLIPVisionLinearProbe"].execute(cv, train.images.movedim(1, -1), labels,
                                                        ", ".join(data.COLOURS), 300, 1e-3)
    clf = out.args[0]
    assert clf.class_names == list(data.COLOURS) and "training accuracy 100 %" in out.ui.as_dict()["text"][0]
    with torch.no_grad():
        acc = float((clf.logits(held.images).argmax(1).cpu() == held.colour).float().mean())
    assert acc >= 0.45, acc
    with torch.inference_mode(False), torch.enable_grad():
        x = held.images[:2].clone().requires_grad_(True)
        clf.logits(x)[:, 2].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(torch.equal(before[k], v) for k, v in cv.model.state_dict().items())
    with pytest.raises(ValueError, match="32 images and 3 labels"):
        C["InvEditCLIPVisionLinearProbe"].execute(cv, train.images.movedim(1, -1), "red, blue, red", "", 10, 0.0)
    with pytest.raises(ValueError, match=r"labels \['purple'\] are not in class_names"):
        C["InvEditCLIPVisionLinearProbe"].execute(cv, train.images[:2].movedim(1, -1), "red, purple", "red, blue",
                                                  10, 0.0)
    with pytest.raises(ValueError, match="needs at least two"):
        C["InvEditCLIPVisionLinearProbe"].execute(cv, train.images[:2].movedim(1, -1), "red, red", "", 10, 0.0)


def test_caso_trains_from_the_clip_zero_shot_classifier_at_its_defaults(w):
    """Issue 29, 1: two of the pack's nodes wired at their defaults must train. The classifier's text features are
    made while ComfyUI runs the node under inference mode; autograd cannot save such tensors for backward."""
    from harness.shapes import data
    C = w["C"]
    with torch.inference_mode():
        clf = C["InvEditCLIPZeroShotClassifier"].execute("shapes-toy-clip", "a red circle\na blue circle", "").args[0]
        lat = {"samples": w["vae"].encode(data.make_batch(2, 78).images.permute(0, 2, 3, 1))}
        out = C["InvEditCASOTrain"].execute(model=w["model"], clip=w["te"], vae=w["vae"], classifier=clf, latent=lat,
                                            attribute="colour", steps=1, batch_size=1, scale=10.0, level=0.4,
                                            lr=0.02, weight_decay=0.005, gamma=0.0, n_tokens=1, init="repo_uniform",
                                            hflip=True, seed=0).args[0]
    assert [c.name for c in out] == ["a red circle", "a blue circle"]
    assert all(torch.isfinite(c.tokens["clip_l"]).all() for c in out)

