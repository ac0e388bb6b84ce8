"""One edit scorecard for every method of the pack, on the shapes world through the real ComfyUI host: the same
held-out images, the same judges (harness/shapes/judges.py), one row per method and task.

Tasks
  edit      red objects (held-out circles, squares and triangles) -> blue, by every editing method;
  generate  "a circle" (any colour) -> the colour classifier's "blue" (DOODL's setting: a target the prompt allows);
  rare      "a red circle" -> "blue" (a target the prompt makes rare: where a gradient should be worth its cost).
Columns
  blue          attribute success: the colour classifier labels the result blue;
  blue (CLIP)   the same by a second judge, the toy CLIP's zero-shot colour (12 prompts "a <colour> <shape>", the
                probabilities summed per colour): CASO trains from the colour classifier, so it is judged by both;
  shape kept    the shape classifier's label equals the source's (generation: the prompt's circle);
  shift, area   centre shift (px) and area ratio of the coloured object, result vs source (medians);
  bg PSNR       background PSNR outside the source object (its procedural mask, grown by 2 px; mean);
  recon PSNR    pixel PSNR of the method's plain reconstruction (the same inversion, no edit), where it has one;
  evals, bwd    U-Net evaluations and U-Net backward passes per image, counted by a wrapper on the model (cond and
                uncond batched count once; one-time costs such as extracting or training a direction are not included and are
                given below the table);
  s/img         seconds per image on this machine.
Generation rows take the plain EDICT sample of the same seed as the source. Rows named (SD3) run the same method on
the SD3 shapes world (a flow-matching MMDiT) with the same images, seeds and settings.

    python -m bench.scorecard [--images 6] [--seeds 6] [--out out/]      (part of `make bench`)
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import host  # noqa: E402
from harness.paths import BASE, ROOT  # noqa: E402
from harness.shapes import data  # noqa: E402
from harness.shapes.judges import Judges  # noqa: E402
from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS, FILES, SD3_FILES  # noqa: E402

SEED = data.HELDOUT_SEED + 101
EDIT = {"steps": 50, "strength": 0.8, "cfg": 3.0}             # prompt swap (the EDICT paper's edit settings)
# BDIA (issue 28): the paper's γ 0.5 and γ 0.2 at 20 steps (exact there), strength 0.8, cfg 3; RF-Solver / FireFlow: the same
# 20-step grid at strength 0.8 (their inversion needs σ < 1); FlowEdit: 20 steps, the last 15 edited, CFG 3.5 / 7.5
# (the official 13.5 overshoots this world: tests/host/test_flowedit_host.py)
BDIA = {"steps": 20, "strength": 0.8, "cfg": 3.0, "gamma": 0.5, "small_gamma": 0.2}
FLOWEDIT = {"steps": 20, "n_max": 15, "source_cfg": 3.5, "target_cfg": 7.5}
HSPACE = {"steps": 30, "strength": 5.0, "trained_strength": 2.0, "t_edit": 500}
DOODL = {"steps": 10, "cfg": 3.0, "iterations": 6, "lr": 300.0, "edit_clip": 0.003, "gen_clip": 0.02}
GUIDANCE = {"steps": 10, "scale": 200.0}
# StyleDiffusion / null-text / DDIM + P2P (guidance 3: the shapes world's; the README's tau defaults, P2Plus tau_u .5)
P2P = {"steps": 10, "guidance": 3.0, "sd_inner": 20, "nt_inner": 10, "tau_v": 0.5, "tau_c": 0.6, "tau_s": 0.6,
       "tau_u": 0.5}
SDEDIT_DENOISE = 0.6
# CASO: the 4 colour classes trained once from the colour classifier on unlabeled images (steps × batch ≤ 200 images
# seen), then each edit inverts (DDIM, the empty prompt) to the window's start and samples with λ inside it
CASO = {"train_images": 128, "steps": 400, "batch": 2, "train_scale": 10.0, "gamma": 1.0, "scale": 3.0,
        "window": 0.4, "edit_steps": 50, "measure_images": 8, "measure_window": 0.6, "own_scale": 1.0}
CASO_PREFIX = "scorecard_caso"
# EMS (issue 16): the paper's sampling settings (50 steps, strength 0.75 in diffusers' convention, cfg 7.5, euler on
# the simple schedule), α 1, CSDS with its defaults (50 iterations, the paper's η 0.1 → 0.01 — since issue 24 the step
# of Eq. 2's full gradient, twice the earlier step —, λ 0.5, attribute prompt "blue")
EMS = {"steps": 50, "strength": 0.75, "cfg": 7.5, "alpha": 1.0, "iterations": 50, "lam": 0.5, "seed": 0,
       "degrees": (0.0, 0.5, 1.0, 1.5), "sde_images": 6}


class Counter:
    """A U-Net function wrapper counting evaluations per image (a call on B images with cond and uncond batched is
    B evaluations) and the backward passes through them."""

    def __init__(self):
        self.evals = self.backward = 0

    def __deepcopy__(self, memo):
        """ModelPatcher.clone deep-copies model_options: every clone (h-space Apply, P2P's patches, …) must count
        here, not in a copy (before this, calls through cloned models were not counted)."""
        return self

    def __call__(self, apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        self.evals += args["input"].shape[0] // max(1, len(args.get("cond_or_uncond") or [0]))
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad):
        self.backward += 1
        return grad


@dataclass
class Row:
    task: str
    method: str
    verdicts: list = field(default_factory=list)
    recon_psnr: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    backward: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    images: list = field(default_factory=list)
    clip_colour: list = field(default_factory=list)
    note: str = ""

    def summary(self, target_shapes: list[str]) -> dict:
        v = self.verdicts
        fin = [x.background_psnr_db for x in v if math.isfinite(x.background_psnr_db)]
        return {"blue": sum(x.colour == "blue" for x in v) / len(v),
                "blue_clip": sum(c == "blue" for c in self.clip_colour) / len(self.clip_colour),
                "shape_kept": sum(x.shape == s for x, s in zip(v, target_shapes)) / len(v),
                "shift_px": statistics.median(x.shift_px for x in v), "area": statistics.median(x.area_ratio for x in v),
                "bg_psnr": statistics.mean(fin) if fin else math.nan,
                "recon_psnr": statistics.mean(self.recon_psnr) if self.recon_psnr else math.nan,
                "evals": statistics.mean(self.evals), "backward": statistics.mean(self.backward),
                "seconds": statistics.mean(self.seconds)}


class World:
    """A shapes-world checkpoint through the stock loaders (the U-Net world, or ``ckpt`` = the SD3 world), the pack's
    nodes, the judges and prompt encodings."""

    def __init__(self, ckpt: str = FILES["checkpoints"]):
        self.load(ckpt)
        self.judges = Judges(BASE / "models" / CLASSIFIER_DIR, CLASSIFIERS)
        pairs = [(c, sh) for c in data.COLOURS for sh in data.SHAPES]
        with self.torch.inference_mode():
            self.clip_judge = self.C("InvEditCLIPZeroShotClassifier").execute(
                clip_name="shapes-toy-clip", prompts="\n".join(f"a {c} {sh}" for c, sh in pairs),
                class_names=",".join(f"{c} {sh}" for c, sh in pairs)).args[0]

    def load(self, ckpt: str) -> None:
        """The checkpoint through CheckpointLoaderSimple, and a clone of its model whose evaluations are counted."""
        host.boot()
        import torch
        import comfy.utils
        import nodes
        comfy.utils.PROGRESS_BAR_ENABLED = False
        self.torch, self.nodes, self.C = torch, nodes, host.node_class
        with torch.inference_mode():
            self.model, self.te, self.vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt)
        self.flow = host.pack_module("adapters.checks").is_flow(self.model.get_model_object("model_sampling"))
        self.channels = self.model.model.latent_format.latent_channels
        self._enc: dict = {}
        self.counter = Counter()
        self.counted = self.model.clone()
        self.counted.set_model_unet_function_wrapper(self.counter)

    def enc(self, text: str):
        if text not in self._enc:
            with self.torch.inference_mode():
                self._enc[text] = self.nodes.CLIPTextEncode().encode(self.te, text)[0]
        return self._enc[text]

    def clip_colours(self, images) -> list[str]:
        """The second judge's colour of each image: the toy CLIP's zero-shot probabilities summed per colour."""
        with self.torch.inference_mode():
            p = self.clip_judge.logits(images).softmax(1).view(images.shape[0], len(data.COLOURS), -1).sum(2)
        return [data.COLOURS[int(i)] for i in p.argmax(1)]

    def judge(self, row, edited, source, labels=None) -> None:
        """Both judges' verdicts on ``edited`` into ``row``, with the image."""
        row.verdicts += self.judges.judge(edited, source, labels)
        row.clip_colour += self.clip_colours(edited)
        row.images.append(edited)

    def encode(self, images):
        with self.torch.inference_mode():
            return {"samples": self.vae.encode(images.permute(0, 2, 3, 1))}

    def decode(self, samples):
        with self.torch.inference_mode():
            return self.vae.decode(samples).permute(0, 3, 1, 2).clamp(0, 1)

    def loss(self, target: str = "blue", classifier: str = CLASSIFIERS[0]):
        with self.torch.inference_mode():
            return self.C("InvEditDOODLClassifierLoss").execute(
                classifier=classifier, architecture="small_cnn", target=target, num_classes=0, normalisation="none",
                mode="cross_entropy", weight=1.0, crops=4, crop_power=0.3, input_size=64).args[0]

    def clip_loss(self, text: str):
        with self.torch.inference_mode():
            return self.C("InvEditDOODLCLIPLoss").execute(clip_name="shapes-toy-clip", text=text, weight=1.0,
                                                          reduction="mean", crops=4, crop_power=0.3).args[0]

    def timed(self, fn):
        """(result, U-Net evaluations, backward passes, seconds) of fn(model) on the counted model."""
        self.counter.evals = self.counter.backward = 0
        t = time.perf_counter()
        with self.torch.inference_mode():
            out = fn(self.counted)
        return out, self.counter.evals, self.counter.backward, time.perf_counter() - t


# ---- the editing methods: f(world, model, source latent, source prompt, target prompt, shape) -> latent --------

def _ddim_sigmas(w, steps, strength=1.0):
    """The DDIM grid (a flow model: its own 'simple' schedule, whose top σ = 1 a strength below 1 leaves out)."""
    sig = w.C("BasicScheduler").execute(w.model, "simple" if w.flow else "ddim_uniform", steps, 1.0)[0]
    return sig[sig.numel() - 1 - int(steps * strength):]


def _ddim_invert(w, m, src, prompt, sig, cfg):
    return w.C("InvEditDDIMInvert").execute(model=m, positive=w.enc(prompt), negative=w.enc(""), latent=src,
                                            sigmas=sig, cfg=cfg)[0]


def _sample(w, m, sampler, sig, positive, latent, cfg, noise=None, seed=0):
    import comfy.sample
    import comfy.samplers
    if isinstance(sampler, str):
        sampler = comfy.samplers.sampler_object(sampler)
    lat = latent["samples"]
    return comfy.sample.sample_custom(m, w.torch.zeros_like(lat) if noise is None else noise, cfg, sampler, sig,
                                      w.enc(positive), w.enc(""), lat, disable_pbar=True, seed=seed)


def ddim_swap(w, m, src, source, target, shape):
    sig = _ddim_sigmas(w, EDIT["steps"], EDIT["strength"])
    return _sample(w, m, "ddim", sig, target, _ddim_invert(w, m, src, source, sig, EDIT["cfg"]), EDIT["cfg"])


def _edict_pair(w, m, src, source, steps, strength, cfg):
    sig = w.C("InvEditEDICTSigmas").execute(m, steps, "official_980_0", strength)[0]
    return w.C("InvEditEDICTInvert").execute(model=m, positive=w.enc(source), negative=w.enc(""), latent=src,
                                             sigmas=sig, cfg=cfg, mix_p=0.93, leapfrog=True,
                                             official_input_scaling=True, state_dtype="float64")[0]


def edict_swap(w, m, src, source, target, shape):
    pair = _edict_pair(w, m, src, source, EDIT["steps"], EDIT["strength"], EDIT["cfg"])
    return w.C("InvEditEDICTRegenerate").execute(model=m, positive=w.enc(target), negative=w.enc(""), pair=pair,
                                                 cfg=EDIT["cfg"], mix_p=0.93, leapfrog=True,
                                                 official_input_scaling=True)[0]["samples"]


def bdia_swap(gamma: float):
    """BDIA Invert with the source prompt, BDIA Regenerate with the target (both at ``gamma``)."""
    def run(w, m, src, source, target, shape):
        sig = w.C("InvEditEDICTSigmas").execute(m, BDIA["steps"], "official_980_0", BDIA["strength"])[0]
        pair = w.C("InvEditBDIAInvert").execute(model=m, positive=w.enc(source), negative=w.enc(""), latent=src,
                                                sigmas=sig, cfg=BDIA["cfg"], gamma=gamma, state_dtype="float64")[0]
        return w.C("InvEditBDIARegenerate").execute(model=m, positive=w.enc(target), negative=w.enc(""), pair=pair,
                                                    cfg=BDIA["cfg"], gamma=gamma)[0]["samples"]
    return run


def bdia_rows(w) -> tuple[list, dict]:
    """The BDIA methods (the paper's γ, and the smaller one the examples use) and their reconstructions."""
    methods = [(f"BDIA prompt swap (γ {g:g})", bdia_swap(g)) for g in (BDIA["gamma"], BDIA["small_gamma"])]
    return methods, {name: (lambda f: lambda m, s, src, p: f(w, m, src, p, p, s))(f) for name, f in methods}


def flow_solver_swap(node: str):
    """Invert with the solver's SAMPLER (direction invert), then sample the target with it: the stock SamplerCustom
    both ways, add_noise off, on the 20-step simple grid at strength 0.8."""
    def run(w, m, src, source, target, shape):
        sig = _ddim_sigmas(w, BDIA["steps"], BDIA["strength"])
        inv, fwd = (w.C(node).execute(d)[0] for d in ("invert", "sample"))
        noise = _sample(w, m, inv, sig, source, src, BDIA["cfg"])
        return _sample(w, m, fwd, sig, target, {"samples": noise}, BDIA["cfg"])
    return run


def flowedit_edit(w, m, src, source, target, shape):
    """The FlowEdit GUIDER's own sample (what SamplerCustomAdvanced calls; its SAMPLER and NOISE are not used)."""
    import comfy.samplers
    sig = w.C("BasicScheduler").execute(m, "simple", FLOWEDIT["steps"], 1.0)[0]
    guider = w.C("InvEditFlowEditGuider").execute(m, w.enc(source), w.enc(""), w.enc(target), w.enc(""),
                                                   FLOWEDIT["source_cfg"], FLOWEDIT["target_cfg"],
                                                   FLOWEDIT["n_max"], 0, 1, 0)[0]
    lat = src["samples"]
    return guider.sample(w.torch.zeros_like(lat), lat, comfy.samplers.sampler_object("euler"), sig,
                         disable_pbar=True, seed=0)


def hspace_edit(direction, strength, t_edit):
    def run(w, m, src, source, target, shape):
        sig = _ddim_sigmas(w, HSPACE["steps"])
        noise = _ddim_invert(w, m, src, source, sig, 1.0)
        edited = w.C("InvEditHSpaceApply").execute(m, direction, strength, 999, t_edit, "asymmetric", "both",
                                                   "resize", True)[0]
        return _sample(w, edited, w.C("InvEditSamplerAsyrp").execute(0, 1.0)[0], sig, source, noise, 1.0)
    return run


def doodl_edit(loss_for):
    def run(w, m, src, source, target, shape):
        pair = _edict_pair(w, m, src, source, DOODL["steps"], 1.0, DOODL["cfg"])
        with w.torch.inference_mode():
            return w.C("InvEditDOODLOptimize").execute(
                model=m, positive=w.enc(source), negative=w.enc(""), vae=w.vae, loss=loss_for(shape), latent=pair,
                seed=1, steps=DOODL["steps"], cfg=DOODL["cfg"], mix_p=0.93, iterations=DOODL["iterations"],
                lr=DOODL["lr"], grad_clip=DOODL["edit_clip"], momentum=0.9, perturb_std=0.0, keep="best",
                backprop="reversible").args[0]["samples"]
    return run


def _ems_prompts(w, source, target, attribute):
    key = ("ems", source, target, attribute)
    if key not in w._enc:
        with w.torch.inference_mode():
            w._enc[key] = w.C("InvEditEMSEncodeEditPrompts").execute(w.te, source, target, attribute, "").args
    return w._enc[key]


def _ems(w, m, src, source, target, attribute, alpha, iterations):
    c_s, c_t, c_a, c_n = _ems_prompts(w, source, target, attribute)
    with w.torch.inference_mode():
        c = w.C("InvEditEMSTextManipulate").execute(c_s, c_t, alpha, True, True, "all", "zero_pad").args[0]
        return w.C("InvEditEMSEditSampler").execute(
            model=m, positive=c, negative=c_n, attribute=c_a, latent_image=src, seed=EMS["seed"], steps=EMS["steps"],
            strength=EMS["strength"], strength_mode="diffusers", cfg=EMS["cfg"], sampler_name="euler",
            scheduler="simple", iterations=iterations, lr_start=0.1, lr_end=0.01, lr_schedule="geometric",
            lambda_=EMS["lam"], csds_cfg=1.0, direction="toward_attribute", grad_mode="delta",
            step_space="auto").args[0]["samples"]


def ems_edit(iterations: int):
    """EMS at α = EMS["alpha"]: text only (0 iterations) or with CSDS towards the attribute prompt 'blue'."""
    def run(w, m, src, source, target, shape):
        return _ems(w, m, src, source, target, "blue", EMS["alpha"], iterations)
    return run


def ems_measures(w, batch, notes: list, name: str) -> None:
    """The EMS degree sweep (mean P(blue) by the colour classifier at each α: the spec's stand-in for the paper's
    MLLM-VQA 'gradual change') and the SDE of the world for colour and shape (text only, the same noise), on
    EMS["sde_images"] held-out red objects."""
    torch = w.torch
    n = min(EMS["sde_images"], batch.images.shape[0])
    shapes = [data.SHAPES[int(s)] for s in batch.shape[:n]]
    blue = data.COLOURS.index("blue")
    p_blue = {a: [] for a in EMS["degrees"]}
    sde = {"colour": [], "shape": []}
    sde_rmse = {"colour": [], "shape": []}
    sde_fn = host.pack_module("optim.csds").sde
    for i in range(n):
        img, shape = batch.images[i:i + 1], shapes[i]
        src = w.encode(img)
        source = f"a red {shape}"
        for a in EMS["degrees"]:
            out = w.decode(_ems(w, w.model, src, source, f"a blue {shape}", "blue", a, 0))
            with torch.no_grad():
                p_blue[a].append(float(w.judges.colour(out).softmax(1)[0, blue]))
        other = "square" if shape != "square" else "circle"
        for attr, flipped in (("colour", f"a blue {shape}"), ("shape", f"a red {other}")):
            same = w.decode(_ems(w, w.model, src, source, flipped, "", 0.0, 0))
            flip = w.decode(_ems(w, w.model, src, source, flipped, "", 1.0, 0))
            sde[attr].append(sde_fn(img, same, flip, "l2")[0])
            sde_rmse[attr].append(sde_fn(img, same, flip, "rmse")[0])
    means = {a: statistics.mean(v) for a, v in p_blue.items()}
    rising = all(means[a] <= means[b] + 0.01 for a, b in zip(EMS["degrees"], EMS["degrees"][1:]))
    notes.append(f"EMS degree sweep ({name}, text only, {n} red objects -> 'a blue <shape>'): mean P(blue) "
                 + ", ".join(f"α {a:g}: {v:.2f}" for a, v in means.items())
                 + f" ({'non-decreasing' if rising else 'NOT monotone'} in α, to 0.01)")
    notes.append(f"SDE ({name}, Eq. 1, text only, strength {EMS['strength']}, the same noise; lower = better "
                 f"disentangled): with the L2 norm (the paper's Eq. 1) colour {statistics.mean(sde['colour']):.3f}, "
                 f"shape {statistics.mean(sde['shape']):.3f}; with the per-pixel RMSE on [0, 1] pixels colour "
                 f"{statistics.mean(sde_rmse['colour']):.3f}, shape {statistics.mean(sde_rmse['shape']):.3f}")


def guidance_edit(w, m, src, source, target, shape):
    sig = _ddim_sigmas(w, GUIDANCE["steps"])
    noise = _ddim_invert(w, m, src, source, sig, DOODL["cfg"])
    sampler = w.C("InvEditDOODLGuidanceSampler").execute(w.vae, w.loss(), GUIDANCE["scale"], 0)[0]
    return _sample(w, m, sampler, sig, source, noise, DOODL["cfg"])


def _p2p(w, m, source, target, **kw):
    with w.torch.inference_mode():
        out = w.C("InvEditP2PEdit").execute(
            model=m, clip=w.te, negative=w.enc(""), source_prompt=source, target_prompt=target, edit="replace",
            guidance=P2P["guidance"], tau_v=P2P["tau_v"], tau_c=P2P["tau_c"], tau_s=P2P["tau_s"], blend_source="",
            blend_target="", blend_threshold=0.3, blend_start=0.2, reweight_words="", reweight_factor=1.0, **kw).args
    return out[0]["samples"], out[1]["samples"]  # (edit, reconstruction)


def _inversion_args(P):
    return dict(steps=P["steps"], guidance=P["guidance"], lr=0.01, lr_decay=0.01, early_stop=1e-5)


def stylediffusion_p2plus(w, m, src, source, target, shape):
    img = w.decode(src["samples"]).permute(0, 2, 3, 1)
    with w.torch.inference_mode():
        emb = w.C("InvEditStyleDiffusionInvert").execute(
            model=m, positive=w.enc(source), negative=w.enc(""), latent=src, image=img, clip_name="shapes-toy-clip",
            inner_steps=P2P["sd_inner"], inner_decay=0.1, attn_weight=1.0, init="identity", warm_start=True, seed=0,
            **_inversion_args(P2P)).args[0]
    return _p2p(w, m, source, target, value_embed=emb, tau_u=P2P["tau_u"])


def nulltext_p2p(w, m, src, source, target, shape):
    with w.torch.inference_mode():
        emb = w.C("InvEditNullTextInvert").execute(
            model=m, positive=w.enc(source), negative=w.enc(""), latent=src, inner_steps=P2P["nt_inner"],
            inner_decay=0.0, seed=0, **_inversion_args(P2P)).args[0]
    return _p2p(w, m, source, target, value_embed=emb, tau_u=0.0)


def ddim_p2p(w, m, src, source, target, shape):
    sig = w.C("InvEditValueSigmas").execute(m, P2P["steps"], 1.0).args[0][:-1]  # DDIM Invert: strictly descending
    noise = _ddim_invert(w, m, src, source, sig, 1.0)
    return _p2p(w, m, source, target, latent=noise, sigmas=sig, tau_u=0.0)


def sdedit_best_of(n):
    def run(w, m, src, source, target, shape):
        import comfy.sample
        sig = _ddim_sigmas(w, EDIT["steps"], SDEDIT_DENOISE)
        many = {"samples": src["samples"].repeat(n, 1, 1, 1)}
        noise = comfy.sample.prepare_noise(many["samples"], 7)
        out = _sample(w, m, "euler", sig, target, many, EDIT["cfg"], noise=noise, seed=7)
        imgs = w.decode(out)
        loss = w.loss()
        best = int(w.torch.stack([loss(i[None], w.torch.Generator().manual_seed(0)) for i in imgs]).argmin())
        return out[best:best + 1]
    return run


def caso_train(w, gamma: float):
    """The 4 colour classes from the colour classifier on CASO["train_images"] shapes images of every colour and shape
    (their labels are never read); the images go in too, so that a flip mirrors the pixels before the VAE (the
    official augmentation)."""
    images = data.make_batch(CASO["train_images"], SEED + 2).images
    lat = w.encode(images)
    with w.torch.inference_mode():
        clf = w.C("InvEditClassifierLoad").execute(CLASSIFIERS[0], "small_cnn", 0, "none").args[0]
        return w.C("InvEditCASOTrain").execute(
            model=w.model, clip=w.te, vae=w.vae, classifier=clf, latent=lat, attribute="colour", steps=CASO["steps"],
            batch_size=CASO["batch"], scale=CASO["train_scale"], level=0.4, lr=0.02, weight_decay=0.005, gamma=gamma,
            n_tokens=1, init="repo_uniform", hflip=True, seed=0, images=images.permute(0, 2, 3, 1)).args[0]


def caso_edit(embeddings, prompt: str | None = None, scale: float | None = None, cls: str = "blue",
              inversion: str = "ddim", window: float | None = None):
    """CASO Edit with the class alone as the prompt (the paper's), or with ``prompt`` through the stock CLIPTextEncode
    ("a embedding:<saved file> {shape}": the class token among words)."""
    def run(w, m, src, source, target, shape):
        neg = w.enc("")
        pos = (w.C("InvEditCASOEncode").execute(w.te, embeddings, cls).args[0] if prompt is None else
               w.enc(prompt.format(shape=shape)))
        with w.torch.inference_mode():
            return w.C("InvEditCASOEdit").execute(m, pos, neg, src, CASO["edit_steps"],
                                                  CASO["scale"] if scale is None else scale,
                                                  CASO["window"] if window is None else window, 0.0, inversion,
                                                  0).args[0]["samples"]
    return run


def caso_measures(w, embeddings, notes: list) -> None:
    """The paper's two other claims, on held-out images of every colour, each with its own class: the own class at
    λ > 0 as a reconstruction prior (Table 3: PSNR against λ = 0, for both inversions), and λ < 0 lowering the
    class's probability (the colour classifier's)."""
    torch = w.torch
    batch = data.make_batch(CASO["measure_images"], SEED + 3)
    own = [data.COLOURS[int(c)] for c in batch.colour]
    lam, back, win = CASO["own_scale"], -CASO["scale"], CASO["measure_window"]
    psnr, images = {}, {}
    for i, cls in enumerate(own):
        img = batch.images[i:i + 1]
        src = w.encode(img)
        for inv, scale in (("ddim", 0.0), ("ddim", lam), ("noise", 0.0), ("noise", lam), ("ddim", back)):
            out = w.decode(caso_edit(embeddings, scale=scale, cls=cls, inversion=inv, window=win)(w, w.model, src, "",
                                                                                                "", ""))
            images.setdefault((inv, scale), []).append(out)
            psnr.setdefault((inv, scale), []).append(float(10 * torch.log10(1 / ((out - img) ** 2).mean())))
    m = {k: statistics.mean(v) for k, v in psnr.items()}
    rows = torch.arange(len(own))

    def p_own(key):
        return w.judges.labels(torch.cat(images[key]))["colour"][2][rows, batch.colour]
    p0, p1, pb = p_own(("ddim", 0.0)), p_own(("ddim", lam)), p_own(("ddim", back))
    n = len(own)
    notes.append(f"CASO own class ({n} held-out images of every colour, each with its own class, window {win}): "
                 f"reconstruction PSNR λ 0 → λ {lam:g} (Table 3's prior): DDIM inversion {m['ddim', 0.0]:.1f} → "
                 f"{m['ddim', lam]:.1f} dB, forward-noise inversion {m['noise', 0.0]:.1f} → {m['noise', lam]:.1f} dB; "
                 f"the colour classifier's p(own class) {p0.mean():.2f} → {p1.mean():.2f}")
    notes.append(f"CASO reverse edit (own class at λ {back:g}, DDIM-inverted): mean p(own class) {p0.mean():.2f} → "
                 f"{pb.mean():.2f}; lowered for {int((pb < p0 - 0.05).sum())}/{n} images; per class " + ", ".join(
                     f"{c} {float(p0[[k for k, o in enumerate(own) if o == c]].mean()):.2f} → "
                     f"{float(pb[[k for k, o in enumerate(own) if o == c]].mean()):.2f}"
                     for c in data.COLOURS if c in own))


def remove_caso_files() -> None:
    import folder_paths
    for root in folder_paths.get_folder_paths("embeddings"):
        for f in Path(root).glob(f"{CASO_PREFIX}_*.safetensors"):
            f.unlink()


def score_edits(w, methods: list, recon: dict, batch, suffix: str = "") -> list:
    """One edit row per (name, method) of ``methods`` (its name + ``suffix``), each judged on every image of
    ``batch`` (source prompt 'a red <shape>', target 'a blue <shape>'), with the reconstruction PSNR of ``recon[name]``
    (or of the P2P source row, or DOODL's exact EDICT reconstruction)."""
    torch = w.torch
    shapes = [data.SHAPES[int(s)] for s in batch.shape]
    rows = [Row("edit", name + suffix) for name, _ in methods]
    for i in range(batch.images.shape[0]):
        img = batch.images[i:i + 1]
        labels = data.Batch(*(getattr(batch, f)[i:i + 1] for f in data.Batch.__dataclass_fields__))
        src, shape = w.encode(img), shapes[i]
        source, target = f"a red {shape}", f"a blue {shape}"
        for row, (name, fn) in zip(rows, methods):
            out, evals, bwd, sec = w.timed(lambda m: fn(w, m, src, source, target, shape))
            rec_latent = None
            if isinstance(out, tuple):  # P2P edits return their source row, the inversion's reconstruction, too
                out, rec_latent = out
            edited = w.decode(out)
            w.judge(row, edited, img, labels)
            row.evals.append(evals), row.backward.append(bwd), row.seconds.append(sec)
            if rec_latent is not None:
                rec = w.decode(rec_latent)
                row.recon_psnr.append(float(10 * torch.log10(1 / ((rec - img) ** 2).mean())))
            elif name in recon:
                with torch.inference_mode():
                    rec = w.decode(recon[name](w.model, shape, src, source))
                row.recon_psnr.append(float(10 * torch.log10(1 / ((rec - img) ** 2).mean())))
            elif name.startswith("DOODL"):
                with torch.inference_mode():  # 0 iterations: the exact EDICT reconstruction of the pair
                    pair = _edict_pair(w, w.model, src, source, DOODL["steps"], 1.0, DOODL["cfg"])
                    rec = w.decode(w.C("InvEditEDICTRegenerate").execute(
                        model=w.model, positive=w.enc(source), negative=w.enc(""), pair=pair, cfg=DOODL["cfg"],
                        mix_p=0.93, leapfrog=True, official_input_scaling=True)[0]["samples"])
                row.recon_psnr.append(float(10 * torch.log10(1 / ((rec - img) ** 2).mean())))
    return rows


def edit_task(w, n_images: int, rows: list, notes: list) -> list[str]:
    torch = w.torch
    batch = data.make_batch(n_images, SEED, colour=data.COLOURS.index("red"))
    shapes = [data.SHAPES[int(s)] for s in batch.shape]
    t = time.perf_counter()
    with torch.inference_mode():
        prompts_dir = w.C("InvEditHSpaceFromPrompts").execute(
            w.model, w.enc("a red circle"), w.enc("a blue circle"), {"samples": torch.zeros(8, 4, 8, 8)}, 12, 0,
            "per_timestep").args[0]
    notes.append(f"h-space prompt direction: extracted once from 8 samples of 'a red circle' vs 'a blue circle' "
                 f"({time.perf_counter() - t:.1f} s), then used for every image")
    train = data.make_batch(4, SEED + 1, colour=data.COLOURS.index("red"), shape=0)
    trained, took = {}, {}
    for loss in ("paper", "official"):  # issue 24: f_t under the paper's loss and the official code's, side by side
        t = time.perf_counter()
        with torch.inference_mode():
            trained[loss] = w.C("InvEditHSpaceTrainDirection").execute(
                model=w.model, vae=w.vae, clip_name="shapes-toy-clip", neutral=w.enc(""),
                latent=w.encode(train.images), source_text="a red circle", target_text="a blue circle",
                init="inverted", steps=10, t_edit=HSPACE["t_edit"], lambda_clip=0.8, recon_mult=3.0, lr=0.003,
                epochs=2, batch_size=1, seed=0, loss=loss, prompt_templates=False).args[0]
        took[loss] = time.perf_counter() - t
    notes.append(f"h-space trained directions: f_t trained once per loss on 4 other red circles with the toy CLIP "
                 f"('a red circle' -> 'a blue circle', prompt templates off: the toy CLIP's text context is 16 "
                 f"tokens, which cuts most of the 79 templates), 10 steps, 2 epochs, lambda_clip 0.8, recon_mult 3, "
                 f"Adam 0.003, the same seed; 'paper loss': lambda·L_dir from P_t^src ({took['paper']:.1f} s), "
                 f"'official loss': lambda·-log((2 - L_dir)/2) from the real image x0 ({took['official']:.1f} s)")
    notes.append(f"P2P rows: {P2P['steps']} steps on the official grid at guidance {P2P['guidance']}, Replace "
                 f"'red' -> 'blue', tau_v {P2P['tau_v']}, tau_c {P2P['tau_c']}, tau_s {P2P['tau_s']}, tau_u "
                 f"{P2P['tau_u']} for P2Plus (0 for P2P), no LocalBlend; the per-image inversion is counted in evals "
                 f"and bwd (StyleDiffusion K = {P2P['sd_inner']} decaying by e^-0.1 per step, null-text "
                 f"{P2P['nt_inner']} a step, both with early stop; DDIM + P2P inverts at guidance 1)")
    t = time.perf_counter()
    caso_alone = caso_train(w, 0.0)
    caso_time = time.perf_counter() - t
    caso_gamma = caso_train(w, CASO["gamma"])
    remove_caso_files()
    w.C("InvEditCASOSave").execute(caso_alone, CASO_PREFIX)  # for the stock CLIPTextEncode's embedding:<name>
    caso_prompt = f"a embedding:{CASO_PREFIX}_blue {{shape}}"
    notes.append(f"CASO rows: the 4 colour classes trained once from the colour classifier on {CASO['train_images']} "
                 f"unlabeled images of every colour and shape (flips of the pixels before the VAE, one optimiser state "
                 f"per class), {CASO['steps']} steps × batch {CASO['batch']} "
                 f"(λ {CASO['train_scale']:g} at t 401; {caso_time:.1f} s per training, one with γ 0 and one with γ "
                 f"{CASO['gamma']:g}), then per image DDIM inversion with the empty prompt to {CASO['window']} of the "
                 f"timesteps and λ {CASO['scale']:g} below it ({CASO['edit_steps']}-step grid); 'in a prompt' is the "
                 f"γ 0 file through the stock CLIPTextEncode as '{caso_prompt}'; recon = λ 0")
    notes.append(f"EMS rows: text-only EMS (α {EMS['alpha']:g} from 'a red <shape>' to 'a blue <shape>', "
                 f"{EMS['steps']} steps, strength {EMS['strength']} (diffusers' start index), cfg {EMS['cfg']:g}, "
                 f"euler / simple, seed {EMS['seed']}) and with CSDS ({EMS['iterations']} iterations, the paper's η "
                 f"0.1 → 0.01, λ {EMS['lam']:g}, attribute prompt 'blue'); recon = α 0 from the same noised latent")
    bdia_methods, bdia_recon = bdia_rows(w)
    methods = [("DDIM prompt swap", ddim_swap), ("EDICT prompt swap", edict_swap), *bdia_methods,
               ("h-space, prompt direction", hspace_edit(prompts_dir, HSPACE["strength"], 0)),
               ("h-space, trained direction (paper loss)",
                hspace_edit(trained["paper"], HSPACE["trained_strength"], HSPACE["t_edit"])),
               ("h-space, trained direction (official loss)",
                hspace_edit(trained["official"], HSPACE["trained_strength"], HSPACE["t_edit"])),
               ("DOODL classifier (EDICT pair)", doodl_edit(lambda shape: w.loss())),
               ("DOODL CLIP (EDICT pair)", doodl_edit(lambda shape: w.clip_loss(f"a blue {shape}"))),
               ("one-step guidance (DDIM-inverted)", guidance_edit),
               ("DDIM + P2P", ddim_p2p), ("null-text + P2P", nulltext_p2p),
               ("StyleDiffusion + P2Plus", stylediffusion_p2plus),
               ("CASO class alone (gamma 0)", caso_edit(caso_alone)),
               (f"CASO class alone (gamma {CASO['gamma']:g})", caso_edit(caso_gamma)),
               ("CASO class in a prompt (gamma 0)", caso_edit(caso_alone, caso_prompt)),
               ("EMS text only", ems_edit(0)), ("EMS + CSDS", ems_edit(EMS["iterations"]))]
    recon = {"DDIM prompt swap": lambda m, s, src, p: ddim_swap(w, m, src, p, p, s),
             "EDICT prompt swap": lambda m, s, src, p: edict_swap(w, m, src, p, p, s),
             **bdia_recon,
             "h-space, prompt direction": lambda m, s, src, p: hspace_edit(prompts_dir, 0.0, 0)(w, m, src, p, p, s),
             "h-space, trained direction (paper loss)":
                 lambda m, s, src, p: hspace_edit(trained["paper"], 0.0, 500)(w, m, src, p, p, s),
             "h-space, trained direction (official loss)":
                 lambda m, s, src, p: hspace_edit(trained["official"], 0.0, 500)(w, m, src, p, p, s),
             "one-step guidance (DDIM-inverted)": lambda m, s, src, p: _sample(
                 w, m, "ddim", _ddim_sigmas(w, GUIDANCE["steps"]),
                 p, _ddim_invert(w, m, src, p, _ddim_sigmas(w, GUIDANCE["steps"]), DOODL["cfg"]), DOODL["cfg"])}
    for name in ("EMS text only", "EMS + CSDS"):  # α 0, no CSDS: the source prompt from the same noised latent
        recon[name] = lambda m, s, src, p: _ems(w, m, src, p, p.replace("red", "blue"), "", 0.0, 0)
    for name, _ in methods[-5:-2]:  # λ 0: the same inversion, sampled back with the empty prompt
        recon[name] = lambda m, s, src, p: caso_edit(caso_alone, scale=0.0)(w, m, src, p, p, s)
    rows += score_edits(w, methods, recon, batch)
    caso_measures(w, caso_alone, notes)
    ems_measures(w, batch, notes, "U-Net world")
    doodl_evals = statistics.mean(next(r for r in rows if r.method.startswith("DOODL classifier")).evals)
    n_best = max(1, round(doodl_evals / int(EDIT["steps"] * SDEDIT_DENOISE)))  # one evaluation per step and sample
    row = Row("edit", f"SDEdit {SDEDIT_DENOISE} to the target prompt, best of {n_best}")
    fn = sdedit_best_of(n_best)
    for i in range(n_images):
        img = batch.images[i:i + 1]
        labels = data.Batch(*(getattr(batch, f)[i:i + 1] for f in data.Batch.__dataclass_fields__))
        out, evals, bwd, sec = w.timed(lambda m: fn(w, m, w.encode(img), "", f"a blue {shapes[i]}", shapes[i]))
        w.judge(row, w.decode(out), img, labels)
        row.evals.append(evals), row.backward.append(bwd), row.seconds.append(sec)
    rows.append(row)
    return shapes


def generation_task(w, task: str, prompt: str, seeds: int, rows: list, suffix: str = "") -> None:
    """Plain EDICT, one-step guidance (VP models only), DOODL and plain EDICT best of n seeds (n: DOODL's evaluations
    over EDICT's) for ``seeds`` seeds of ``prompt``; the rows' names end in ``suffix``."""
    import comfy.sample
    torch = w.torch
    T, m_it = DOODL["steps"], DOODL["iterations"]
    loss = w.loss()
    lat = {"samples": torch.zeros(1, w.channels, 8, 8)}

    def doodl(m, seed, iterations):
        return w.C("InvEditDOODLOptimize").execute(
            model=m, positive=w.enc(prompt), negative=w.enc(""), vae=w.vae, loss=loss, latent=lat, seed=seed,
            steps=T, cfg=DOODL["cfg"], mix_p=0.93, iterations=iterations, lr=DOODL["lr"] if iterations else 0.0,
            grad_clip=DOODL["gen_clip"], momentum=0.9, perturb_std=1e-4 if iterations else 0.0,
            keep="best" if iterations else "last", backprop="reversible").args[0]["samples"]

    sig = w.C("InvEditEDICTSigmas").execute(w.model, T, "official_980_0", 1.0)[0]
    edict_sampler = w.C("InvEditSamplerEDICT").execute(0.93, True, True, "float64", "x")[0]
    guide = w.C("InvEditDOODLGuidanceSampler").execute(w.vae, loss, GUIDANCE["scale"], 0)[0]
    doodl_name = f"DOODL classifier, {m_it} iterations"
    names = ["plain EDICT"] + ([] if w.flow else ["one-step guidance"]) + [doodl_name]
    new = [Row(task, n) for n in names]
    best_row = None
    for seed in range(seeds):
        runs = {"plain EDICT": lambda m: doodl(m, seed, 0),
                "one-step guidance": lambda m: _sample(w, m, guide, sig[:-1], prompt, lat, DOODL["cfg"],
                                                       noise=comfy.sample.prepare_noise(lat["samples"], seed),
                                                       seed=seed),
                doodl_name: lambda m: doodl(m, seed, m_it)}
        source = None  # the plain EDICT sample of this seed (the first row), against which the others are judged
        for row in new:
            out, evals, bwd, sec = w.timed(runs[row.method])
            edited = w.decode(out)
            source = edited if source is None else source
            w.judge(row, edited, source)
            row.evals.append(evals), row.backward.append(bwd), row.seconds.append(sec)
        if best_row is None:
            n_best = max(1, round(statistics.mean(new[-1].evals) / statistics.mean(new[0].evals)))
            best_row = Row(task, f"plain EDICT, best of {n_best} seeds")

        def best_of(m):
            many = torch.zeros(n_best, w.channels, 8, 8)
            batch = _sample(w, m, edict_sampler, sig, prompt, {"samples": many}, DOODL["cfg"],
                            noise=comfy.sample.prepare_noise(many, 1000 + seed), seed=seed)
            imgs = w.decode(batch)
            k = int(torch.stack([loss(i[None], torch.Generator().manual_seed(0)) for i in imgs]).argmin())
            return batch[k:k + 1]
        out, evals, bwd, sec = w.timed(best_of)
        w.judge(best_row, w.decode(out), source)
        best_row.evals.append(evals), best_row.backward.append(bwd), best_row.seconds.append(sec)
    for row in new + [best_row]:
        row.method += suffix
    rows += new + [best_row]


def flow_task(n_images: int, seeds: int, rows: list, notes: list) -> None:
    """The flow-model rows: DDIM and EDICT prompt swap and DOODL on the SD3 shapes world (an MMDiT sampled by
    rectified flow, docs/shapes_world.md), on the same images and seeds as the U-Net rows, each named '(SD3)'. The
    schedules are the model's own 'simple' with its shift 3 (EDICT Sigmas' default on a flow model)."""
    w = World(SD3_FILES["checkpoints"])
    batch = data.make_batch(n_images, SEED, colour=data.COLOURS.index("red"))
    bdia_methods, bdia_recon = bdia_rows(w)
    methods = [("DDIM prompt swap", ddim_swap), ("EDICT prompt swap", edict_swap), *bdia_methods,
               ("RF-Solver prompt swap", flow_solver_swap("InvEditSamplerRFSolver")),
               ("FireFlow prompt swap", flow_solver_swap("InvEditSamplerFireFlow")), ("FlowEdit", flowedit_edit),
               ("DOODL classifier (EDICT pair)", doodl_edit(lambda shape: w.loss())),
               ("EMS text only", ems_edit(0)), ("EMS + CSDS", ems_edit(EMS["iterations"]))]
    recon = {"DDIM prompt swap": lambda m, s, src, p: ddim_swap(w, m, src, p, p, s),
             "EDICT prompt swap": lambda m, s, src, p: edict_swap(w, m, src, p, p, s),
             **bdia_recon,
             "RF-Solver prompt swap": lambda m, s, src, p: flow_solver_swap("InvEditSamplerRFSolver")(
                 w, m, src, p, p, s),
             "FireFlow prompt swap": lambda m, s, src, p: flow_solver_swap("InvEditSamplerFireFlow")(
                 w, m, src, p, p, s),
             "FlowEdit": lambda m, s, src, p: flowedit_edit(w, m, src, p, p, s)}
    for name in ("EMS text only", "EMS + CSDS"):
        recon[name] = lambda m, s, src, p: _ems(w, m, src, p, p.replace("red", "blue"), "", 0.0, 0)
    rows += score_edits(w, methods, recon, batch, " (SD3)")
    ems_measures(w, batch, notes, "SD3 world")
    generation_task(w, "generate", "a circle", seeds, rows, " (SD3)")
    generation_task(w, "rare", "a red circle", seeds, rows, " (SD3)")
    notes.append(f"BDIA rows (issue 28): γ {BDIA['gamma']} (the paper's) and {BDIA['small_gamma']}, {BDIA['steps']} steps on the official grid at "
                 f"strength {BDIA['strength']}, cfg {BDIA['cfg']:g} (exact there); RF-Solver / FireFlow (SD3 only): "
                 f"their SAMPLERs invert and sample through the stock SamplerCustom on the {BDIA['steps']}-step "
                 f"simple grid at strength {BDIA['strength']}; FlowEdit (SD3 only): {FLOWEDIT['steps']} steps, the "
                 f"last {FLOWEDIT['n_max']} edited, CFG {FLOWEDIT['source_cfg']} / {FLOWEDIT['target_cfg']}, its "
                 f"recon = the source prompt as target")
    notes.append("(SD3) rows: the SD3 shapes world (MMDiT, CLIP-L only, 16-channel TAESD), the same images, seeds, "
                 "steps, cfg and strength as the U-Net rows, on its own 'simple' schedule (shift 3); one-step guidance "
                 "is VP-only and has no SD3 row")


HEADER = ("| task | method | blue | blue (CLIP) | shape kept | shift px | area | bg PSNR dB | recon PSNR dB | evals | "
          "bwd | s/img |")


def table(rows: list, shapes: list[str], seeds: int) -> str:
    lines = [HEADER, "|" + "---|" * 12]
    for r in rows:
        s = r.summary(shapes if r.task == "edit" else ["circle"] * seeds)

        def f(v, fmt):
            return "—" if not math.isfinite(v) else "≥ 100" if fmt == ".1f" and v >= 100 else format(v, fmt)
        lines.append(f"| {r.task} | {r.method} | {100 * s['blue']:.0f} % | {100 * s['blue_clip']:.0f} % | "
                     f"{100 * s['shape_kept']:.0f} % | "
                     f"{f(s['shift_px'], '.1f')} | {f(s['area'], '.2f')} | {f(s['bg_psnr'], '.1f')} | "
                     f"{f(s['recon_psnr'], '.1f')} | {s['evals']:.0f} | {s['backward']:.0f} | {s['seconds']:.2f} |")
    return "\n".join(lines)


def grid(rows: list, sources: list, path: Path, task: str = "edit") -> None:
    """Source | one column per method, one row per image, with the methods' names above."""
    import numpy as np
    from PIL import Image, ImageDraw
    rows = [r for r in rows if r.task == task]
    cell, head = 64, 64
    n = len(sources)
    img = Image.new("RGB", (cell * (len(rows) + 1), head + cell * n), (16, 16, 16))
    d = ImageDraw.Draw(img)
    for j, title in enumerate(["source"] + [r.method for r in rows]):
        words, line, y = title.split(), "", 2
        for word in words:  # wrap the method's name into the 64-px column
            if len(line) + len(word) + 1 > 10 and line:
                d.text((cell * j + 2, y), line, fill=(220, 220, 220))
                line, y = word, y + 11
            else:
                line = f"{line} {word}".strip()
        d.text((cell * j + 2, y), line, fill=(220, 220, 220))
    for i in range(n):
        tiles = [sources[i]] + [r.images[i] for r in rows]
        for j, t in enumerate(tiles):
            arr = (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
            img.paste(Image.fromarray(arr), (cell * j, head + cell * i))
    img.save(path)


QUICK = {"EDIT": {"steps": 10}, "HSPACE": {"steps": 10}, "DOODL": {"steps": 4, "iterations": 1},
         "GUIDANCE": {"steps": 4}, "P2P": {"steps": 4, "sd_inner": 2, "nt_inner": 2},
         "CASO": {"train_images": 4, "steps": 2, "edit_steps": 10, "measure_images": 2},
         "EMS": {"steps": 8, "iterations": 2, "sde_images": 1}}


def run(n_images: int = 6, seeds: int = 6, out: Path | None = None, quick: bool = False):
    """(markdown text, output folder, rows); ``quick`` (the smoke test in make test) runs every row with a few steps
    only."""
    saved = {name: dict(globals()[name]) for name in QUICK}
    if quick:
        for name, changes in QUICK.items():
            globals()[name].update(changes)
    try:
        return _run(n_images, seeds, out, quick)
    finally:
        for name, values in saved.items():
            globals()[name].clear()
            globals()[name].update(values)


def _run(n_images: int, seeds: int, out: Path | None, quick: bool):
    w = World()
    rows: list = []
    notes: list = []
    try:
        shapes = edit_task(w, n_images, rows, notes)
    finally:
        remove_caso_files()
    generation_task(w, "generate", "a circle", seeds, rows)
    generation_task(w, "rare", "a red circle", seeds, rows)
    flow_task(n_images, seeds, rows, notes)
    rows.sort(key=lambda r: ("edit", "generate", "rare").index(r.task))  # each task's rows together (a stable sort)
    md = table(rows, shapes, seeds)
    out = Path(out or ROOT / "out") / time.strftime("scorecard-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    sources = list(data.make_batch(n_images, SEED, colour=data.COLOURS.index("red")).images.split(1))
    grid(rows, sources, out / "edit_grid.png")
    for task in ("generate", "rare"):
        first = next(r for r in rows if r.task == task)
        grid(rows, first.images, out / f"{task}_grid.png", task)
    text = (f"Shapes-world scorecard{' (quick: a few steps per method)' if quick else ''}: edit = {n_images} "
            f"held-out red objects -> blue; generate / rare = {seeds} seeds of 'a circle' / 'a red circle' -> the "
            f"colour classifier's blue\n\n{md}\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")
    (out / "scorecard.md").write_text(text)
    return text, out, rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="a few steps per method (the smoke test)")
    a = ap.parse_args(argv)
    text, out, _ = run(a.images, a.seeds, a.out, a.quick)
    print("\n" + text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
