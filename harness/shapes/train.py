"""Train the shapes world's networks on the CPU and write them (fp16 safetensors) to harness/shapes/weights/.

    python -m harness.shapes.train vae          # TAESD-layout VAE
    python -m harness.shapes.train unet         # SD1.5-detectable UNet (needs the VAE and the text encoder)
    python -m harness.shapes.train classifiers  # colour and shape classifiers on images
    python -m harness.shapes.train clip         # toy CLIP (transformers CLIPModel), contrastive
    python -m harness.shapes.train dit          # SD3-detectable MMDiT, rectified flow (needs the VAE and text encoder)
    python -m harness.shapes.train all

Every stage is seeded (torch.manual_seed, generators for data) and runs with 2 threads; its wall time, final loss
and settings go into the weights file's metadata. Weights are written atomically (temporary file, then rename),
so an interrupted run leaves the previous file intact.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..paths import COMFY
from . import data

WEIGHTS = Path(__file__).resolve().parent / "weights"


def _comfy():
    if str(COMFY) not in sys.path:
        sys.path.insert(0, str(COMFY))
    from comfy.cli_args import args
    args.cpu = True


def save(sd: dict, name: str, meta: dict, folder: Path = WEIGHTS) -> Path:
    """fp16 safetensors, written atomically (a temporary file, then rename), ``meta`` as its metadata."""
    from safetensors.torch import save_file
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".tmp")
    save_file({k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
               for k, v in sd.items()}, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)", flush=True)
    return path


def default_init(module: torch.nn.Module) -> None:
    """PyTorch's default init for layers ComfyUI builds uninitialised (comfy.ops.disable_weight_init)."""
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.Conv2d.reset_parameters(m)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.Linear.reset_parameters(m)
        elif isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)


def cosine_lr(opt, step: int, total: int, lr: float, warmup: int = 100) -> None:
    f = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    for group in opt.param_groups:
        group["lr"] = lr * max(f, 0.02)


@torch.no_grad()
def ema_update(ema: dict, module: torch.nn.Module, step: int, decay: float) -> None:
    """ema ← d·ema + (1 − d)·weights with the warm-up d = min(decay, (1 + step)/(10 + step)); buffers copied."""
    d = min(decay, (1 + step) / (10 + step))
    for k, v in module.state_dict().items():
        ema[k].mul_(d).add_(v.detach(), alpha=1 - d) if v.is_floating_point() else ema[k].copy_(v)


class Log:
    def __init__(self, name: str, total: int):
        self.name, self.total, self.t0 = name, total, time.time()

    def __call__(self, step: int, **vals) -> None:
        if step % 50 == 0 or step == self.total - 1:
            el = time.time() - self.t0
            eta = el / (step + 1) * (self.total - step - 1)
            v = " ".join(f"{k} {x:.4g}" for k, x in vals.items())
            print(f"[{self.name}] {step + 1}/{self.total} {v} ({el:.0f} s, eta {eta:.0f} s)", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# VAE (TAESD layout)

VAE_NOISE = 0.1      # latent noise (ramped in over VAE_NOISE_RAMP steps): the decoder must tolerate imperfect
VAE_NOISE_RAMP = 500  # diffusion samples
VAE_RMS_REG = 0.01   # keeps the latents' second moment near 1: no collapse under the noise, no blow-up


def build_taesd():
    _comfy()
    import comfy.taesd.taesd
    return comfy.taesd.taesd.TAESD(latent_channels=4)


def train_vae(crop_steps=2000, full_steps=250, batch=32, lr=5e-4, n_train=16384) -> None:
    torch.manual_seed(0)
    vae = build_taesd()
    default_init(vae)
    ds = data.make_dataset(n_train, data.TRAIN_SEED).images
    g = torch.Generator().manual_seed(10)
    opt = torch.optim.Adam(list(vae.taesd_encoder.parameters()) + list(vae.taesd_decoder.parameters()), lr)
    total = crop_steps + full_steps
    log = Log("vae", total)
    t0 = time.time()
    for step in range(total):
        cosine_lr(opt, step, total, lr)
        idx = torch.randint(len(ds), (batch,), generator=g)
        x = ds[idx]
        if step < crop_steps:  # fully convolutional: 32 px crops (8-aligned) cost a quarter of a full image
            oy, ox = (torch.randint(5, (2,), generator=g) * 8).tolist()
            x = x[:, :, oy:oy + 32, ox:ox + 32]
        if torch.rand(1, generator=g).item() < 0.5:
            x = x.flip(-1)
        z = vae.taesd_encoder(x)
        noise = VAE_NOISE * min(1.0, step / VAE_NOISE_RAMP)
        rec = vae.taesd_decoder(z + noise * torch.randn(z.shape, generator=g))
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        loss = rec_loss + VAE_RMS_REG * (z.pow(2).mean() - 1).pow(2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log(step, loss=rec_loss.item(), z_std=z.std().item())
    sd = {f"taesd_encoder.{k}": v for k, v in vae.taesd_encoder.state_dict().items()}
    sd.update({f"taesd_decoder.{k}": v for k, v in vae.taesd_decoder.state_dict().items()})
    save(sd, "vae.safetensors", {"stage": "vae", "seconds": round(time.time() - t0), "steps": total,
                                 "crop_steps": crop_steps, "batch": batch, "lr": lr, "n_train": n_train,
                                 "final_rec_loss": rec_loss.item()})
    calibrate_vae()


def calibrate_vae(n: int = 4096) -> float:
    """Store vae_scale = 0.18215 · std(encoder latents) in vae.safetensors, so that ComfyUI's SD1.5 latent format
    (model latent = raw · 0.18215, raw = encoder / vae_scale) hands the UNet unit-variance latents."""
    vae = load_vae()
    with torch.no_grad():
        z = torch.cat([vae.taesd_encoder(x) for x in data.make_dataset(n, data.TRAIN_SEED).images.split(256)])
    std = float(z.std())
    write_vae_scale(WEIGHTS, std)
    return std


def write_vae_scale(folder: Path, std: float) -> None:
    """vae_scale = 0.18215 · std and vae_shift 0 into ``folder``/vae.safetensors (its metadata kept)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = folder / "vae.safetensors"
    sd = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
    sd["vae_scale"] = torch.tensor(0.18215 * std)
    sd["vae_shift"] = torch.tensor(0.0)
    meta["encoder_latent_std"] = std
    save(sd, "vae.safetensors", meta, folder=folder)


def encoder_to_model_scale() -> float:
    """Factor from TAESD encoder output to the UNet's (model-space) latent: 0.18215 / vae_scale."""
    from safetensors.torch import load_file
    sd = load_file(str(WEIGHTS / "vae.safetensors"))
    if "vae_scale" not in sd:
        calibrate_vae()
        sd = load_file(str(WEIGHTS / "vae.safetensors"))
    return 0.18215 / float(sd["vae_scale"].float())


def load_vae():
    from safetensors.torch import load_file
    vae = build_taesd()
    sd = load_file(str(WEIGHTS / "vae.safetensors"))
    vae.taesd_encoder.load_state_dict({k[len("taesd_encoder."):]: v.float() for k, v in sd.items()
                                       if k.startswith("taesd_encoder.")})
    vae.taesd_decoder.load_state_dict({k[len("taesd_decoder."):]: v.float() for k, v in sd.items()
                                       if k.startswith("taesd_decoder.")})
    return vae.eval()


# ---------------------------------------------------------------------------------------------------------------
# UNet (SD1.5-detectable, ε-prediction, SD1.5's scaled-linear schedule)

def sd15_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def caption_contexts() -> torch.Tensor:
    """[13, 77, 768]: data.CAPTIONS then "" (the unconditional prompt), encoded by ComfyUI's own SD1 CLIP code
    from the generated text encoder, exactly as CLIPTextEncode will at inference."""
    _comfy()
    import comfy.sd
    from ..tiny_models import verified_text_encoder
    clip = comfy.sd.load_text_encoder_state_dicts([verified_text_encoder(COMFY)],
                                                  clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    with torch.no_grad():
        return torch.cat([clip.encode_from_tokens(clip.tokenize(c)) for c in [*data.CAPTIONS, ""]]).float()


def build_unet():
    _comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from ..tiny_models import TINY_UNET_CONFIG
    return UNetModel(**TINY_UNET_CONFIG, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)


def train_unet(steps=3500, batch=32, lr=3e-4, n_train=16384, p_uncond=0.1, ema_decay=0.999, save_every=250,
               min_snr_gamma=5.0):
    """ε-prediction MSE with min-SNR-γ weighting (w = min(SNR, γ)/SNR; Hang et al. 2023), caption dropout p_uncond
    (the empty prompt) so classifier-free guidance works, EMA weights saved every save_every steps."""
    torch.manual_seed(0)
    unet = build_unet()
    default_init(unet)
    torch.nn.init.zeros_(unet.out[2].weight)
    torch.nn.init.zeros_(unet.out[2].bias)
    ctx = caption_contexts()
    ds = data.make_dataset(n_train, data.TRAIN_SEED)
    vae = load_vae()
    scale = encoder_to_model_scale()
    t0 = time.time()
    with torch.no_grad():
        lat = torch.cat([vae.taesd_encoder(x) for x in ds.images.split(256)]) * scale
    print(f"[unet] encoded {n_train} latents in {time.time() - t0:.0f} s, std {lat.std():.3f}", flush=True)
    cond_idx = ds.colour * len(data.SHAPES) + ds.shape
    ab = sd15_alphas_cumprod()
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(20)
    log = Log("unet", steps)
    for step in range(steps):
        cosine_lr(opt, step, steps, lr, warmup=200)
        idx = torch.randint(n_train, (batch,), generator=g)
        z0 = lat[idx]
        c = torch.where(torch.rand(batch, generator=g) < p_uncond, len(data.CAPTIONS), cond_idx[idx])
        t = torch.randint(1000, (batch,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        a = ab[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        snr = a.view(-1) / (1 - a.view(-1))
        w = snr.clamp(max=min_snr_gamma) / snr
        loss = (w * (unet(zt, t.float(), context=ctx[c]) - eps).pow(2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, step, ema_decay)
        log(step, loss=loss.item())
        if (step + 1) % save_every == 0 or step == steps - 1:
            save(ema, "unet.safetensors", {"stage": "unet", "steps_done": step + 1, "steps": steps, "batch": batch,
                                           "lr": lr, "n_train": n_train, "p_uncond": p_uncond, "min_snr_gamma": min_snr_gamma,
                                           "ema_decay": ema_decay, "seconds": round(time.time() - t0),
                                           "last_loss": round(loss.item(), 5)})


# ---------------------------------------------------------------------------------------------------------------
# MMDiT (SD3-detectable, rectified flow: ComfyUI's CONST model sampling, x_σ = (1 − σ)·x0 + σ·ε, output v = ε − x0)

def sd3_caption_contexts() -> tuple[torch.Tensor, torch.Tensor]:
    """([13, 77, 768], [13, 768]): data.CAPTIONS then "" through ComfyUI's own SD3 text encoder with the generated
    CLIP-L alone (penultimate layer; pooled), exactly as CLIPTextEncode gives them at inference before its zero
    padding to 4096 / 2048 (checked)."""
    _comfy()
    import comfy.sd
    from ..tiny_models import verified_text_encoder
    clip = comfy.sd.load_text_encoder_state_dicts([verified_text_encoder(COMFY)], clip_type=comfy.sd.CLIPType.SD3)
    ctx, pooled = [], []
    with torch.no_grad():
        for caption in [*data.CAPTIONS, ""]:
            out = clip.encode_from_tokens(clip.tokenize(caption), return_pooled=True, return_dict=True)
            if out["cond"].shape != (1, 77, 4096) or float(out["cond"][..., 768:].abs().max()) != 0.0:
                raise RuntimeError(f"the SD3 text encoder's conditioning is {tuple(out['cond'].shape)} with "
                                   f"non-zero padding: the narrow training would not match inference")
            ctx.append(out["cond"][..., :768].float())
            pooled.append(out["pooled_output"][..., :768].float())
    return torch.cat(ctx), torch.cat(pooled)


def build_dit(narrow: bool = True, depth: int | None = None, num_blocks: int | None = None, operations=None):
    """ComfyUI's MMDiT of ``sd3_dit_config`` (hidden 64·depth), float32, initialised as DiT's adaLN-Zero.
    ``num_blocks`` / ``operations``: more joint blocks than SD3's detection ties to that width, and other norms (the
    scenes world's narrow DiT, harness/scenes/models.build_narrow_dit)."""
    _comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper, get_2d_sincos_pos_embed
    from ..tiny_models import DIT_DEPTH, DIT_POS, sd3_dit_config
    cfg = sd3_dit_config(depth=depth or DIT_DEPTH, narrow=narrow)
    dit = OpenAISignatureMMDITWrapper(**cfg, num_blocks=num_blocks, dtype=torch.float32, device="cpu",
                                      operations=operations or comfy.ops.disable_weight_init)
    default_init(dit)
    with torch.no_grad():  # the fixed 2-d sin-cos position table (ComfyUI builds it empty)
        dit.pos_embed.copy_(torch.from_numpy(get_2d_sincos_pos_embed(64 * cfg["depth"], DIT_POS)).float()[None])
    dit.pos_embed.requires_grad_(False)
    for name, m in dit.named_modules():  # adaLN-Zero: every block starts as the identity, the output at zero
        if isinstance(m, torch.nn.Linear) and ("adaLN_modulation" in name or name.endswith("final_layer.linear")):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return dit


def train_dit(steps=3000, batch=32, lr=6e-4, n_train=16384, p_uncond=0.1, ema_decay=0.999, save_every=250,
              resume=False, seed=21):
    """Rectified-flow velocity MSE, σ ~ logit-normal(0, 1) (SD3's training density), model input timestep 1000·σ
    (ComfyUI's ModelSamplingDiscreteFlow), caption dropout p_uncond, EMA weights saved (narrow) every save_every
    steps. Latents: the shapes TAESD's encoder / std in channels 0–3, zeros in 4–15 (the 16-channel TAESD's).
    ``resume``: continue from the saved EMA weights (model and EMA), a new cosine cycle of ``steps`` with ``seed``."""
    torch.manual_seed(0)
    dit = build_dit()
    done = 0
    if resume:
        from safetensors import safe_open
        from safetensors.torch import load_file
        dit.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS / "dit.safetensors")).items()})
        with safe_open(str(WEIGHTS / "dit.safetensors"), "pt") as f:
            done = int((f.metadata() or {}).get("steps_total", (f.metadata() or {}).get("steps_done", 0)))
    ctx, pooled = sd3_caption_contexts()
    ds = data.make_dataset(n_train, data.TRAIN_SEED)
    vae = load_vae()
    std = 1.0 / encoder_to_model_scale()  # vae_scale / 0.18215: the encoder latents' std
    t0 = time.time()
    with torch.no_grad():
        z = torch.cat([vae.taesd_encoder(x) for x in ds.images.split(256)]) / std
    lat = torch.cat([z, z.new_zeros(z.shape[0], 12, *z.shape[2:])], 1)
    print(f"[dit] encoded {n_train} latents in {time.time() - t0:.0f} s, std {z.std():.3f}", flush=True)
    cond_idx = ds.colour * len(data.SHAPES) + ds.shape
    params = [p for p in dit.parameters() if p.requires_grad]
    ema = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    opt = torch.optim.AdamW(params, lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    log = Log("dit", steps)
    for step in range(steps):
        cosine_lr(opt, step, steps, lr, warmup=100)
        idx = torch.randint(n_train, (batch,), generator=g)
        x0 = lat[idx]
        c = torch.where(torch.rand(batch, generator=g) < p_uncond, len(data.CAPTIONS), cond_idx[idx])
        sigma = torch.sigmoid(torch.randn(batch, generator=g))
        eps = torch.randn(x0.shape, generator=g)
        s = sigma.view(-1, 1, 1, 1)
        v = dit((1 - s) * x0 + s * eps, sigma * 1000, context=ctx[c], y=pooled[c])
        loss = (v - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_update(ema, dit, step, ema_decay)
        log(step, loss=loss.item())
        if (step + 1) % save_every == 0 or step == steps - 1:
            save(ema, "dit.safetensors", {"stage": "dit", "steps_done": step + 1, "steps": steps, "batch": batch,
                                          "steps_total": done + step + 1, "resumed_from": done, "seed": seed,
                                          "lr": lr, "n_train": n_train, "p_uncond": p_uncond,
                                          "ema_decay": ema_decay, "seconds": round(time.time() - t0),
                                          "last_loss": round(loss.item(), 5), "narrow": "context 768, pooled 768"})


# ---------------------------------------------------------------------------------------------------------------
# Judges: attribute classifiers and the toy CLIP, trained on fresh batches (infinite data) with mild corruptions
# (noise, blur) so that they judge decoded diffusion samples as they judge clean renders.

def corrupt(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if torch.rand(1, generator=g).item() < 0.5:
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (x + 0.03 * torch.rand(1, generator=g).item() * torch.randn(x.shape, generator=g)).clamp(0, 1)


def train_classifiers(steps=600, batch=64, lr=2e-3) -> None:
    from .models import ATTRIBUTES, AttributeClassifier
    for attr, classes in ATTRIBUTES.items():
        torch.manual_seed(1)
        m = AttributeClassifier(len(classes))
        opt = torch.optim.AdamW(m.parameters(), lr)
        g = torch.Generator().manual_seed(30)
        log = Log(f"classifier-{attr}", steps)
        t0 = time.time()
        for step in range(steps):
            cosine_lr(opt, step, steps, lr, warmup=50)
            b = data.make_batch(batch, 10_000_000 + step)
            loss = F.cross_entropy(m(corrupt(b.images, g)), getattr(b, attr))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log(step, loss=loss.item())
        save(m.state_dict(), f"shapes_{attr}.safetensors",
             {"stage": "classifier", "attribute": attr, "classes": json.dumps(list(classes)), "width": 32,
              "architecture": "harness.shapes.models.AttributeClassifier", "steps": steps,
              "seconds": round(time.time() - t0)})


def train_clip(steps=1500, batch=64, lr=1e-3) -> None:
    """Contrastive (InfoNCE, image -> caption) over the shapes world's captions, with varied prompt templates."""
    from transformers import CLIPModel
    from .models import clip_pixel_values, toy_clip_config, write_processor, write_tokenizer
    torch.manual_seed(2)
    folder = WEIGHTS / "toy_clip"
    tmp = WEIGHTS / "toy_clip.tmp"
    write_tokenizer(tmp)
    write_processor(tmp)
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(str(tmp), local_files_only=True)
    model = CLIPModel(toy_clip_config())
    templates = ["{}", "a photo of {}", "an image of {}", "{} on a background"]
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(40)
    log = Log("clip", steps)
    t0 = time.time()
    for step in range(steps):
        cosine_lr(opt, step, steps, lr, warmup=100)
        b = data.make_batch(batch, 20_000_000 + step)
        tpl = templates[step % len(templates)]
        text = tok([tpl.format(c) for c in data.CAPTIONS], padding="max_length", max_length=16,
                   return_tensors="pt")
        out = model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                    pixel_values=clip_pixel_values(corrupt(b.images, g)))
        target = b.colour * len(data.SHAPES) + b.shape
        loss = F.cross_entropy(out.logits_per_image, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log(step, loss=loss.item())
    model.half().save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "invedit_training.json").write_text(json.dumps({"stage": "clip", "steps": steps, "batch": batch,
                                                           "lr": lr, "seconds": round(time.time() - t0)}))
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    print(f"wrote {folder}", flush=True)


STAGES = {"vae": train_vae, "unet": train_unet, "classifiers": train_classifiers, "clip": train_clip, "dit": train_dit}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=[*STAGES, "all"])
    ap.add_argument("--kw", default="{}", help="JSON overrides for the stage's keyword arguments")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    for name in (STAGES if a.stage == "all" else [a.stage]):
        t = time.time()
        STAGES[name](**json.loads(a.kw))
        print(f"stage {name}: {time.time() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
