"""Seconds per DDIM inversion step (InvEditDDIMInvert) vs a stock KSampler step (euler), same model, latent size,
steps and cfg, measured interleaved in one process. Target: ratio <= 1.05.

    python -m bench.bench_ddim [--size 256] [--steps 20] [--cfg 7] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import host  # noqa: E402
from harness.tiny_models import FILES  # noqa: E402

TARGET = 1.05


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)

    host.boot()
    import torch
    import comfy.utils
    import nodes

    comfy.utils.PROGRESS_BAR_ENABLED = False
    invert = host.node_class("InvEditDDIMInvert")
    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(FILES["checkpoints"])
        pos = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
        neg = nodes.CLIPTextEncode().encode(clip, "")[0]
        latent = {"samples": torch.randn(1, 4, a.size // 8, a.size // 8, generator=torch.Generator().manual_seed(0))}
        sigmas = host.node_class("BasicScheduler").execute(model, "normal", a.steps, 1.0)[0]

        def run_invert():
            invert.execute(model=model, positive=pos, negative=neg, latent=latent, sigmas=sigmas, cfg=a.cfg)

        def run_ksampler():
            nodes.KSampler().sample(model, 0, a.steps, a.cfg, "euler", "normal", pos, neg, latent, denoise=1.0)

        run_invert(), run_ksampler()  # warm-up (model load, allocator)
        times = {"invert": [], "ksampler": []}
        for _ in range(a.rounds):
            for name, fn in (("invert", run_invert), ("ksampler", run_ksampler)):
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) / a.steps)

    inv, ks = statistics.median(times["invert"]), statistics.median(times["ksampler"])
    ratio = inv / ks
    print(f"\nDDIM inversion step vs stock KSampler step — shapes-world SD1.5 UNet, {a.size}x{a.size} px, cfg {a.cfg}, "
          f"{a.steps} steps, median of {a.rounds} interleaved rounds, {torch.get_num_threads()} threads")
    print(f"| {'what':<34} | {'s/step':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|")
    print(f"| {'InvEditDDIMInvert':<34} | {inv:8.4f} |")
    print(f"| {'KSampler (euler)':<34} | {ks:8.4f} |")
    print(f"| {'ratio invert / KSampler':<34} | {ratio:8.3f} |")
    print(f"target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()
