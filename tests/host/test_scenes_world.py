"""The assembled scenes-world files (issue 27) through the stock ComfyUI loaders, and its judges.

A part whose trained weights are not in harness/scenes/weights/ yet is skipped with that reason (the world is
trained in resumable chunks over several sessions: docs/scenes_world.md)."""
import pytest
import torch

from harness import tiny_models
from harness.paths import BASE
from harness.scenes import data

W = tiny_models.SCENES_WEIGHTS


def need(name: str):
    if not tiny_models.finished(W / name):
        pytest.skip(f"the scenes world's {name} is not trained yet (issue 27 in progress: docs/scenes_world.md)")


@pytest.fixture(scope="module")
def held():
    s = data.make_scenes(64, data.HELDOUT_SEED)
    return s, data.render(s)


def test_scenes_vae_reconstructs_held_out_scenes(comfy, held):
    need("vae.safetensors")
    import nodes
    from metrics import psnr
    vae = nodes.VAELoader().load_vae(tiny_models.SCENES_FILES["vae"])[0]
    with torch.inference_mode():
        pix = held[1][:32].permute(0, 2, 3, 1)
        latent = vae.encode(pix)
        rec = vae.decode(latent)
    assert latent.shape == (32, 4, 16, 16)
    assert 0.5 < float((latent * 0.18215).std()) < 2.0  # unit-scale model latents (vae_scale calibration)
    assert psnr(rec.clamp(0, 1), pix) > 28.0


def test_stock_loaders_detect_the_multi_level_unet_and_it_is_the_narrow_one(comfy):
    """CheckpointLoaderSimple detects SD1.5 with three levels (two downsamplings, the middle block at 4×4 for a
    16×16 latent), and the 320-wide network computes what the narrow one was trained to (widen_unet's zeros)."""
    need("unet.safetensors")
    import comfy.supported_models as sm
    import nodes
    from safetensors.torch import load_file
    from harness.scenes import models
    model = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models.SCENES_FILES["checkpoints"])[0]
    cfg = model.model.model_config
    assert isinstance(cfg, sm.SD15)
    assert cfg.unet_config["channel_mult"] == [1, 1, 1] and cfg.unet_config["transformer_depth_middle"] == 1
    wide = sm.SD15(dict(models.UNET_CONFIG, dtype=torch.float32)).get_model({}).diffusion_model
    wide.load_state_dict({k: v.float() for k, v in model.model.diffusion_model.state_dict().items()})
    narrow = models.build_narrow_unet()
    narrow.load_state_dict({k: v.float() for k, v in load_file(str(W / "unet.safetensors")).items()})
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(2, 4, 16, 16, generator=g), torch.tensor([50.0, 900.0]), torch.randn(2, 77, 768, generator=g)
    feats = {}
    # the middle block's last layer: ComfyUI runs a TimestepEmbedSequential's layers one by one (no hook on it fires)
    wide.middle_block[-1].register_forward_hook(lambda m, i, o: feats.__setitem__("h", o))
    with torch.no_grad():
        a, b = narrow(x, t, context=ctx), wide(x, t, context=ctx)
    assert feats["h"].shape == (2, 320, 4, 4)  # h-space: the bottleneck after two downsamplings
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_stock_loaders_build_the_scenes_sd3_world(comfy):
    need("dit.safetensors")
    import comfy.model_base
    import comfy.supported_models as sm
    import nodes
    from harness.scenes import models
    model, _, vae = nodes.CheckpointLoaderSimple().load_checkpoint(tiny_models.SCENES_SD3_FILES["checkpoints"])
    assert isinstance(model.model.model_config, sm.SD3) and model.model.model_type == comfy.model_base.ModelType.FLOW
    assert model.model.model_config.unet_config["depth"] == models.DIT_DEPTH
    assert len(model.model.diffusion_model.joint_blocks) == models.DIT_DEPTH
    assert vae.latent_channels == 16


def test_the_narrow_dit_is_the_sd3_network_comfyui_builds_from_its_widened_weights(comfy):
    """models.build_narrow_dit (6 joint blocks at width 256, LayerNorms over 384) and SD3's depth-6 MMDiT that
    ComfyUI detects from widen_dit's weights (hidden 384, 6 heads) compute the same function: random weights with the
    adaLN-Zero parts made non-zero, so every block and the final layer act."""
    import comfy.model_detection
    import comfy.supported_models as sm
    from harness.scenes import models
    torch.manual_seed(0)
    narrow = models.build_narrow_dit()
    with torch.no_grad():
        for name, p in narrow.named_parameters():
            if "adaLN" in name or "final_layer.linear" in name:
                p.normal_(0, 0.05)
    sd = tiny_models.widen_dit(models.widen_dit(narrow.state_dict()))
    cfg = comfy.model_detection.detect_unet_config(sd, "")
    assert cfg["depth"] == models.DIT_DEPTH == 6 and cfg["patch_size"] == 2
    wide = sm.SD3(dict(tiny_models.sd3_dit_config(models.DIT_DEPTH), dtype=torch.float32)).get_model({}).diffusion_model
    wide.load_state_dict(sd)  # strict: every key and shape of SD3's layout
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 16, 16, 16, generator=g), torch.tensor([100.0, 800.0])
    ctx, y = torch.randn(2, 77, 768, generator=g), torch.randn(2, 768, generator=g)
    with torch.no_grad():
        a = narrow(x, t, context=ctx, y=y)
        b = wide(x, t, context=torch.nn.functional.pad(ctx, (0, 4096 - 768)), y=torch.nn.functional.pad(y, (0, 2048 - 768)))
    assert float(a.abs().max()) > 0.5  # not a trivially zero output
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("world", ["unet", "dit"])
def test_the_scenes_checkpoints_carry_the_worlds_text_encoder(comfy, world):
    """The CLIP inside each assembled checkpoint encodes a caption exactly as the world's text encoder file does
    (set-up once wrote the SD3 checkpoint's CLIP under SD1.5's key prefix after the SD1.5 one: a CLIP without
    weights, whose samples ignored their prompts)."""
    need("unet.safetensors" if world == "unet" else "dit.safetensors")
    import torch
    import nodes
    files = tiny_models.SCENES_FILES if world == "unet" else tiny_models.SCENES_SD3_FILES
    _, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(files["checkpoints"])
    ref = nodes.CLIPLoader().load_clip(tiny_models.FILES["text_encoders"],
                                       "stable_diffusion" if world == "unet" else "sd3")[0]
    text = "a large red circle and a small blue square on a striped background"
    with torch.no_grad():
        (a, pa), (b, pb) = (c.encode_from_tokens(c.tokenize(text), return_pooled=True) for c in (clip, ref))
    assert torch.equal(a, b) and torch.equal(pa, pb)



@pytest.mark.parametrize("world", ["unet", "dit"])
def test_a_generator_still_training_can_be_sampled(comfy, world):
    """bench.eval_scenes.partial_models (to follow a training between its chunks): the weights file as it stands,
    finished or not, loads as the family the assembled checkpoint will be (SD1.5 multi-level U-Net / SD3 MMDiT), with
    a CLIP and a VAE of the world's widths."""
    name = f"{world}.safetensors"
    if not (W / name).exists() or not tiny_models.finished(W / "vae.safetensors"):
        pytest.skip(f"no {name} or VAE yet")
    import comfy.supported_models as sm
    from bench.eval_scenes import partial_models
    model, clip, vae = partial_models(world)
    assert isinstance(model.model.model_config, sm.SD15 if world == "unet" else sm.SD3)
    assert vae.latent_channels == (4 if world == "unet" else 16)
    cond = clip.encode_from_tokens(clip.tokenize("a red circle"), return_pooled=True)
    assert cond[0].shape[-1] == (768 if world == "unet" else 4096)

def test_scene_judge_reads_held_out_renders(held):
    """≥ 95 % per attribute on held-out renders (the issue's target for judges)."""
    need("scenes_judge.safetensors")
    from harness.scenes import judges
    scenes, images = held
    j = judges.load_judge(W / "scenes_judge.safetensors")
    seen = judges.read(j, images)
    r = [judges.compare(s, judges.expected(scenes, i)) for i, s in enumerate(seen)]
    for attr in ("count", "colour", "shape", "size", "texture", "style"):
        acc = sum(x[attr] for x in r) / len(r)
        assert acc >= 0.95, (attr, acc)



def test_scene_judge_reads_the_vaes_round_trips(comfy, held):
    """The judge reads decoded images as it reads renders (what the scorecard gives it): ≥ 95 % per attribute on the
    VAE's round trips of held-out scenes, but shape ≥ 90 %: its misses there are small squares and circles whose
    corners the VAE itself rounds or adds (docs/scenes_world.md, `judge_rt`; the judge before it read 76 %)."""
    need("vae.safetensors")
    need("scenes_judge.safetensors")
    import nodes
    from harness.scenes import judges
    scenes, images = held
    vae = nodes.VAELoader().load_vae(tiny_models.SCENES_FILES["vae"])[0]
    with torch.inference_mode():
        rec = vae.decode(vae.encode(images.permute(0, 2, 3, 1))).permute(0, 3, 1, 2).clamp(0, 1)
    j = judges.load_judge(W / "scenes_judge.safetensors")
    r = [judges.compare(s, judges.expected(scenes, i)) for i, s in enumerate(judges.read(j, rec))]
    for attr in ("count", "colour", "shape", "size", "texture", "style"):
        acc = sum(x[attr] for x in r) / len(r)
        assert acc >= (0.90 if attr == "shape" else 0.95), (attr, acc)

def test_texture_and_style_classifiers_load_as_pack_classifiers(held):
    for name in tiny_models.SCENES_CLASSIFIERS:
        need(name)
    from harness.shapes.models import load_classifier
    scenes, images = held
    for attr, name in zip(("texture", "style"), tiny_models.SCENES_CLASSIFIERS):
        m, classes = load_classifier(BASE / "models" / tiny_models.CLASSIFIER_DIR / name)
        assert classes == list({"texture": data.TEXTURES, "style": data.STYLES}[attr])
        with torch.no_grad():
            acc = (m(images).argmax(1) == getattr(scenes, attr)).float().mean()
        assert acc >= 0.95, (attr, acc)


def test_scenes_toy_clip_reads_objects_and_background(held):
    """Zero-shot: each held-out image against its caption and that caption with one attribute changed: the right
    caption wins for ≥ 90 % of the images."""
    need("toy_clip")
    from harness.scenes.judges import CLIP_TOKENS
    from harness.scenes.train import negative_caption
    from harness.shapes.models import clip_pixel_values, load_toy_clip
    scenes, images = held
    clip, tok = load_toy_clip(BASE / "models" / tiny_models.SCENES_TOY_CLIP_DIR)
    clip = clip.float()
    g = torch.Generator().manual_seed(3)
    wins = 0
    with torch.no_grad():
        for i in range(len(scenes)):
            t = tok([scenes.captions[i], negative_caption(scenes, i, g)], padding="max_length",
                    max_length=CLIP_TOKENS, return_tensors="pt")
            logits = clip(input_ids=t.input_ids, attention_mask=t.attention_mask,
                          pixel_values=clip_pixel_values(images[i:i + 1])).logits_per_image
            wins += int(logits[0, 0] > logits[0, 1])
    assert wins / len(scenes) >= 0.9, wins
