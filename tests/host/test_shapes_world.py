"""The assembled shapes-world files through the stock ComfyUI loaders, and the judges (classifiers, toy CLIP)."""
import pytest
import torch

from harness import tiny_models
from harness.paths import BASE, COMFY
from harness.shapes import data
from harness.shapes.models import clip_pixel_values, load_classifier, load_toy_clip

HELD = 256


@pytest.fixture(scope="module")
def held():
    return data.make_dataset(HELD, data.HELDOUT_SEED)


def test_text_encoder_is_generated_bit_identically_and_checked(comfy):
    sd = tiny_models.text_encoder_state_dict(COMFY)
    assert tiny_models.checksum(sd) == tiny_models.TEXT_ENCODER_SHA256
    assert len(sd) == 197 and sd["text_model.embeddings.token_embedding.weight"].shape == (49408, 768)


def test_a_different_text_encoder_is_refused_with_a_clear_error(comfy, monkeypatch):
    monkeypatch.setattr(tiny_models, "TEXT_ENCODER_SEED", tiny_models.TEXT_ENCODER_SEED + 1)
    with pytest.raises(tiny_models.ChecksumError, match="not the encoder the committed UNet was trained with"):
        tiny_models.verified_text_encoder(COMFY)


def test_stock_loaders_build_the_shapes_world(comfy):
    import comfy.supported_models as sm
    import nodes
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models.FILES["checkpoints"])
    assert isinstance(model.model.model_config, sm.SD15)
    assert type(vae.first_stage_model).__name__ == "TAESD"
    unet = nodes.UNETLoader().load_unet(tiny_models.FILES["unet"], "default")[0]
    assert isinstance(unet.model.model_config, sm.SD15) and len(unet.model.diffusion_model.middle_block) > 0
    te = nodes.CLIPLoader().load_clip(tiny_models.FILES["text_encoders"], "stable_diffusion")[0]
    with torch.inference_mode():
        a = te.encode_from_tokens(te.tokenize("a red circle"))
        b = clip.encode_from_tokens(clip.tokenize("a red circle"))
    torch.testing.assert_close(a, b)  # the split file and the checkpoint hold the same text encoder
    assert nodes.VAELoader().load_vae(tiny_models.FILES["vae"])[0].first_stage_model.vae_scale > 0


def test_vae_reconstructs_held_out_images(comfy, held):
    import nodes
    from metrics import psnr
    vae = nodes.VAELoader().load_vae(tiny_models.FILES["vae"])[0]
    with torch.inference_mode():
        pix = held.images[:64].permute(0, 2, 3, 1)
        latent = vae.encode(pix)
        rec = vae.decode(latent)
    assert latent.shape == (64, 4, 8, 8)
    assert 0.5 < float((latent * 0.18215).std()) < 2.0  # unit-scale model latents (vae_scale calibration)
    assert psnr(rec.clamp(0, 1), pix) > 28.0


def test_classifiers_label_held_out_images(held):
    for attr, f in zip(("colour", "shape"), tiny_models.CLASSIFIERS):
        m, classes = load_classifier(BASE / "models" / tiny_models.CLASSIFIER_DIR / f)
        assert classes == list({"colour": data.COLOURS, "shape": data.SHAPES}[attr])
        with torch.no_grad():
            acc = (m(held.images).argmax(1) == getattr(held, attr)).float().mean()
        assert acc > 0.97, (attr, acc)


def test_toy_clip_loads_from_its_folder_and_classifies_zero_shot(held):
    clip, tok = load_toy_clip(BASE / "models" / tiny_models.TOY_CLIP_DIR)
    clip = clip.float()
    text = tok(data.CAPTIONS, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        cap = clip(input_ids=text.input_ids, attention_mask=text.attention_mask,
                   pixel_values=clip_pixel_values(held.images)).logits_per_image.argmax(1)
    assert (cap // 3 == held.colour).float().mean() > 0.93
    assert (cap % 3 == held.shape).float().mean() > 0.93


def test_prompts_steer_generation(comfy):
    """A red circle and a blue square, 4 seeds each, 20 euler steps at cfg 5: the colour classifier agrees with the
    prompt for most samples (the full measure is bench/eval_shapes.py)."""
    import nodes
    colour_clf, _ = load_classifier(BASE / "models" / tiny_models.CLASSIFIER_DIR / tiny_models.CLASSIFIERS[0])
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models.FILES["checkpoints"])
    hits = 0
    with torch.inference_mode():
        neg = nodes.CLIPTextEncode().encode(clip, "")[0]
        for colour, caption in ((0, "a red circle"), (2, "a blue square")):
            pos = nodes.CLIPTextEncode().encode(clip, caption)[0]
            latent = nodes.EmptyLatentImage().generate(64, 64, 4)[0]
            out = nodes.KSampler().sample(model, 3, 20, 5.0, "euler", "normal", pos, neg, latent)[0]
            imgs = vae.decode(out["samples"]).permute(0, 3, 1, 2)
            hits += int((colour_clf(imgs).argmax(1) == colour).sum())
    assert hits >= 6, hits


# ---- the flow edition (issue 15): an SD3-detectable MMDiT, CLIP-L alone, the 16-channel TAESD -----------------

def test_stock_loaders_build_the_sd3_world(comfy):
    """CheckpointLoaderSimple detects SD3 (a FLOW model with the 16-channel TAESD); UNETLoader + CLIPLoader (type
    sd3) + VAELoader give the same pieces; the conditioning is CLIP-L's, zero-padded to 4096 / 2048 as ComfyUI does
    for an SD3 text encoder without CLIP-G and T5, and the split files encode as the checkpoint does."""
    import comfy.model_base
    import comfy.supported_models as sm
    import nodes
    f = tiny_models.SD3_FILES
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("sd3.5_medium.safetensors")
    assert isinstance(model.model.model_config, sm.SD3) and model.model.model_type == comfy.model_base.ModelType.FLOW
    assert vae.latent_channels == 16
    unet = nodes.UNETLoader().load_unet(f["diffusion_models"], "default")[0]
    assert isinstance(unet.model.model_config, sm.SD3)
    te = nodes.CLIPLoader().load_clip(tiny_models.FILES["text_encoders"], "sd3")[0]
    assert nodes.VAELoader().load_vae(f["vae"])[0].latent_channels == 16
    with torch.inference_mode():
        a = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
        b = nodes.CLIPTextEncode().encode(te, "a red circle")[0]
    assert a[0][0].shape == (1, 77, 4096) and a[0][1]["pooled_output"].shape == (1, 2048)
    assert float(a[0][0][..., 768:].abs().max()) == 0 and float(a[0][1]["pooled_output"][..., 768:].abs().max()) == 0
    assert torch.equal(a[0][0], b[0][0])


def test_the_16_channel_vae_is_the_4_channel_one(comfy, held):
    """vae16_state_dict pads the trained TAESD with zero channels: its reconstructions equal the 4-channel VAE's,
    its model-space latents are the 4-channel encoder's / std (unit variance) with zeros in channels 4–15, and junk
    there changes nothing decoded."""
    import comfy.latent_formats
    import nodes
    v4 = nodes.VAELoader().load_vae(tiny_models.FILES["vae"])[0]
    v16 = nodes.VAELoader().load_vae(tiny_models.SD3_FILES["vae"])[0]
    pix = held.images[:32].permute(0, 2, 3, 1)
    with torch.inference_mode():
        l4, l16 = v4.encode(pix), v16.encode(pix)
        m16 = comfy.latent_formats.SD3().process_in(l16)
        r4, r16 = v4.decode(l4), v16.decode(l16)
        junk = l16.clone()
        junk[:, 4:] = torch.randn(junk[:, 4:].shape, generator=torch.Generator().manual_seed(0)) * 3
        rj = v16.decode(junk)
    assert float(m16[:, 4:].abs().max()) < 1e-6 and abs(float(m16[:, :4].std()) - 1.0) < 0.2  # 32 images: ±20 %
    torch.testing.assert_close(r16, r4, rtol=0, atol=2e-3)  # fp16 files: vae_scale is stored at a different value
    assert torch.equal(rj, r16)


def test_the_widened_mmdit_computes_what_the_narrow_one_was_trained_to(comfy):
    """widen_dit adds zero columns for CLIP-G / T5: on CLIP-L's conditioning padded with zeros, the assembled SD3
    model gives the trained narrow model's velocity (to float summation order: the wider matmul adds exact zeros in
    another order)."""
    import comfy.supported_models as sm
    from harness.shapes.train import build_dit
    narrow = build_dit()
    narrow.load_state_dict({k: v.float() for k, v in tiny_models.load_weights("dit.safetensors").items()})
    wide = sm.SD3(dict(tiny_models.sd3_dit_config(), dtype=torch.float32)).get_model({}).diffusion_model
    wide.load_state_dict({k: v.float() for k, v in tiny_models.widen_dit(
        tiny_models.load_weights("dit.safetensors")).items()})
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 8, 8, generator=g), torch.tensor([300.0, 800.0])
    ctx, pooled = torch.randn(2, 77, 768, generator=g), torch.randn(2, 768, generator=g)
    with torch.no_grad():
        a = narrow(x, t, context=ctx, y=pooled)
        b = wide(x, t, context=torch.nn.functional.pad(ctx, (0, 4096 - 768)),
                 y=torch.nn.functional.pad(pooled, (0, 2048 - 768)))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_prompts_steer_the_sd3_world(comfy):
    """A red circle and a blue square, 4 seeds each, 20 euler steps (sgm_uniform) at cfg 5 on the SD3 world: the
    colour classifier agrees with the prompt for most samples (the full measure is bench/eval_shapes.py)."""
    import nodes
    colour_clf, _ = load_classifier(BASE / "models" / tiny_models.CLASSIFIER_DIR / tiny_models.CLASSIFIERS[0])
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint("sd3.5_medium.safetensors")
    hits = 0
    with torch.inference_mode():
        neg = nodes.CLIPTextEncode().encode(clip, "")[0]
        for colour, caption in ((0, "a red circle"), (2, "a blue square")):
            pos = nodes.CLIPTextEncode().encode(clip, caption)[0]
            latent = {"samples": torch.zeros(4, 16, 8, 8)}
            out = nodes.KSampler().sample(model, 3, 20, 5.0, "euler", "sgm_uniform", pos, neg, latent)[0]
            imgs = vae.decode(out["samples"]).permute(0, 3, 1, 2)
            hits += int((colour_clf(imgs).argmax(1) == colour).sum())
    assert hits >= 6, hits
