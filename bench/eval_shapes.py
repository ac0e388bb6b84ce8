"""Evaluation of the shapes world through the real ComfyUI host and the files set-up assembled (stock loaders):

1. VAE reconstruction PSNR on held-out images (VAELoader -> VAEEncode -> VAEDecode);
2. attribute classifier accuracy on held-out images;
3. toy-CLIP zero-shot accuracy (argmax over the 12 captions, read as colour and shape);
4. prompted samples: every caption x --seeds seeds, --steps steps of euler at --cfg (stock KSampler), decoded and
   labelled by the classifiers: the fraction with the prompted colour and with the prompted shape; the same for the
   SD3 world (its checkpoint, sgm_uniform, 16-channel latents) and its 16-channel VAE's PSNR, when assembled.

5. EDICT vs DDIM inversion: --edit-images held-out red circles inverted and regenerated with the same prompt (latent
   MSE, pixel PSNR), at cfg 1 and 3;
6. prompt-swap edit "a red circle" -> "a blue circle" (invert with the source, regenerate with the target; 50 official
   steps, strength 0.8, cfg 3): the fraction labelled blue and the fraction whose shape is still a circle, for EDICT
   and for DDIM inversion + the stock sampler with the same settings.
7. h-space: a red -> blue direction from prompts ("a red circle" -> "a blue circle", 8 samples) applied with the Asyrp
   sampler (full window) to red objects generated from "a red circle/square/triangle" (cfg 3, --hspace-seeds seeds
   each): along a strength sweep, the fraction labelled blue, the fraction whose shape label is unchanged from the
   unedited sample, the mean classifier probability of blue and the blue − red logit margin; then the probability
   sweep on unconditional samples (empty prompt, cfg 1, all colours: on red objects the classifier is saturated at
   P(blue) ≈ 0, so a fall for negative strengths can only show where it is not): P(blue) must not fall (by more than
   1e-3, the size of its noise where it is ~0) and the margin must rise strictly along the sweep; plus the red-object scores of a direction trained with the toy CLIP (h-space Train Direction,
   8 inverted red circles).

8. DOODL: prompt "a circle" (any colour) and the colour classifier's "blue" as the target, over --doodl-seeds
   seeds: the fraction labelled blue for plain EDICT sampling, one-step classifier guidance and DOODL, with the model
   evaluations and backward passes each spent (DOODL: 6 iterations of the 10-step chain), and, at DOODL's budget of
   model evaluations, plain EDICT best-of-n (n seeds per image, the one with the lowest loss kept).

    python -m bench.eval_shapes [--seeds 8] [--steps 20] [--cfg 5.0] [--heldout 512] [--edit-images 16]
                                [--hspace-seeds 4] [--doodl-seeds 8]
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
from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS, FILES, SD3_FILES, TOY_CLIP_DIR  # noqa: E402

TARGETS = {"vae_psnr_db": 30.0, "classifier_colour": 0.98, "classifier_shape": 0.98, "clip_colour": 0.95,
           "clip_shape": 0.95, "samples_colour": 0.90, "samples_shape": 0.90,
           "edict_edit_blue": 0.80, "edict_edit_circle": 0.90,
           "sd3_vae_psnr_db": 30.0, "sd3_samples_colour": 0.90, "sd3_samples_shape": 0.90}  # the SD3 world
HSPACE = {"strengths": (-5.0, 0.0, 2.5, 5.0, 10.0), "steps": 20, "cfg": 3.0,
          "sweep": (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0), "trained_strengths": (-1.0, 0.0, 1.0, 2.0)}
DOODL = {"steps": 10, "cfg": 3.0, "iterations": 6, "lr": 300.0, "grad_clip": 0.02, "guidance_scale": 200.0}
EDIT = {"source": "a red circle", "target": "a blue circle", "steps": 50, "strength": 0.8, "cfg": 3.0}


def edict_vs_ddim(n: int = 16, steps: int = EDIT["steps"], checkpoint: str = FILES["checkpoints"],
                  cfgs: tuple = (1.0, 3.0), recon_strength: float = 1.0) -> dict:
    """Reconstruction (EDICT vs DDIM at ``cfgs``, inverted over ``recon_strength`` of the steps) and the prompt-swap
    edit score on n held-out red circles. On a flow model (the SD3 world) both use its ``simple`` schedule (EDICT
    Sigmas' default there), and the reconstruction needs recon_strength < 1: DDIM's hand-over stops below σ = 1."""
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
    colour_clf, shape_clf = (load_classifier(models / CLASSIFIER_DIR / f)[0] for f in CLASSIFIERS)
    imgs = data.make_batch(n, data.HELDOUT_SEED + 17, colour=data.COLOURS.index("red"),
                           shape=data.SHAPES.index("circle")).images
    opts = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)
    res: dict = {"recon": {}, "edit": {}, "edit_steps": steps, "recon_strength": recon_strength}
    with torch.inference_mode():
        model, te, vae = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoint)
        flow = host.pack_module("adapters.checks").is_flow(model.get_model_object("model_sampling"))
        res["world"] = "SD3 world (flow MMDiT)" if flow else "U-Net world"
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
            sig = C("BasicScheduler").execute(model, "simple" if flow else "ddim_uniform", steps, 1.0)[0]
            sig = sig[sig.numel() - 1 - int(steps * strength):]
            noise = C("InvEditDDIMInvert").execute(model=model, positive=pos, negative=neg, latent=src, sigmas=sig,
                                                   cfg=cfg)[0]
            sampler = comfy.samplers.sampler_object("ddim")
            return comfy.sample.sample_custom(model, torch.zeros_like(noise["samples"]), cfg, sampler, sig, tgt, neg,
                                              noise["samples"], disable_pbar=True, seed=0)

        for method in ("edict", "ddim"):
            for cfg in cfgs:
                rec = run(method, EDIT["source"], cfg, recon_strength)
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
    sched = ("simple (shift 3) for both, + stock ddim (euler) sampler" if r["world"].startswith("SD3") else
             "EDICT: official schedule; DDIM: ddim_uniform + stock ddim sampler")
    print(f"\nEDICT vs DDIM inversion — {r['world']}, {n} held-out red circles, {r['edit_steps']} steps, strength "
          f"{r['recon_strength']} ({sched}); VAE alone: {r['vae_only_psnr_db']:.2f} dB")
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


def hspace_red_to_blue(seeds: int = 4, train_images: int = 8) -> dict:
    """Item 7 of the module docstring: {"prompts": {strength: scores}, "trained": {strength: scores}}."""
    host.boot()
    import torch
    import comfy.sample
    import comfy.utils
    import nodes

    comfy.utils.PROGRESS_BAR_ENABLED = False
    C = host.node_class
    models = BASE / "models"
    colour_clf, shape_clf = (load_classifier(models / CLASSIFIER_DIR / f)[0] for f in CLASSIFIERS)
    blue, red_i, steps = data.COLOURS.index("blue"), data.COLOURS.index("red"), HSPACE["steps"]
    res: dict = {}
    with torch.inference_mode():
        model, te, vae = nodes.CheckpointLoaderSimple().load_checkpoint(FILES["checkpoints"])
        enc = {t: nodes.CLIPTextEncode().encode(te, t)[0] for t in ("a red circle", "a blue circle", "")}
        for si in range(len(data.SHAPES)):
            enc[data.caption(0, si)] = nodes.CLIPTextEncode().encode(te, data.caption(0, si))[0]
        direction = C("InvEditHSpaceFromPrompts").execute(
            model, enc["a red circle"], enc["a blue circle"], nodes.EmptyLatentImage().generate(64, 64, 8)[0],
            steps, 0, "per_timestep")[0]
        red = data.make_batch(train_images, data.HELDOUT_SEED + 29, colour=0, shape=data.SHAPES.index("circle")).images
        trained = C("InvEditHSpaceTrainDirection").execute(
            model=model, vae=vae, clip_name=Path(TOY_CLIP_DIR).name, neutral=enc[""],
            latent={"samples": vae.encode(red.permute(0, 2, 3, 1))}, source_text="a red circle",
            target_text="a blue circle", init="inverted", steps=10, t_edit=500, lambda_clip=0.8, recon_mult=3.0,
            lr=0.003, epochs=1, batch_size=1, seed=0,
            prompt_templates=False).args[0]  # the toy CLIP's 16 tokens cut the official templates
        sig = C("BasicScheduler").execute(model, "ddim_uniform", steps, 1.0)[0]
        sampler = C("InvEditSamplerAsyrp").execute(0, 1.0)[0]

        def images(m, si, prompt=None, cfg=HSPACE["cfg"], n=seeds):
            lat = torch.zeros(n, 4, data.SIZE // 8, data.SIZE // 8)
            out = comfy.sample.sample_custom(m, comfy.sample.prepare_noise(lat, 300 + si), cfg, sampler, sig,
                                             enc[data.caption(0, si) if prompt is None else prompt], enc[""], lat,
                                             disable_pbar=True, seed=300 + si)
            return vae.decode(out).permute(0, 3, 1, 2).clamp(0, 1)

        def scores(outs, base_shape=None):
            logits = torch.cat([colour_clf(o) for o in outs])
            p = logits.softmax(1)
            v = {"blue": float((p.argmax(1) == blue).float().mean()), "p_blue": float(p[:, blue].mean()),
                 "margin": float((logits[:, blue] - logits[:, red_i]).mean())}
            if base_shape is not None:
                same = torch.cat([shape_clf(o).argmax(1) == b for o, b in zip(outs, base_shape)])
                v["shape_kept"] = float(same.float().mean())
            return v

        def apply(d, s, t_edit):
            return C("InvEditHSpaceApply").execute(model, d, s, 999, t_edit, "asymmetric", "both", "resize", True)[0]

        base = [images(model, si) for si in range(len(data.SHAPES))]
        base_shape = [shape_clf(b).argmax(1) for b in base]
        for name, d, strengths, t_edit in (("prompts", direction, HSPACE["strengths"], 0),
                                           ("trained", trained, HSPACE["trained_strengths"], 500)):
            res[name] = {s: scores(base if s == 0 else [images(apply(d, s, t_edit), si) for si in range(3)],
                                   base_shape) for s in strengths}
        res["sweep"] = {s: scores([images(apply(direction, s, 0), 7, prompt="", cfg=1.0, n=4 * seeds)])
                        for s in HSPACE["sweep"]}
    probs, margins = ([v[k] for v in res["sweep"].values()] for k in ("p_blue", "margin"))
    res["hspace_monotone"] = (all(a <= b + 1e-3 for a, b in zip(probs, probs[1:])) and probs[0] < probs[-1]
                              and all(a < b for a, b in zip(margins, margins[1:])))
    res["hspace_seeds"] = seeds
    return res


def print_hspace_tables(r: dict) -> None:
    n = 3 * r["hspace_seeds"]
    for name, title in (("prompts", "direction from prompts, full window"),
                        ("trained", "direction trained with the toy CLIP, t_edit 500")):
        print(f"\nh-space red -> blue on {n} red objects ({title}; Asyrp sampler, {HSPACE['steps']} steps, "
              f"cfg {HSPACE['cfg']})")
        print(f"| {'strength':>8} | {'labelled blue':>13} | {'P(blue)':>7} | {'blue-red logit':>14} | "
              f"{'shape kept':>10} |")
        print(f"|{'-' * 10}|{'-' * 15}|{'-' * 9}|{'-' * 16}|{'-' * 12}|")
        for s, v in r[name].items():
            print(f"| {s:8.1f} | {100 * v['blue']:12.1f}% | {v['p_blue']:7.3f} | {v['margin']:14.2f} | "
                  f"{100 * v['shape_kept']:9.1f}% |")
    print(f"\nh-space red -> blue (prompts) on {4 * r['hspace_seeds']} unconditional samples (empty prompt, cfg 1)")
    print(f"| {'strength':>8} | {'labelled blue':>13} | {'P(blue)':>7} | {'blue-red logit':>14} |")
    print(f"|{'-' * 10}|{'-' * 15}|{'-' * 9}|{'-' * 16}|")
    for s, v in r["sweep"].items():
        print(f"| {s:8.2f} | {100 * v['blue']:12.1f}% | {v['p_blue']:7.3f} | {v['margin']:14.2f} |")
    print(f"P(blue) rising with the strength (and the margin strictly): {'yes' if r['hspace_monotone'] else 'NO'}")


def doodl_vs_guidance(seeds: int = 8) -> dict:
    """Item 8 of the module docstring: {method: {"blue": fraction, "evals": model evaluations, "backward": passes}}
    per image (each evaluation is one CFG batch)."""
    host.boot()
    import torch
    import comfy.sample
    import comfy.utils
    import nodes

    comfy.utils.PROGRESS_BAR_ENABLED = False
    C = host.node_class
    colour_clf = load_classifier(BASE / "models" / CLASSIFIER_DIR / CLASSIFIERS[0])[0]
    blue, T, m = data.COLOURS.index("blue"), DOODL["steps"], DOODL["iterations"]
    n_best = ((m + 1) * 2 * T + m * 2 * T) // (2 * T)  # plain EDICT generations at DOODL's evaluations
    hits = {"plain EDICT": 0, "one-step guidance": 0, "DOODL": 0, f"plain EDICT, best of {n_best}": 0}
    with torch.inference_mode():
        model, te, vae = nodes.CheckpointLoaderSimple().load_checkpoint(FILES["checkpoints"])
        pos, neg = nodes.CLIPTextEncode().encode(te, "a circle")[0], nodes.CLIPTextEncode().encode(te, "")[0]
        loss = C("InvEditDOODLClassifierLoss").execute(
            classifier=CLASSIFIERS[0], architecture="small_cnn", target="blue", num_classes=0, normalisation="none",
            mode="cross_entropy", weight=1.0, crops=4, crop_power=0.3, input_size=64).args[0]
        sig = C("InvEditEDICTSigmas").execute(model, T, "official_980_0", 1.0)[0]
        guide = C("InvEditDOODLGuidanceSampler").execute(vae, loss, DOODL["guidance_scale"], 0)[0]
        edict_sampler = C("InvEditSamplerEDICT").execute(0.93, True, True, "float64", "x")[0]
        for seed in range(seeds):
            lat = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
            out = C("InvEditDOODLOptimize").execute(
                model=model, positive=pos, negative=neg, vae=vae, loss=loss, latent=lat, seed=seed, steps=T,
                cfg=DOODL["cfg"], mix_p=0.93, iterations=m, lr=DOODL["lr"], grad_clip=DOODL["grad_clip"],
                momentum=0.9, perturb_std=1e-4, keep="best", backprop="reversible")
            plain = C("InvEditDOODLOptimize").execute(
                model=model, positive=pos, negative=neg, vae=vae, loss=loss, latent=lat, seed=seed, steps=T,
                cfg=DOODL["cfg"], mix_p=0.93, iterations=0, lr=0.0, grad_clip=DOODL["grad_clip"], momentum=0.9,
                perturb_std=0.0, keep="last", backprop="reversible")
            noise = comfy.sample.prepare_noise(lat["samples"], seed)
            guided = comfy.sample.sample_custom(model, noise, DOODL["cfg"], guide, sig[:-1], pos, neg, lat["samples"],
                                                disable_pbar=True, seed=seed)
            many = torch.zeros(n_best, 4, 8, 8)
            batch = comfy.sample.sample_custom(model, comfy.sample.prepare_noise(many, 1000 + seed), DOODL["cfg"],
                                               edict_sampler, sig, pos, neg, many, disable_pbar=True, seed=seed)
            imgs = vae.decode(batch).permute(0, 3, 1, 2).clamp(0, 1)
            best = int(torch.stack([loss(i[None], torch.Generator().manual_seed(0)) for i in imgs]).argmin())
            for name, z in (("DOODL", out.args[0]["samples"]), ("plain EDICT", plain.args[0]["samples"]),
                            ("one-step guidance", guided), (f"plain EDICT, best of {n_best}", batch[best:best + 1])):
                img = vae.decode(z).permute(0, 3, 1, 2).clamp(0, 1)
                hits[name] += int(colour_clf(img).argmax(1)[0] == blue)
    # one-step guidance: T guided CFG calls + T uncond calls with gradients (the official baseline's)
    cost = {"plain EDICT": (2 * T, 0), "one-step guidance": (2 * T, T), "DOODL": ((m + 1) * 2 * T + m * 2 * T, m * 2 * T),
            f"plain EDICT, best of {n_best}": (n_best * 2 * T, 0)}
    return {"doodl": {k: {"blue": hits[k] / seeds, "evals": cost[k][0], "backward": cost[k][1]} for k in hits},
            "doodl_seeds": seeds}


def print_doodl_table(r: dict) -> None:
    print(f"\nDOODL vs one-step guidance vs plain — 'a circle' -> classifier 'blue', {r['doodl_seeds']} seeds, "
          f"{DOODL['steps']} steps, cfg {DOODL['cfg']}; DOODL {DOODL['iterations']} iterations (lr {DOODL['lr']}, "
          f"clip {DOODL['grad_clip']}), guidance λ {DOODL['guidance_scale']}")
    print(f"| {'method':<26} | {'labelled blue':>13} | {'model evals':>11} | {'backward':>8} |")
    print(f"|{'-' * 28}|{'-' * 15}|{'-' * 13}|{'-' * 10}|")
    for k, v in r["doodl"].items():
        print(f"| {k:<26} | {100 * v['blue']:12.1f}% | {v['evals']:11d} | {v['backward']:8d} |")


def prompted_samples(checkpoint: str, classifiers: dict, seeds: int, steps: int, cfg: float,
                     flow: bool = False) -> tuple[float, float]:
    """(colour, shape) fractions of prompted samples labelled as prompted: every caption × ``seeds`` seeds through
    the stock CheckpointLoaderSimple, CLIPTextEncode, KSampler (euler; the normal schedule, for a flow model its
    sgm_uniform) and the checkpoint's VAE (``flow``: an SD3 model, EmptySD3LatentImage's 16 channels)."""
    import torch
    import nodes
    model, te, vae = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoint)
    neg = nodes.CLIPTextEncode().encode(te, "")[0]
    hits = {"colour": 0, "shape": 0}
    n = 0
    for ci in range(len(data.COLOURS)):
        for si in range(len(data.SHAPES)):
            pos = nodes.CLIPTextEncode().encode(te, data.caption(ci, si))[0]
            latent = {"samples": torch.zeros(seeds, 16 if flow else 4, data.SIZE // 8, data.SIZE // 8)}
            out = nodes.KSampler().sample(model, 1000 + 17 * ci + si, steps, cfg, "euler",
                                          "sgm_uniform" if flow else "normal", pos, neg, latent, denoise=1.0)[0]
            imgs = vae.decode(out["samples"]).permute(0, 3, 1, 2).clamp(0, 1)
            hits["colour"] += int((classifiers["colour"](imgs).argmax(1) == ci).sum())
            hits["shape"] += int((classifiers["shape"](imgs).argmax(1) == si).sum())
            n += seeds
    return hits["colour"] / n, hits["shape"] / n


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
    classifiers = {attr: load_classifier(models / CLASSIFIER_DIR / f)[0]
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

        t = time.time()
        res["samples_colour"], res["samples_shape"] = prompted_samples(FILES["checkpoints"], classifiers, seeds,
                                                                       steps, cfg)
        res["sampling_seconds"] = time.time() - t
        if (models / "checkpoints" / SD3_FILES["checkpoints"]).exists():  # the flow edition (issue 15)
            vae16 = nodes.VAELoader().load_vae(SD3_FILES["vae"])[0]
            rec = torch.cat([vae16.decode(vae16.encode(p)) for p in pix.split(128)])
            res["sd3_vae_psnr_db"] = psnr(rec.clamp(0, 1), pix)
            t = time.time()
            res["sd3_samples_colour"], res["sd3_samples_shape"] = prompted_samples(
                SD3_FILES["checkpoints"], classifiers, seeds, steps, cfg, flow=True)
            res["sd3_sampling_seconds"] = time.time() - t
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--heldout", type=int, default=512)
    ap.add_argument("--edit-images", type=int, default=16)
    ap.add_argument("--hspace-seeds", type=int, default=4)
    ap.add_argument("--doodl-seeds", type=int, default=8)
    a = ap.parse_args(argv)
    r = evaluate(a.seeds, a.steps, a.cfg, a.heldout)
    r.update(edict_vs_ddim(a.edit_images))
    print_edict_tables(r, a.edit_images)
    if "sd3_vae_psnr_db" in r:  # the SD3 world's files are assembled
        r["sd3"] = edict_vs_ddim(a.edit_images, checkpoint=SD3_FILES["checkpoints"], cfgs=(1.0, 4.0),
                                 recon_strength=0.8)
        print_edict_tables(r["sd3"], a.edit_images)
    r.update(hspace_red_to_blue(a.hspace_seeds))
    print_hspace_tables(r)
    r.update(doodl_vs_guidance(a.doodl_seeds))
    print_doodl_table(r)
    print(f"\nShapes world — held-out {a.heldout} images; samples: 12 captions x {a.seeds} seeds, {a.steps} euler "
          f"steps, cfg {a.cfg}")
    print(f"| {'measure':<34} | {'value':>8} | {'target':>8} | met |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|-----|")
    for k, target in TARGETS.items():
        if k not in r:  # the SD3 world's files are not assembled
            continue
        v = r[k]
        shown = f"{v:8.2f}" if k.endswith("_db") else f"{100 * v:7.1f}%"
        tshown = f"{target:8.1f}" if k.endswith("_db") else f"{100 * target:7.0f}%"
        print(f"| {k:<34} | {shown} | {tshown} | {'yes' if v >= target else 'NO':<3} |")
    print(f"(sampling took {r['sampling_seconds']:.0f} s" + (f"; the SD3 world's {r['sd3_sampling_seconds']:.0f} s"
                                                            if "sd3_sampling_seconds" in r else "") + ")")


if __name__ == "__main__":
    main()
