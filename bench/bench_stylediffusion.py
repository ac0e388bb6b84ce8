"""StyleDiffusion and null-text inversion on the shapes world: reconstruction, iterations and speed, measured in one
process.

1. Reconstruction at guidance 7.5 and T = 30 (pixel PSNR against the image): the VAE alone, plain DDIM (inverted at
   guidance 1, sampled at 7.5 from that noise on the same grid), null-text inversion (10 iterations a step), and
   StyleDiffusion with the official schedule (K = 100 decaying to 1015 iterations, official init, early stop) and
   with ours (identity init, warm start, early stop) for a sweep of K: the iterations each needed, and the smallest K
   that reaches the official schedule's reconstruction (target: ≤ 340 iterations in all, official 1015).
2. Speed, interleaved: seconds per inner iteration / seconds per U-Net forward + backward (the floor of one
   iteration, on a private copy of the model like the inversion's: gradients to the conditioning only, none to the
   weights, on every host), and seconds per P2Plus edit step / a plain 2-row CFG step (stock euler; target ≤ 1.2:
   explicit attention only where maps are needed). Each round times the runs back to back (order reversed every
   other round) and gives one value of each ratio: min / median / max over the rounds, the target judged on the
   median.

    python -m bench.bench_stylediffusion [--size 64] [--steps 30] [--cfg 7.5] [--rounds 7] [--sweep 10,20,30,50]
                                         [--json PATH]
"""
from __future__ import annotations

import time

from .common import Report, host, interleaved, parser, per_round, shapes_world

ITERATION_TARGET, EDIT_TARGET = 340, 1.2


def main(argv=None) -> Report:
    ap = parser(__doc__, steps=30, cfg=7.5, size=64)
    ap.add_argument("--sweep", default="10,20,30,50", help="inner_steps K of our schedule to try")
    ap.add_argument("--official", type=int, default=100, help="the official schedule's K (100)")
    a = ap.parse_args(argv)
    rep = Report("stylediffusion", a)
    model, clip, vae, encode = shapes_world()
    import torch
    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    from harness.shapes import data

    C = host.node_class
    ad = host.pack_module("adapters.stylediffusion")
    img = data.make_batch(1, data.HELDOUT_SEED + 7, colour=0, shape=0).images.permute(0, 2, 3, 1)
    if a.size != 64:
        img = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2), size=(a.size, a.size),
                                              mode="bilinear").permute(0, 2, 3, 1)
    with torch.inference_mode():
        pos, neg = encode("a red circle"), encode("")
        lat = {"samples": vae.encode(img)}

    def psnr(samples):
        with torch.inference_mode():
            return float(10 * torch.log10(1 / ((vae.decode(samples) - img) ** 2).mean()))

    common = dict(model=model, positive=pos, negative=neg, latent=lat, steps=a.steps, guidance=a.cfg, lr=0.01,
                  lr_decay=0.01, early_stop=1e-5)

    def stylediffusion(inner, init, early_stop=1e-5):
        t = time.perf_counter()
        with torch.inference_mode():
            out = C("InvEditStyleDiffusionInvert").execute(
                image=img, clip_name="shapes-toy-clip", inner_steps=inner, inner_decay=0.1, attn_weight=1.0,
                init=init, warm_start=True, seed=0, **dict(common, early_stop=early_stop)).args
        return out, time.perf_counter() - t

    rows = []
    with torch.inference_mode():
        grid = C("InvEditValueSigmas").execute(model, a.steps, 1.0).args[0]
        noise = C("InvEditDDIMInvert").execute(model=model, positive=pos, negative=neg, latent=lat, sigmas=grid[:-1],
                                               cfg=1.0)[0]
        plain = comfy.sample.sample_custom(model, torch.zeros_like(noise["samples"]), a.cfg,
                                           comfy.samplers.sampler_object("euler"), grid[:-1], pos, neg,
                                           noise["samples"], disable_pbar=True, seed=0)
    rows.append(("VAE alone", psnr(lat["samples"]), 0, 0.0))
    rows.append((f"plain DDIM (invert at 1, sample at {a.cfg})", psnr(plain), 0, 0.0))
    t = time.perf_counter()
    with torch.inference_mode():
        nt = C("InvEditNullTextInvert").execute(inner_steps=10, inner_decay=0.0, seed=0, **common).args
    rows.append(("null-text (10 a step)", psnr(nt[2]["samples"]), int(nt[0].meta["iterations"]),
                 time.perf_counter() - t))
    off, sec = stylediffusion(a.official, "official")
    official_psnr = psnr(off[2]["samples"])
    rows.append((f"StyleDiffusion, official (K {a.official}, official init)", official_psnr,
                 int(off[0].meta["iterations"]), sec))
    reached = None
    for k in [int(x) for x in a.sweep.split(",")]:
        out, sec = stylediffusion(k, "identity")
        p, n = psnr(out[2]["samples"]), int(out[0].meta["iterations"])
        rows.append((f"StyleDiffusion, ours (K {k}, identity init)", p, n, sec))
        if reached is None and p >= official_psnr - 0.1:
            reached = (k, n)
    print(f"\nReconstruction at guidance {a.cfg}, T = {a.steps}, {a.size}x{a.size} px (shapes-world red circle)")
    print(f"| {'method':<50} | {'PSNR dB':>8} | {'iterations':>10} | {'seconds':>8} |")
    print(f"|{'-' * 52}|{'-' * 10}|{'-' * 12}|{'-' * 10}|")
    for name, p, n, s in rows:
        print(f"| {name:<50} | {p:8.2f} | {n:10d} | {s:8.1f} |")
    rep.settings["reconstruction"] = [dict(method=m, psnr_db=p, iterations=n, seconds=t) for m, p, n, t in rows]
    if reached:
        print(f"ours reaches the official schedule's {official_psnr:.2f} dB (within 0.1 dB) with K = {reached[0]}: "
              f"{reached[1]} iterations (target <= {ITERATION_TARGET}; official {off[0].meta['iterations']}): "
              f"{'met' if reached[1] <= ITERATION_TARGET else 'NOT met'}")
    else:
        print(f"no K of the sweep reached the official schedule's {official_psnr:.2f} dB: target NOT met")

    # -- speed -----------------------------------------------------------------------------------------------------
    emb = off[0]
    x = torch.randn_like(lat["samples"]) * 3
    sigma = emb.sigmas[2:3].float()
    ctx = pos[0][0]

    run = host.pack_module("adapters.run")
    with torch.inference_mode(False):  # the floor runs on what the inner iteration runs on: a private copy
        private = run.private_patcher(model, "bench")  # (requires_grad off: no weight gradients, on every host)

    def forward_backward():
        with run.grad_context():
            comfy.model_management.load_models_gpu([private], force_full_load=True)
            c = ctx.clone().requires_grad_(True)
            out = private.model.apply_model(x.clone(), sigma, c_crossattn=c)
            out.sum().backward()

    fixed_k = 4

    def inversion():
        with torch.inference_mode():
            C("InvEditStyleDiffusionInvert").execute(
                image=img, clip_name="shapes-toy-clip", inner_steps=fixed_k, inner_decay=0.0, attn_weight=1.0,
                init="identity", warm_start=True, seed=0, **dict(common, steps=4, early_stop=0.0))

    fb = interleaved({"U-Net forward + backward": forward_backward, "inner iteration (StyleDiffusion)": inversion},
                     a.rounds, {"U-Net forward + backward": 1,
                                "inner iteration (StyleDiffusion)": 4 * fixed_k})  # 4 steps x K iterations a run
    run.release([private])
    rep.time_table(f"Seconds per inner iteration vs one U-Net forward + backward (the inversion's DDIM pass, baking "
                   f"and setup included in the iteration), {a.rounds} interleaved rounds", fb, unit="seconds",
                   base="U-Net forward + backward")
    rep.ratio("inner iteration / U-Net forward + backward",
              per_round(fb["inner iteration (StyleDiffusion)"], fb["U-Net forward + backward"]), note="no target")

    # the short run is the end of the embedding's grid (a partial run: P2P Edit plays the grid's steps it is at)
    long_grid = grid
    short_grid = long_grid[len(long_grid) - 1 - max(2, a.steps // 3):]
    latent2 = {"samples": noise["samples"].repeat(2, 1, 1, 1)}

    def plain_two_rows(g):
        def run():
            with torch.inference_mode():
                comfy.sample.sample_custom(model, torch.zeros_like(latent2["samples"]), a.cfg,
                                           comfy.samplers.sampler_object("euler"), g, pos, neg, latent2["samples"],
                                           disable_pbar=True, seed=0)
        return run

    def p2plus(g):
        def run():
            with torch.inference_mode():
                ad.edit(model, clip, "a red circle", "a blue circle", neg, emb.x_T, g,
                        ad.EditSettings(guidance=a.cfg, tau_c=1.0, tau_s=1.0, tau_u=1.0), "bench", emb)
        return run

    # the marginal cost of a step: (a long run − a short run) / the steps between, so that once-per-run work (the
    # prompts' encoding and tokenising, the patches) does not count
    runs = {f"{k} ({len(g) - 1} steps)": fn(g) for k, fn in (("plain", plain_two_rows), ("P2Plus", p2plus))
            for g in (long_grid, short_grid)}
    whole = interleaved(runs, a.rounds, 1)
    n = (len(long_grid) - len(short_grid))
    lo, hi = len(short_grid) - 1, len(long_grid) - 1
    marginal = {"plain 2-row CFG step (stock euler)": [(b - c) / n for b, c in zip(whole[f"plain ({hi} steps)"],
                                                                                     whole[f"plain ({lo} steps)"])],
                "P2Plus edit step": [(b - c) / n for b, c in zip(whole[f"P2Plus ({hi} steps)"],
                                                                  whole[f"P2Plus ({lo} steps)"])]}
    rep.time_table(f"P2Plus edit step (tau_c = tau_s = tau_u = 1: every step edits) vs a plain 2-row CFG step, "
                   f"{a.size}x{a.size} px, the marginal seconds per step between runs of {hi} and {lo} steps, "
                   f"{a.rounds} interleaved rounds, {torch.get_num_threads()} threads", marginal,
                   base="plain 2-row CFG step (stock euler)")
    rep.ratio("P2Plus edit step / plain 2-row CFG step",
              per_round(marginal["P2Plus edit step"], marginal["plain 2-row CFG step (stock euler)"]), EDIT_TARGET)
    return rep.finish("StyleDiffusion speed")


if __name__ == "__main__":
    main()
