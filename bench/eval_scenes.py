"""The scenes world's targets (issue 27), measured through the real ComfyUI host and the files set-up assembled:

1. VAE reconstruction PSNR on held-out scenes (VAELoader → encode → decode), ≥ 28 dB;
2. the judges on held-out renders and on the VAE's round trips of them: the scene judge per attribute (count,
   colour, shape, size, texture, style), the texture and style classifiers, the toy CLIP's caption-vs-hard-negative
   choice; ≥ 95 %;
3. prompted samples: the captions of --captions held-out scenes (most of them never seen in training), --seeds seeds
   each, --steps euler steps at --cfg (the stock KSampler; sgm_uniform on the SD3 world), judged by the scene judge:
   the fraction right per attribute (colour, shape, size over the objects of samples with the right count); ≥ 90 %.

    python -m bench.eval_scenes [--worlds unet dit] [--captions 24] [--seeds 2] [--steps 20] [--cfg 5]
    python -m bench.eval_scenes --skip-judges --partial --worlds unet --captions 8   # a training's progress
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import host  # noqa: E402
from harness.paths import BASE  # noqa: E402
from harness.scenes import data  # noqa: E402
from harness.tiny_models import (CLASSIFIER_DIR, SCENES_CLASSIFIERS, SCENES_FILES, SCENES_SD3_FILES,  # noqa: E402
                                 SCENES_TOY_CLIP_DIR, SCENES_WEIGHTS)

TARGETS = {"vae_psnr_db": 28.0, "judges": 0.95, "samples": 0.90}
ATTRS = ("count", "colour", "shape", "size", "texture", "style")
HELD = data.HELDOUT_SEED


def _judge():
    from harness.scenes import judges
    return judges, judges.load_judge(SCENES_WEIGHTS / "scenes_judge.safetensors")


def judge_scores(images, scenes) -> dict:
    judges, j = _judge()
    seen = judges.read(j, images)
    r = [judges.compare(s, judges.expected(scenes, i)) for i, s in enumerate(seen)]
    return {a: statistics.mean(x[a] for x in r) for a in (*ATTRS, "all")}


def vae_and_judges(n: int = 64) -> dict:
    host.boot()
    import torch
    import nodes
    from metrics import psnr
    scenes = data.make_scenes(n, HELD)
    images = data.render(scenes)
    vae = nodes.VAELoader().load_vae(SCENES_FILES["vae"])[0]
    with torch.inference_mode():
        rec = vae.decode(vae.encode(images.permute(0, 2, 3, 1))).permute(0, 3, 1, 2).clamp(0, 1)
    out = {"vae_psnr_db": psnr(rec, images), "judge_renders": judge_scores(images, scenes),
           "judge_vae": judge_scores(rec, scenes)}
    from harness.shapes.models import load_classifier
    for name in SCENES_CLASSIFIERS:
        attr = name.split("_")[1].split(".")[0]
        m, _ = load_classifier(BASE / "models" / CLASSIFIER_DIR / name)
        with torch.no_grad():
            out[f"classifier_{attr}"] = float((m(images).argmax(1) == getattr(scenes, attr)).float().mean())
    from harness.scenes.judges import CLIP_TOKENS
    from harness.scenes.train import negative_caption
    from harness.shapes.models import clip_pixel_values, load_toy_clip
    clip, tok = load_toy_clip(BASE / "models" / SCENES_TOY_CLIP_DIR)
    clip = clip.float()
    g = torch.Generator().manual_seed(3)
    wins = []
    with torch.no_grad():
        for i in range(n):
            t = tok([scenes.captions[i], negative_caption(scenes, i, g)], padding="max_length",
                    max_length=CLIP_TOKENS, return_tensors="pt")
            lg = clip(input_ids=t.input_ids, attention_mask=t.attention_mask,
                      pixel_values=clip_pixel_values(images[i:i + 1])).logits_per_image
            wins.append(float(lg[0, 0] > lg[0, 1]))
    out["clip_caption_vs_negative"] = statistics.mean(wins)
    return out


def partial_models(world: str):
    """MODEL, CLIP and VAE of a world whose generator is still training: its weights file as it stands (the EMA
    weights a resumable stage commits mid-run, harness/scenes/train.py), widened as set-up widens them, with the
    world's CLIP-L (the shapes world's file: the same generated weights) and VAE; to follow a long training between
    its chunks. The assembled checkpoint is for a finished training only (tiny_models.finished)."""
    import comfy.sd
    import nodes
    from safetensors.torch import load_file
    from harness.scenes import models as scenes_models
    from harness.tiny_models import FILES, vae16_state_dict, widen_dit
    vae_sd = load_file(str(SCENES_WEIGHTS / "vae.safetensors"))
    if world == "unet":
        sd = scenes_models.widen_unet(load_file(str(SCENES_WEIGHTS / "unet.safetensors")),
                                      scenes_models.wide_unet_shapes())
        clip_type = "stable_diffusion"
    else:
        sd = widen_dit(scenes_models.widen_dit(load_file(str(SCENES_WEIGHTS / "dit.safetensors"))))
        vae_sd = vae16_state_dict(vae_sd)
        clip_type = "sd3"
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    clip = nodes.CLIPLoader().load_clip(FILES["text_encoders"], clip_type)[0]
    return model, clip, comfy.sd.VAE(sd=vae_sd)


def prompted_samples(world: str = "unet", captions: int = 24, seeds: int = 2, steps: int = 20,
                     cfg: float = 5.0, partial: bool = False) -> dict:
    """Per-attribute accuracy of the judge on samples of held-out captions (colour / shape / size over the objects
    of the samples whose object count is right); ``partial``: of the generator's weights as they stand mid-training
    (``partial_models``)."""
    host.boot()
    import torch
    import comfy.utils
    import nodes
    judges, j = _judge()
    comfy.utils.PROGRESS_BAR_ENABLED = False
    ckpt = (SCENES_FILES if world == "unet" else SCENES_SD3_FILES)["checkpoints"]
    scenes = data.make_scenes(captions, HELD + 1000)
    t = time.perf_counter()
    right = {a: [] for a in ATTRS}
    with torch.inference_mode():
        model, clip, vae = partial_models(world) if partial else nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)
        ch = model.model.latent_format.latent_channels
        neg = nodes.CLIPTextEncode().encode(clip, "")[0]
        for i in range(captions):
            pos = nodes.CLIPTextEncode().encode(clip, scenes.captions[i])[0]
            latent = {"samples": torch.zeros(seeds, ch, data.SIZE // 8, data.SIZE // 8)}
            out = nodes.KSampler().sample(model, 1000 + i, steps, cfg, "euler",
                                          "normal" if world == "unet" else "sgm_uniform", pos, neg, latent)[0]
            imgs = vae.decode(out["samples"]).permute(0, 3, 1, 2).clamp(0, 1)
            want = judges.expected(scenes, i)
            for seen in judges.read(j, imgs):
                r = judges.compare(seen, want)
                right["count"].append(r["count"])
                right["texture"].append(r["texture"])
                right["style"].append(r["style"])
                if r["count"]:
                    for a in ("colour", "shape", "size"):
                        right[a] += [float(x[a] == y[a]) for x, y in zip(seen.objects, want.objects)]
    res = {a: statistics.mean(v) if v else 0.0 for a, v in right.items()}
    res["seconds"] = time.perf_counter() - t
    res["samples"] = captions * seeds
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", nargs="+", default=["unet", "dit"], choices=["unet", "dit"])
    ap.add_argument("--captions", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--skip-judges", action="store_true")
    ap.add_argument("--partial", action="store_true", help="sample the generators' weights as they stand mid-training "
                    "(harness/scenes/weights/unet.safetensors, dit.safetensors), not the assembled checkpoints")
    a = ap.parse_args(argv)
    if not a.skip_judges:
        r = vae_and_judges()
        print(f"VAE held-out PSNR {r['vae_psnr_db']:.2f} dB (target {TARGETS['vae_psnr_db']})")
        for k in ("judge_renders", "judge_vae"):
            print(f"scene judge on {k.split('_')[1]}: " + ", ".join(f"{x} {100 * v:.1f} %" for x, v in r[k].items()))
        for k, v in r.items():
            if k.startswith("classifier_") or k.startswith("clip_"):
                print(f"{k}: {100 * v:.1f} %")
    for world in a.worlds:
        r = prompted_samples(world, a.captions, a.seeds, a.steps, a.cfg, a.partial)
        print(f"prompted samples ({world}{', partial weights' if a.partial else ''}, {r['samples']} samples of {a.captions} held-out captions, {a.steps} euler "
              f"steps, cfg {a.cfg}, {r['seconds']:.0f} s): " + ", ".join(f"{x} {100 * r[x]:.1f} %" for x in ATTRS)
              + f" (target {100 * TARGETS['samples']:.0f} % each)")


if __name__ == "__main__":
    main()
