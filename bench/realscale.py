"""Real-scale figures (issue 17, first part): a full-size random-weight SD1.5 U-Net built from ComfyUI 0.3.75's own
config (comfy/model_detection.py, ``SD15``: 320 channels, 860 M parameters), loaded as a ModelPatcher, and the
pack's samplers timed against the stock step on it, side by side in one process: seconds per step of the stock
euler sampler, DDIM inversion and the EDICT sampler (two model evaluations per step), with their ratios and targets.
Random weights cost exactly what trained ones cost; the conditioning is a random [1, 77, 768] tensor (no text encoder
is needed for the cost). CPU by default (a small latent, a few steps: minutes on 2 cores); ``--gpu`` runs the same
on CUDA at 512² and reports the CUDA peak. SDXL, the SD3-shaped MMDiT and the remaining methods are the next part.

    python -m bench.realscale [--size 128] [--steps 3] [--rounds 1] [--gpu] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import host, print_times

# ComfyUI 0.3.75, comfy/model_detection.py:901 (SD15), the config its detection gives a real SD1.5 checkpoint
SD15 = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
        "use_temporal_resblock": False}
TARGETS = {"DDIM inversion": 1.05, "EDICT sampler": 2.05}


def sd15_random(device, seed: int = 0):
    """A full-size SD1.5 U-Net with random weights (N(0, 1/fan_in)·0.5, so activations stay finite) as a
    ModelPatcher on ``device``; its parameter count."""
    import torch
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.SD15(dict(SD15, dtype=torch.float32))
    model = config.get_model({})
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            fan_in = max(1, p[0].numel()) if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / fan_in ** 0.5) if p.ndim > 1 else torch.zeros(p.shape))
            n += p.numel()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=cpu), n


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (default 128 CPU, 512 GPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 3 CPU, 20 GPU)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--gpu", action="store_true", help="run on CUDA and report its peak memory")
    ap.add_argument("--out", type=Path, default=None, help="write the table's figures as realscale.json here")
    a = ap.parse_args(argv)
    size, steps = a.size or (512 if a.gpu else 128), a.steps or (20 if a.gpu else 3)
    host.boot()
    import torch
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    device = torch.device("cuda" if a.gpu else "cpu")
    t = time.perf_counter()
    model, params = sd15_random(device)
    built = time.perf_counter() - t
    C = host.node_class
    g = torch.Generator().manual_seed(1)
    side = size // 8
    cond = [[torch.randn(1, 77, 768, generator=g), {}]]
    neg = [[torch.randn(1, 77, 768, generator=g), {}]]
    latent = {"samples": torch.randn(1, 4, side, side, generator=g)}
    noise = torch.randn(1, 4, side, side, generator=g)
    with torch.inference_mode():
        sigmas = C("BasicScheduler").execute(model, "normal", steps, 1.0)[0]
    runs = {
        "stock euler step": lambda: comfy.sample.sample_custom(
            model, noise, a.cfg, comfy.samplers.sampler_object("euler"), sigmas, cond, neg,
            torch.zeros_like(noise), disable_pbar=True, seed=0),
        "DDIM inversion": lambda: C("InvEditDDIMInvert").execute(
            model=model, positive=cond, negative=neg, latent=latent, sigmas=sigmas, cfg=a.cfg),
        "EDICT sampler": lambda: comfy.sample.sample_custom(
            model, noise, a.cfg, C("InvEditSamplerEDICT").execute(0.93, True, True, "float64", "x")[0], sigmas,
            cond, neg, torch.zeros_like(noise), disable_pbar=True, seed=0),
    }
    times: dict = {k: [] for k in runs}
    peaks: dict = {}
    with torch.inference_mode():
        for fn in runs.values():  # warm-up (loads the model)
            fn()
        for _ in range(a.rounds):
            for name, fn in runs.items():
                if a.gpu:
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) / steps)
                if a.gpu:
                    peaks[name] = torch.cuda.max_memory_allocated() / 2 ** 30
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    base = med["stock euler step"]
    ratios = {f"ratio {k} / stock": v / base for k, v in med.items() if k != "stock euler step"}
    where = f"CUDA ({torch.cuda.get_device_name()})" if a.gpu else f"CPU, {torch.get_num_threads()} threads"
    print_times(f"Full-size SD1.5 U-Net, random weights ({params / 1e6:.0f} M parameters, built in {built:.0f} s), "
                f"{size}x{size} px, cfg {a.cfg}, {steps} steps, {where} (s/step)", {**med, **ratios})
    for k, target in TARGETS.items():
        r = med[k] / base
        print(f"{k}: {r:.3f} (target <= {target}: {'met' if r <= target else 'NOT met'})"
              + (f"; CUDA peak {peaks[k]:.2f} GiB" if k in peaks else ""))
    result = {"model": "sd15", "params": params, "size": size, "steps": steps, "cfg": a.cfg, "device": where,
              "seconds_per_step": med, "ratios": ratios, "cuda_peak_gib": peaks}
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "realscale.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
