"""Reconstruction against model calls for every inverter of the pack (issue 28): invert held-out shapes-world images
with the source prompt and regenerate with the same prompt, at several step counts, and plot the pixel PSNR of the
reconstruction (against the image's own VAE round trip, so the VAE's error is left out) against the U-Net / MMDiT
evaluations per image. The figure a user wants before choosing an inverter.

Inverters: DDIM (Invert + the stock ddim/euler sampler), EDICT (2 calls a step, exact), BDIA (1 call a step,
exact; γ 0.8, which stays exact to 50 steps), and on the SD3 world RF-Solver (2 calls a step) and FireFlow (1 + 1).
Schedules: the U-Net world's 'normal' list at strength 1, the SD3 world's 'simple' at strength 0.8 (a flow inversion
handed to a stock sampler must stop below σ = 1). cfg 3. An exact inverter's PSNR is capped at 99 dB (identical
images).

    python -m bench.inversion_calls [--images 4] [--steps 4 8 16 32] [--out docs/bench]
    python -m bench.inversion_calls --replot       (the figures again from docs/bench/inversion_calls.json)
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import scorecard as S  # noqa: E402
from harness.paths import ROOT  # noqa: E402
from harness.shapes import data  # noqa: E402
from harness.tiny_models import FILES, SD3_FILES  # noqa: E402

CFG = 3.0
GAMMA = 0.8
CAP = 99.0
COLOURS = {"DDIM": "#888888", "EDICT": "#1f77b4", "BDIA": "#d62728", "RF-Solver": "#2ca02c", "FireFlow": "#ff7f0e"}


def sigmas(w, steps):
    if w.flow:
        return w.C("BasicScheduler").execute(w.model, "simple", steps, 0.8)[0]
    return w.C("BasicScheduler").execute(w.model, "normal", steps, 1.0)[0]


def reconstruct(w, m, name, src, prompt, sig):
    C, pos, neg = w.C, w.enc(prompt), w.enc("")
    if name == "DDIM":
        inv = C("InvEditDDIMInvert").execute(model=m, positive=pos, negative=neg, latent=src, sigmas=sig, cfg=CFG)[0]
        return S._sample(w, m, "euler" if w.flow else "ddim", sig, prompt, inv, CFG)
    if name == "EDICT":
        pair = C("InvEditEDICTInvert").execute(model=m, positive=pos, negative=neg, latent=src, sigmas=sig, cfg=CFG,
                                               mix_p=0.93, leapfrog=True, official_input_scaling=True,
                                               state_dtype="float64")[0]
        return C("InvEditEDICTRegenerate").execute(model=m, positive=pos, negative=neg, pair=pair, cfg=CFG,
                                                   mix_p=0.93, leapfrog=True,
                                                   official_input_scaling=True)[0]["samples"]
    if name == "BDIA":
        pair = C("InvEditBDIAInvert").execute(model=m, positive=pos, negative=neg, latent=src, sigmas=sig, cfg=CFG,
                                              gamma=GAMMA, state_dtype="float64")[0]
        return C("InvEditBDIARegenerate").execute(model=m, positive=pos, negative=neg, pair=pair, cfg=CFG,
                                                  gamma=GAMMA)[0]["samples"]
    node = {"RF-Solver": "InvEditSamplerRFSolver", "FireFlow": "InvEditSamplerFireFlow"}[name]
    inv, fwd = (C(node).execute(d)[0] for d in ("invert", "sample"))
    noise = S._sample(w, m, inv, sig, prompt, src, CFG)
    return S._sample(w, m, fwd, sig, prompt, {"samples": noise}, CFG)


def measure(world: str, n_images: int, step_counts) -> list[dict]:
    w = S.World(FILES["checkpoints"] if world == "unet" else SD3_FILES["checkpoints"])
    batch = data.make_batch(n_images, S.SEED, colour=data.COLOURS.index("red"))
    names = ["DDIM", "EDICT", "BDIA"] + (["RF-Solver", "FireFlow"] if w.flow else [])
    out = []
    for steps in step_counts:
        for name in names:
            psnr, calls = [], []
            for i in range(n_images):
                img = batch.images[i:i + 1]
                src = w.encode(img)
                ref = w.decode(src["samples"])
                prompt = f"a red {data.SHAPES[int(batch.shape[i])]}"
                rec, evals, _, _ = w.timed(lambda m: reconstruct(w, m, name, src, prompt, sigmas(w, steps)))
                mse = float(((w.decode(rec) - ref) ** 2).mean())
                psnr.append(CAP if mse == 0 else min(CAP, 10 * math.log10(1 / mse)))
                calls.append(evals)
            out.append({"world": world, "inverter": name, "steps": steps, "calls": sum(calls) / len(calls),
                        "psnr": sum(psnr) / len(psnr)})
            print(f"{world:5} {name:10} {steps:3} steps: {out[-1]['calls']:6.1f} calls, {out[-1]['psnr']:5.1f} dB",
                  flush=True)
    return out


def svg(points: list[dict], world: str, width=520, height=320) -> str:
    """PSNR (y) against model calls per image (x, log scale), one polyline per inverter."""
    pts = [p for p in points if p["world"] == world]
    xs = [math.log2(max(p["calls"], 1)) for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, 100.0
    L, R, T, B = 60, 130, 30, 40

    def X(c):
        return L + (math.log2(max(c, 1)) - x0) / max(x1 - x0, 1e-9) * (width - L - R)

    def Y(v):
        return height - B - (v - y0) / (y1 - y0) * (height - T - B)
    title = "U-Net world" if world == "unet" else "SD3 world"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{L}" y="18" font-size="13">Reconstruction PSNR vs model calls per image — {title}</text>',
             f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" stroke="black"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" stroke="black"/>']
    for v in range(0, 101, 20):
        parts.append(f'<text x="{L - 8}" y="{Y(v) + 4}" text-anchor="end">{v}</text>')
    for k in range(math.ceil(x0), math.floor(x1) + 1):  # ticks at powers of 2
        parts.append(f'<line x1="{X(2 ** k):.1f}" y1="{height - B}" x2="{X(2 ** k):.1f}" y2="{height - B + 4}" '
                     f'stroke="black"/>')
        parts.append(f'<text x="{X(2 ** k):.1f}" y="{height - B + 15}" text-anchor="middle">{2 ** k}</text>')
    parts.append(f'<text x="{(L + width - R) / 2}" y="{height - 6}" text-anchor="middle">model calls per image '
                 f'(log scale)</text>')
    parts.append(f'<text x="14" y="{(T + height - B) / 2}" transform="rotate(-90 14 {(T + height - B) / 2})" '
                 f'text-anchor="middle">PSNR dB (99 = identical)</text>')
    for k, name in enumerate(dict.fromkeys(p["inverter"] for p in pts)):
        series = sorted((p for p in pts if p["inverter"] == name), key=lambda p: p["calls"])
        line = " ".join(f"{X(p['calls']):.1f},{Y(p['psnr']):.1f}" for p in series)
        colour = COLOURS[name]
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{X(p["calls"]):.1f}" cy="{Y(p["psnr"]):.1f}" r="3" fill="{colour}"/>' for p in series]
        parts.append(f'<text x="{width - R + 10}" y="{T + 16 * k + 10}" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def table(points: list[dict]) -> str:
    lines = ["| world | inverter | steps | model calls / image | recon PSNR dB |", "|---|---|---|---|---|"]
    lines += [f"| {p['world']} | {p['inverter']} | {p['steps']} | {p['calls']:.0f} | "
              f"{'exact (99)' if p['psnr'] >= CAP else format(p['psnr'], '.1f')} |" for p in points]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--worlds", nargs="+", default=["unet", "sd3"])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    ap.add_argument("--replot", action="store_true", help="redraw the figures from OUT/inversion_calls.json")
    a = ap.parse_args(argv)
    if a.replot:
        import json
        points = json.loads((a.out / "inversion_calls.json").read_text())
        for world in dict.fromkeys(p["world"] for p in points):
            (a.out / f"inversion_calls_{world}.svg").write_text(svg(points, world))
        return points
    points = [p for world in a.worlds for p in measure(world, a.images, a.steps)]
    a.out.mkdir(parents=True, exist_ok=True)
    for world in a.worlds:
        (a.out / f"inversion_calls_{world}.svg").write_text(svg(points, world))
    import json
    (a.out / "inversion_calls.json").write_text(json.dumps(points, indent=1))
    md = table(points)
    (a.out / "inversion_calls.md").write_text(
        f"Reconstruction PSNR against model calls ({a.images} held-out shapes images each, cfg {CFG:g}; BDIA γ "
        f"{GAMMA}); `python -m bench.inversion_calls`\n\n{md}\n")
    print("\n" + md)
    return points


if __name__ == "__main__":
    main()
