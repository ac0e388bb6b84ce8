"""Evaluation of the shapes world through the real ComfyUI host and the files set-up assembled (stock loaders):

1. VAE reconstruction PSNR on held-out images (VAELoader -> VAEEncode -> VAEDecode);
2. attribute classifier accuracy on held-out images;
3. toy-CLIP zero-shot accuracy (argmax over the 12 captions, read as colour and shape);
4. prompted samples: every caption x --seeds seeds, --steps steps of euler at --cfg (stock KSampler), decoded and
   labelled by the classifiers: the fraction with the prompted colour and with the prompted shape.

    python -m bench.eval_shapes [--seeds 8] [--steps 20] [--cfg 5.0] [--heldout 512]

Later capabilities add their edit scores here.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import host  # noqa: E402
from harness.paths import BASE  # noqa: E402
from harness.shapes import data  # noqa: E402
from harness.shapes.models import clip_pixel_values, load_classifier, load_toy_clip  # noqa: E402
from harness.tiny_models import CLASSIFIERS, FILES, TOY_CLIP_DIR  # noqa: E402

TARGETS = {"vae_psnr_db": 30.0, "classifier_colour": 0.98, "classifier_shape": 0.98, "clip_colour": 0.95,
           "clip_shape": 0.95, "samples_colour": 0.90, "samples_shape": 0.90}


def evaluate(seeds: int = 8, steps: int = 20, cfg: float = 5.0, heldout: int = 512) -> dict:
    host.boot()
    import torch
    import comfy.utils
    import nodes
    from metrics import psnr

    comfy.utils.PROGRESS_BAR_ENABLED = False
    res: dict = {}
    held = data.make_dataset(heldout, data.HELDOUT_SEED)
    models = BASE / "models"
    classifiers = {attr: load_classifier(models / "classifiers" / f)[0]
                   for attr, f in zip(("colour", "shape"), CLASSIFIERS)}
    with torch.inference_mode():
        vae = nodes.VAELoader().load_vae(FILES["vae"])[0]
        pix = held.images.permute(0, 2, 3, 1)  # IMAGE is [B, H, W, C]
        rec = torch.cat([vae.decode(vae.encode(p)) for p in pix.split(128)])
        res["vae_psnr_db"] = psnr(rec.clamp(0, 1), pix)

        for attr, m in classifiers.items():
            pred = torch.cat([m(x).argmax(1) for x in held.images.split(256)])
            res[f"classifier_{attr}"] = float((pred == getattr(held, attr)).float().mean())

        clip, tok = load_toy_clip(models / TOY_CLIP_DIR)
        clip = clip.float()
        text = tok(data.CAPTIONS, padding="max_length", max_length=16, return_tensors="pt")
        logits = torch.cat([clip(input_ids=text.input_ids, attention_mask=text.attention_mask,
                                 pixel_values=clip_pixel_values(x)).logits_per_image for x in held.images.split(256)])
        cap = logits.argmax(1)
        res["clip_colour"] = float((cap // len(data.SHAPES) == held.colour).float().mean())
        res["clip_shape"] = float((cap % len(data.SHAPES) == held.shape).float().mean())

        model, te, vae_ck = nodes.CheckpointLoaderSimple().load_checkpoint(FILES["checkpoints"])
        neg = nodes.CLIPTextEncode().encode(te, "")[0]
        hits = {"colour": 0, "shape": 0}
        n = 0
        t = time.time()
        for ci in range(len(data.COLOURS)):
            for si in range(len(data.SHAPES)):
                pos = nodes.CLIPTextEncode().encode(te, data.caption(ci, si))[0]
                latent = nodes.EmptyLatentImage().generate(data.SIZE, data.SIZE, seeds)[0]
                out = nodes.KSampler().sample(model, 1000 + 17 * ci + si, steps, cfg, "euler", "normal", pos, neg,
                                              latent, denoise=1.0)[0]
                imgs = vae_ck.decode(out["samples"]).permute(0, 3, 1, 2).clamp(0, 1)
                hits["colour"] += int((classifiers["colour"](imgs).argmax(1) == ci).sum())
                hits["shape"] += int((classifiers["shape"](imgs).argmax(1) == si).sum())
                n += seeds
        res["samples_colour"] = hits["colour"] / n
        res["samples_shape"] = hits["shape"] / n
        res["sampling_seconds"] = time.time() - t
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--heldout", type=int, default=512)
    a = ap.parse_args(argv)
    r = evaluate(a.seeds, a.steps, a.cfg, a.heldout)
    print(f"\nShapes world — held-out {a.heldout} images; samples: 12 captions x {a.seeds} seeds, {a.steps} euler "
          f"steps, cfg {a.cfg}")
    print(f"| {'measure':<34} | {'value':>8} | {'target':>8} | met |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|-----|")
    for k, target in TARGETS.items():
        v = r[k]
        shown = f"{v:8.2f}" if k.endswith("_db") else f"{100 * v:7.1f}%"
        tshown = f"{target:8.1f}" if k.endswith("_db") else f"{100 * target:7.0f}%"
        print(f"| {k:<34} | {shown} | {tshown} | {'yes' if v >= target else 'NO':<3} |")
    print(f"(sampling took {r['sampling_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
