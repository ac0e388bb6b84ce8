"""Evaluation of the shapes world through the real ComfyUI host and the files set-up assembled (stock loaders):

1. VAE reconstruction PSNR on held-out images (VAELoader -> VAEEncode -> VAEDecode);
2. attribute classifier accuracy on held-out images;
3. toy-CLIP zero-shot accuracy (argmax over the 12 captions, read as colour and shape);
4. prompted samples: every caption x --seeds seeds, --steps steps of euler at --cfg (stock KSampler), decoded and
   labelled by the classifiers: the fraction with the prompted colour and with the prompted shape.

5. EDICT vs DDIM inversion: --edit-images held-out red circles inverted and regenerated with the same prompt (latent
   MSE, pixel PSNR), at cfg 1 and 3;
6. prompt-swap edit "a red circle" -> "a blue circle" (invert with the source, regenerate with the target; 50 official
   steps, strength 0.8, cfg 3): the fraction labelled blue and the fraction whose shape is still a circle, for EDICT
   and for DDIM inversion + the stock sampler with the same settings.

    python -m bench.eval_shapes [--seeds 8] [--steps 20] [--cfg 5.0] [--heldout 512] [--edit-images 16]
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
           "clip_shape": 0.95, "samples_colour": 0.90, "samples_shape": 0.90,
           "edict_edit_blue": 0.80, "edict_edit_circle": 0.90}
EDIT = {"source": "a red circle", "target": "a blue circle", "steps": 50, "strength": 0.8, "cfg": 3.0}


def edict_vs_ddim(n: int = 16, steps: int = EDIT["steps"]) -> dict:
    """Reconstruction (EDICT vs DDIM, cfg 1 and 3) and the prompt-swap edit score on n held-out red circles."""
    host.boot()
    import torch
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import nodes
    from metrics import psnr

    comfy.utils.PROGRESS_BAR_ENABLED = False
    C = host.node_class
    models = BASE / "models"
    colour_clf, shape_clf = (load_classifier(models / "classifiers" / f)[0] for f in CLASSIFIERS)
    imgs = data.make_batch(n, data.HELDOUT_SEED + 17, colour=data.COLOURS.index("red"),
                           shape=data.SHAPES.index("circle")).images
    opts = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)
    res: dict = {"recon": {}, "edit": {}, "edit_steps": steps}
    with torch.inference_mode():
        model, te, vae = nodes.CheckpointLoaderSimple().load_checkpoint(FILES["checkpoints"])
        enc = {t: nodes.CLIPTextEncode().encode(te, t)[0] for t in (EDIT["source"], EDIT["target"], "")}
        pix = imgs.permute(0, 2, 3, 1)
        src = {"samples": vae.encode(pix)}

        def run(method, target, cfg, strength):
            pos, neg, tgt = enc[EDIT["source"]], enc[""], enc[target]
            if method == "edict":
                sig = C("InvEditEDICTSigmas").execute(model, steps, "official_980_0", strength)[0]
                pair = C("InvEditEDICTInvert").execute(model=model, positive=pos, negative=neg, latent=src,
                                                       sigmas=sig, cfg=cfg, state_dtype="float64", **opts)[0]
                return C("InvEditEDICTRegenerate").execute(model=model, positive=tgt, negative=neg, pair=pair, cfg=cfg,
                                                           **opts)[0]["samples"]
            sig = C("BasicScheduler").execute(model, "ddim_uniform", steps, 1.0)[0]
            sig = sig[sig.numel() - 1 - int(steps * strength):]
            noise = C("InvEditDDIMInvert").execute(model=model, positive=pos, negative=neg, latent=src, sigmas=sig,
                                                   cfg=cfg)[0]
            sampler = comfy.samplers.sampler_object("ddim")
            return comfy.sample.sample_custom(model, torch.zeros_like(noise["samples"]), cfg, sampler, sig, tgt, neg,
                                              noise["samples"], disable_pbar=True, seed=0)

        for method in ("edict", "ddim"):
            for cfg in (1.0, 3.0):
                rec = run(method, EDIT["source"], cfg, 1.0)
                out = vae.decode(rec).clamp(0, 1)
                res["recon"][method, cfg] = {"latent_mse": float((rec - src["samples"]).pow(2).mean()),
                                             "psnr_db": psnr(out, pix)}
            rec = run(method, EDIT["target"], EDIT["cfg"], EDIT["strength"])
            out = vae.decode(rec).permute(0, 3, 1, 2).clamp(0, 1)
            (c0, a0), (c1, a1) = data.shape_centroid(imgs), data.shape_centroid(out)
            res["edit"][method] = {
                "blue": float((colour_clf(out).argmax(1) == data.COLOURS.index("blue")).float().mean()),
                "circle": float((shape_clf(out).argmax(1) == data.SHAPES.index("circle")).float().mean()),
                "shift_px": float((c1 - c0).norm(dim=1).median()), "area_ratio": float((a1 / a0).median())}
        res["vae_only_psnr_db"] = psnr(vae.decode(src["samples"]).clamp(0, 1), pix)
    res["edict_edit_blue"], res["edict_edit_circle"] = res["edit"]["edict"]["blue"], res["edit"]["edict"]["circle"]
    return res


def print_edict_tables(r: dict, n: int) -> None:
    print(f"\nEDICT vs DDIM inversion — {n} held-out red circles, {r['edit_steps']} steps (EDICT: official schedule; "
          f"DDIM: ddim_uniform + stock ddim sampler); VAE alone: {r['vae_only_psnr_db']:.2f} dB")
    print(f"| {'method':<8} | {'cfg':>4} | {'latent MSE':>11} | {'pixel PSNR':>10} |")
    print(f"|{'-' * 10}|{'-' * 6}|{'-' * 13}|{'-' * 12}|")
    for (method, cfg), v in r["recon"].items():
        print(f"| {method:<8} | {cfg:4.1f} | {v['latent_mse']:11.3e} | {v['psnr_db']:7.2f} dB |")
    print(f"\nPrompt-swap edit '{EDIT['source']}' -> '{EDIT['target']}' (strength {EDIT['strength']}, cfg {EDIT['cfg']})")
    print(f"| {'method':<8} | {'labelled blue':>13} | {'still a circle':>14} | {'centre shift':>12} | {'area ratio':>10} |")
    print(f"|{'-' * 10}|{'-' * 15}|{'-' * 16}|{'-' * 14}|{'-' * 12}|")
    for method, v in r["edit"].items():
        print(f"| {method:<8} | {100 * v['blue']:12.1f}% | {100 * v['circle']:13.1f}% | {v['shift_px']:9.1f} px "
              f"| {v['area_ratio']:10.2f} |")
    print("(centre shift and area ratio: medians over the images, of the coloured region, edit vs source)")


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
    ap.add_argument("--edit-images", type=int, default=16)
    a = ap.parse_args(argv)
    r = evaluate(a.seeds, a.steps, a.cfg, a.heldout)
    r.update(edict_vs_ddim(a.edit_images))
    print_edict_tables(r, a.edit_images)
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
