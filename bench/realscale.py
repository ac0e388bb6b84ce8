"""Real-scale figures (issue 17): every method of the pack on full-size random-weight models built from ComfyUI
0.3.75's own configs (``bench.fullsize``: the SD1.5 U-Net, 860 M; the SDXL U-Net, 2.6 B; an SD3-medium-shaped
MMDiT, 2.0 B; the full AutoencoderKL; CLIP-L / CLIP-L+G and CLIP ViT-L/14 where a method needs them), loaded
through ComfyUI's model management and run through the pack's own nodes. Random weights cost exactly what trained
ones cost; conditionings are random tensors of the real shapes (no T5-XXL is built: SD3's 154 × 4096 context is a
tensor). One table per model, every method side by side with the stock step on the same model, size and cfg:

  stock euler step (KSampler's work) | DDIM inversion step (≤ 1.05) | EDICT sampler step (≤ 2.05) |
  Asyrp step, shared encoder (≤ 1.6; U-Nets) | VAE encode / decode | DOODL iteration / EDICT generation (≤ 4) and
  its memory at T = hi / T = lo (≤ 1.1) | StyleDiffusion inner iteration / U-Net forward + backward (U-Nets) |
  CASO training step, plain, with gradient checkpointing (and bf16 on a GPU) (U-Nets) | CSDS iteration / its
  sampler step (≤ 2.1)

Memory, per row: on CUDA the peak allocated (``torch.cuda.max_memory_allocated``, the weights included); on the
CPU the process's peak resident set (the weights of every model built included) and its rise during the run; and
for the gradient methods the peak of the tensors autograd holds for backward (saved-tensor hooks, each storage
once, weights excluded: the same bytes on any device at that size and dtype). Memory ratios (checkpointing, T)
compare the CUDA peak on a GPU and the resident set's rise on the CPU.

The defaults are ``PLANS``. CPU: SD1.5 at 128² with 3 steps and every method (DOODL at 64², its memory at T = 2 vs
10: the same ×5 in steps), SDXL and SD3 at 64² with 2 steps and every method but DOODL; 12 to 14 minutes on 2
cores. ``--gpu``: CUDA, fp16 weights, SD1.5 at 512², SDXL and SD3 at 1024², 10 steps, every method, DOODL memory
at T = 10 vs 50 (an estimated 6 minutes on one H200; not yet run: no GPU lent so far). ``--once`` runs the gradient
methods once each for their memory at a size too slow to time (``--size 512`` on the CPU). ``--out`` gets
realscale.md (the tables) and realscale.json.

    python -m bench.realscale [--gpu] [--models sd15,sdxl,sd3] [--methods ...] [--size N] [--steps N] [--out DIR]
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .common import LiveBytes, host
from . import fullsize

METHODS = ("sampling", "vae", "doodl", "stylediffusion", "caso", "csds")
UNET_ONLY = {"stylediffusion", "caso"}
# The defaults of each mode: {model: (image side, steps, methods)}. The CPU plan fits 15 minutes on 2 cores: DOODL's
# chain of 2 × T model calls and its backward run on SD1.5 only there (SDXL's alone would take 4 minutes at 64²).
PLANS = {"cpu": {"sd15": (128, 3, METHODS), "sdxl": (64, 2, tuple(m for m in METHODS if m != "doodl")),
                 "sd3": (64, 2, tuple(m for m in METHODS if m != "doodl"))},
         "gpu": {"sd15": (512, 10, METHODS), "sdxl": (1024, 10, METHODS), "sd3": (1024, 10, METHODS)}}
# The papers' own figures (issue 17), printed beside the table
ANCHORS = {
    "DOODL": "official code ~40 GB and ~45 s per iteration on an A100 (SD1.4 fp16, 512², 50 steps)",
    "StyleDiffusion": "~0.30 s per inner iteration, ~5 min per image on an RTX 3090 (SD1.4, 512²)",
    "EDICT": "official code runs the whole model in float64 (the pack: the model in its own dtype, only the x/y "
             "state in float64)",
}


@dataclass
class Row:
    what: str
    seconds: float
    unit: str                      # "step", "iteration", "image", ...
    base: Optional[str] = None     # the row it is divided by
    target: Optional[float] = None
    memory: dict = field(default_factory=dict)
    ratio: Optional[float] = None  # a ratio of its own (memory T = hi / T = lo), when not seconds / base


class Memory:
    """The peak memory of the code inside: CUDA peak allocated (GiB, weights included) on a GPU; on the CPU the
    process's peak resident set (GiB, weights included, sampled every 5 ms) and its rise above the start (MiB: what
    the run allocated at its peak, recomputed checkpoint segments included; ``main`` makes glibc hand every large
    block back to the system when it is freed, so that the resident set follows the live tensors); and the peak of
    the tensors saved for backward (MiB; each storage once, the models' weights not counted; what a checkpoint
    recomputes in the backward pass is not seen there)."""

    def __init__(self, cuda: bool, weights: frozenset = frozenset()):
        self.cuda, self.weights, self.result = cuda, weights, {}

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            self._stop.wait(0.005)

    def __enter__(self):
        import torch
        self.saved = LiveBytes(distinct=True, exclude=self.weights)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.saved.pack, self.saved.unpack)
        self._hooks.__enter__()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._start = self._peak = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch
        self._hooks.__exit__(*exc)
        if self.cuda:
            torch.cuda.synchronize()
            self.result["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        else:
            self._stop.set()
            self._thread.join()
            self.result["rss_peak_gib"] = self._peak / 2 ** 30
            self.result["rss_rise_mib"] = (self._peak - self._start) / 2 ** 20
        if self.saved.peak:
            self.result["saved_peak_mib"] = self.saved.peak / 2 ** 20
        return False


@dataclass
class World:
    """One full-size model and what its methods share: size, steps, cfg, conditionings, latents, sigmas."""
    name: str
    spec: fullsize.Spec
    model: object
    params: int
    size: int
    steps: int
    cfg: float
    cuda: bool
    vae: object = None
    clip: object = None
    clip_vision: object = None

    def __post_init__(self):
        import torch
        self.positive = fullsize.conditioning(self.name, 0)
        self.negative = fullsize.conditioning(self.name, 1)
        self.latent = self.latent_of(self.size)
        self.noise = torch.randn(self.latent["samples"].shape, generator=torch.Generator().manual_seed(3))
        C = host.node_class
        with torch.inference_mode():  # flow: "simple" from just below σ = 1 (the inversion cannot end at pure noise)
            self.sigmas = (C("BasicScheduler").execute(self.model, "normal", self.steps, 1.0)[0] if self.spec.unet else
                           C("BasicScheduler").execute(self.model, "simple", self.steps + 1, 1.0)[0][1:])

    def latent_of(self, size: int) -> dict:
        import torch
        side = size // 8
        g = torch.Generator().manual_seed(2)
        return {"samples": torch.randn(1, self.spec.latent_channels, side, side, generator=g)}

    def modules(self) -> list:
        return [m for m in (self.model.model, getattr(self.vae, "first_stage_model", None),
                            getattr(self.clip, "cond_stage_model", None), getattr(self.clip_vision, "model", None),
                            getattr(self, "grad_copy", None))
                if m is not None]

    def weights(self):
        """The storages of every model's parameters and buffers (not counted as saved activations), the private
        copies a gradient node works on (``adapters.run.private_for_grad``) included while it runs."""
        return host.pack_module("adapters.run").WeightStorages(
            t.untyped_storage().data_ptr() for m in self.modules() for t in (*m.parameters(), *m.buffers()))

    def timed(self, fn: Callable) -> tuple[float, dict]:
        """(seconds, memory) of one call."""
        import torch
        with Memory(self.cuda, self.weights()) as m:
            t = time.perf_counter()
            fn()
            if self.cuda:
                torch.cuda.synchronize()
            s = time.perf_counter() - t
        return s, m.result


def interleaved(w: World, runs: dict, rounds: int, per: dict) -> dict:
    """{name: (median seconds per unit, memory of its last run)}, each run warmed up once, then interleaved round by
    round; ``per[name]`` divides a run's time (its steps)."""
    for fn in runs.values():
        fn()
    times: dict = {k: [] for k in runs}
    mem: dict = {}
    for _ in range(rounds):
        for k, fn in runs.items():
            s, mem[k] = w.timed(fn)
            times[k].append(s / per.get(k, 1))
    return {k: (statistics.median(v), mem[k]) for k, v in times.items()}


# -- the methods ----------------------------------------------------------------------------------------------------

def memory_key(w: World) -> str:
    """The figure a memory ratio compares: the CUDA peak on a GPU, the resident set's rise on the CPU (both see
    what a checkpoint recomputes; the saved-tensor figure does not)."""
    return "cuda_peak_gib" if w.cuda else "rss_rise_mib"


def ratio(m: dict, base: dict, key: str) -> float:
    return m.get(key, 0) / max(base.get(key, 0), 1e-9)


STOCK = "stock euler step"


def sampling_rows(w: World, rounds: int) -> list[Row]:
    import torch
    import comfy.sample
    import comfy.samplers
    C = host.node_class
    zeros = torch.zeros_like(w.noise)

    def sample(model, sampler):
        return lambda: comfy.sample.sample_custom(model, w.noise, w.cfg, sampler, w.sigmas, w.positive, w.negative,
                                                  zeros, disable_pbar=True, seed=0)
    runs = {STOCK: sample(w.model, comfy.samplers.sampler_object("euler")),
            "DDIM inversion step": lambda: C("InvEditDDIMInvert").execute(
                model=w.model, positive=w.positive, negative=w.negative, latent=w.latent, sigmas=w.sigmas, cfg=w.cfg),
            "EDICT sampler step": sample(w.model, C("InvEditSamplerEDICT").execute(0.93, True, True, "float64",
                                                                                   "x")[0])}
    if w.spec.unet:
        with torch.inference_mode():
            direction = C("InvEditHSpaceFromPrompts").execute(w.model, w.positive, w.negative, w.latent, 4, 0,
                                                              "global")[0]
            edited = C("InvEditHSpaceApply").execute(w.model, direction, 3.0, 999, 0, "asymmetric", "both",
                                                     "resize")[0]
        runs["Asyrp step, shared encoder"] = sample(edited, C("InvEditSamplerAsyrp").execute(0, 1.0)[0])
    targets = {"DDIM inversion step": 1.05, "EDICT sampler step": 2.05, "Asyrp step, shared encoder": 1.6}
    with torch.inference_mode():
        med = interleaved(w, runs, rounds, {k: w.steps for k in runs})
    return [Row(k, s, "step", None if k == STOCK else STOCK, targets.get(k), m) for k, (s, m) in med.items()]


def vae_rows(w: World, rounds: int) -> list[Row]:
    import torch
    image = torch.rand(1, w.size, w.size, 3, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        med = interleaved(w, {"VAE encode": lambda: w.vae.encode(image),
                              "VAE decode": lambda: w.vae.decode(w.latent["samples"])}, rounds, {})
    return [Row(k, s, "image", memory=m) for k, (s, m) in med.items()]


def doodl_rows(w: World, lo: int, hi: int, size: int, crops: int, once: bool = False) -> list[Row]:
    """DOODL (reversible backward) on a ``size``² image: the memory of one iteration at T = lo and T = hi, and the
    seconds per iteration at the world's steps ((3 iterations − 1) / 2: the final evaluation and set-up cancel)
    against an EDICT generation of the same steps, size and cfg. ``once``: one iteration at T = lo, for its memory
    (seconds: the whole run, its final evaluation included)."""
    import torch
    import comfy.sample
    C = host.node_class
    with torch.inference_mode():
        loss = C("InvEditDOODLClassifierLoss").execute(
            classifier="shapes_colour.safetensors", architecture="small_cnn", target="blue", num_classes=0,
            normalisation="none", mode="cross_entropy", weight=1.0, crops=crops, crop_power=0.3, input_size=64).args[0]
    latent = w.latent_of(size)

    def doodl(steps, iterations, checkpointing=False):
        with torch.inference_mode():
            C("InvEditDOODLOptimize").execute(
                model=w.model, positive=w.positive, negative=w.negative, vae=w.vae, loss=loss, latent=latent, seed=0,
                steps=steps, cfg=w.cfg, mix_p=0.93, iterations=iterations, lr=1.0, grad_clip=1e-3, momentum=0.9,
                perturb_std=1e-4, keep="last", backprop="reversible", grad_checkpointing=checkpointing)
    key = memory_key(w)
    name = f"DOODL, 1 iteration, T = {lo} ({size}²)"
    if once:
        (s_lo, m_lo), (s_ck, m_ck) = w.timed(lambda: doodl(lo, 1)), w.timed(lambda: doodl(lo, 1, True))
        return [Row(name, s_lo, "run", memory=m_lo),
                Row(name + ", checkpointing", s_ck, "run", name, memory=m_ck, ratio=ratio(m_ck, m_lo, key))]
    doodl(lo, 1)  # warm-up
    (_, m_lo), (_, m_hi) = w.timed(lambda: doodl(lo, 1)), w.timed(lambda: doodl(hi, 1))
    _, m_ck = w.timed(lambda: doodl(lo, 1, True))
    with torch.inference_mode():
        sigmas = C("InvEditEDICTSigmas").execute(w.model, w.steps, "official_980_0", 1.0)[0]
        sampler = C("InvEditSamplerEDICT").execute(0.93, True, True, "float64", "x")[0]
    noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(3))

    def generation():
        with torch.inference_mode():
            comfy.sample.sample_custom(w.model, noise, w.cfg, sampler, sigmas, w.positive, w.negative,
                                       torch.zeros_like(noise), disable_pbar=True, seed=0)
    generation()
    gen, gen_m = w.timed(generation)
    one, _ = w.timed(lambda: doodl(w.steps, 1))
    three, it_m = w.timed(lambda: doodl(w.steps, 3))
    edict = f"EDICT generation ({w.steps} steps, {size}²)"
    lo_name = f"DOODL memory, T = {lo} ({size}²)"
    return [Row(lo_name, 0.0, "-", memory=m_lo),
            Row(f"DOODL memory, T = {hi} ({size}²)", 0.0, "-", lo_name, 1.1, m_hi, ratio(m_hi, m_lo, key)),
            Row(f"DOODL memory, T = {lo}, checkpointing", 0.0, "-", lo_name, None, m_ck, ratio(m_ck, m_lo, key)),
            Row(edict, gen, "image", memory=gen_m),
            Row(f"DOODL iteration ({w.steps} steps, {size}²)", (three - one) / 2, "iteration", edict, 4.0, it_m)]


def stylediffusion_rows(w: World, rounds: int, once: bool = False) -> list[Row]:
    """Seconds per StyleDiffusion inner iteration ((K = 3 − K = 1) / the iterations between, on a 2-step grid: the
    inversion pass and set-up cancel) against one U-Net forward + backward to the context (its floor). ``once``: one
    floor call and one inversion with K = 1, for their memory (seconds: the whole inversion)."""
    import torch
    import comfy.model_management
    C = host.node_class
    image = torch.rand(1, w.size, w.size, 3, generator=torch.Generator().manual_seed(5))
    x = (torch.randn(w.latent["samples"].shape) * 3)
    steps = 2

    def invert(k, checkpointing=False):
        def run():
            with torch.inference_mode():
                C("InvEditStyleDiffusionInvert").execute(
                    model=w.model, positive=w.positive, negative=w.negative, latent=w.latent, image=image,
                    clip_name="clip_vision input", steps=steps, guidance=w.cfg, inner_steps=k, inner_decay=0.0,
                    lr=0.01, lr_decay=0.01, early_stop=0.0, attn_weight=1.0, init="identity", warm_start=True, seed=0,
                    clip_vision=w.clip_vision, grad_checkpointing=checkpointing)
        return run

    run = host.pack_module("adapters.run")

    with torch.inference_mode(False):  # the private copy the inversion works on, made once for the floor
        private = run.private_patcher(w.model, "bench")
    base = w.grad_copy = private.model

    def forward_backward():
        with run.grad_context():
            comfy.model_management.load_models_gpu([private], force_full_load=True)
            dev = next(base.diffusion_model.parameters()).device
            c = w.positive[0][0].to(dev).clone().requires_grad_(True)
            extra = {}
            if w.spec.pooled:
                extra = base.extra_conds(cross_attn=c, pooled_output=w.positive[0][1]["pooled_output"].to(dev),
                                         noise=x.to(dev), device=dev)
                extra = {k: v.process_cond(batch_size=1, device=dev).cond for k, v in extra.items()
                         if k != "c_crossattn"}
            out = base.apply_model(x.to(dev), torch.full((1,), 3.0, device=dev), c_crossattn=c, **extra)
            out.float().sum().backward()
    fb = w.timed(forward_backward) if once else interleaved(w, {"fb": forward_backward}, rounds, {})["fb"]
    run.release([private])
    del w.grad_copy
    one, m1 = w.timed(invert(1))
    one_ck, m1_ck = w.timed(invert(1, True))
    floor = Row("U-Net forward + backward", fb[0], "call", memory=fb[1])
    name = f"StyleDiffusion inversion, K = 1, T = {steps}"
    rows = [floor, Row(name, one, "run", memory=m1),
            Row(name + ", checkpointing", one_ck, "run", name, memory=m1_ck, ratio=ratio(m1_ck, m1, memory_key(w)))]
    if once:
        return rows
    three, _ = w.timed(invert(3))
    return rows + [Row("StyleDiffusion inner iteration", (three - one) / (2 * steps), "iteration",
                       "U-Net forward + backward", None, m1)]


def caso_rows(w: World, steps: int, batch: int, once: bool = False) -> list[Row]:
    """Seconds per CASO training step (the median after the first) and its memory, plain, with gradient
    checkpointing, and on a GPU with bf16 autocast (with and without checkpointing). ``once``: one step each, for
    its memory (seconds: the whole run)."""
    import torch
    from harness.paths import BASE
    from harness.tiny_models import CLASSIFIER_DIR, CLASSIFIERS
    ad, oc = host.pack_module("adapters.caso"), host.pack_module("optim.caso")
    cl, ac = host.pack_module("losses.classifiers"), host.pack_module("artifacts.classifier")
    with torch.inference_mode(False):
        net, classes = ac.load_classifier(BASE / "models" / CLASSIFIER_DIR / CLASSIFIERS[0], "small_cnn", None,
                                          "bench")
        net = net.to("cuda" if w.cuda else "cpu")
    clf = cl.ImageClassifier.network(net, classes)
    lat = torch.randn(batch, 4, w.size // 8, w.size // 8, generator=torch.Generator().manual_seed(6))
    variants = [("fp32", False), ("fp32", True)] + ([("bf16", False), ("bf16", True)] if w.cuda else [])
    rows: list[Row] = []
    for dtype, ckpt in variants:
        stamps: list = []
        settings = ad.CASOSettings(config=oc.TrainConfig(steps=1 if once else steps, batch_size=batch, seed=0,
                                                         dtype=dtype, checkpointing=ckpt))

        def train():
            with torch.inference_mode():
                ad.train(w.model, w.clip, w.vae, clf, lat, settings, "bench",
                         on_step=lambda st: stamps.append(time.perf_counter()))
        whole, mem = w.timed(train)
        per = whole if once else statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))
        name = f"CASO training step, {dtype}" + (", checkpointing" if ckpt else "") + f" (batch {batch})"
        unit = "run" if once else "step"
        rows.append(Row(name, per, unit, "U-Net forward + backward", None, mem) if not rows else
                    Row(name, per, unit, rows[0].what, None, mem, ratio(mem, rows[0].memory, memory_key(w))))
    return rows


def csds_rows(w: World, rounds: int, iterations: int = 4) -> list[Row]:
    """Seconds per CSDS iteration ((K iterations − 0) / K) against a step of the same EMS Edit Sampler run."""
    import torch
    C = host.node_class
    strength = 1.0 if w.spec.unet else 0.75
    attribute = fullsize.conditioning(w.name, 7)

    def run(k):
        def go():
            with torch.inference_mode():
                C("InvEditEMSEditSampler").execute(
                    model=w.model, positive=w.positive, negative=w.negative, attribute=attribute,
                    latent_image=w.latent, seed=0, steps=w.steps, strength=strength, strength_mode="diffusers",
                    cfg=w.cfg, sampler_name="euler", scheduler="simple", iterations=k, lr_start=0.1, lr_end=0.01,
                    lr_schedule="geometric", lambda_=0.5, csds_cfg=1.0, direction="toward_attribute",
                    grad_mode="delta", step_space="auto")
        return go
    steps_run = w.steps - int(w.steps - strength * w.steps)
    med = interleaved(w, {"0": run(0), "k": run(iterations)}, rounds, {})
    step = med["0"][0] / steps_run
    return [Row("EMS sampler step (text only)", step, "step", memory=med["0"][1]),
            Row(f"CSDS iteration (delta, {iterations} a run)", (med["k"][0] - med["0"][0]) / iterations, "iteration",
                "EMS sampler step (text only)", 2.1, med["k"][1])]


# -- the table ------------------------------------------------------------------------------------------------------

def table(title: str, rows: list[Row], cuda: bool) -> str:
    seconds = {r.what: r.seconds for r in rows}
    mem_cols = ["cuda_peak_gib", "saved_peak_mib"] if cuda else ["rss_peak_gib", "rss_rise_mib", "saved_peak_mib"]
    heads = {"cuda_peak_gib": "CUDA peak GiB", "rss_peak_gib": "RSS peak GiB", "rss_rise_mib": "RSS rise MiB",
             "saved_peak_mib": "saved MiB"}
    out = [f"\n{title}", f"| {'what':<50} | {'seconds':>9} | {'per':<9} | {'ratio':>6} | {'to':<50} | "
           f"{'target':>9} | " + " | ".join(f"{heads[c]:>13}" for c in mem_cols) + " |",
           "|" + "|".join("-" * (n + 2) for n in (50, 9, 9, 6, 50, 9, *[13] * len(mem_cols))) + "|"]
    for r in rows:
        to = ("memory / " if r.ratio is not None else "") + (r.base or "")
        ratio = r.ratio if r.ratio is not None else (r.seconds / seconds[r.base] if r.base in seconds else None)
        r.ratio = ratio
        met = "" if r.target is None or ratio is None else ("ok" if ratio <= r.target else "NOT")
        out.append(f"| {r.what:<50} | {r.seconds:9.3f} | {r.unit:<9} | "
                   + (f"{ratio:6.3f}" if ratio is not None else " " * 6) + f" | {to:<50} | "
                   + (f"{r.target:g} {met}".rjust(9) if r.target is not None else " " * 9) + " | "
                   + " | ".join(f"{r.memory[c]:13.2f}" if c in r.memory else " " * 13 for c in mem_cols) + " |")
    return "\n".join(out)


def unpooled_heap() -> None:
    """glibc: serve every block of 128 KiB or more by mmap and return it to the system when freed (a fixed
    M_MMAP_THRESHOLD, -3; the default threshold grows with the blocks freed and then keeps them in the heap), so
    that the resident set follows the live tensors. Nothing happens without glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)
    except (OSError, AttributeError):
        pass


def free() -> None:
    """Unload every model from ComfyUI's model management and free its memory (the next model is built after)."""
    import comfy.model_management
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()


def run_model(name: str, a) -> dict:
    import torch
    spec = fullsize.MODELS[name]
    device = torch.device("cuda" if a.gpu else "cpu")
    dtype_name = a.dtype or ("fp16" if a.gpu else "fp32")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    size, steps, methods = PLANS["gpu" if a.gpu else "cpu"][name]
    size, steps = a.size or size, a.steps or steps
    methods = [m for m in (a.methods.split(",") if a.methods else methods) if not (m in UNET_ONLY and not spec.unet)]
    t = time.perf_counter()
    model, params = fullsize.diffusion_model(name, device, dtype)
    needs = set(methods)
    w = World(name, spec, model, params, size, steps, a.cfg, a.gpu,
              vae=fullsize.vae(spec.latent_channels) if needs & {"vae", "doodl", "caso"} else None,
              clip=fullsize.clip(name) if "caso" in needs and spec.unet else None,
              clip_vision=fullsize.clip_vision() if "stylediffusion" in needs and spec.unet else None)
    built = time.perf_counter() - t
    rows: list[Row] = []
    lo, hi = (10, 50) if a.gpu else (2, 10)
    for m in methods:
        t = time.perf_counter()
        rows += {"sampling": lambda: sampling_rows(w, a.rounds),
                 "vae": lambda: vae_rows(w, a.rounds),
                 "doodl": lambda: doodl_rows(w, lo, hi, a.doodl_size or (size if a.gpu else 64), 16, a.once),
                 "stylediffusion": lambda: stylediffusion_rows(w, a.rounds, a.once),
                 "caso": lambda: caso_rows(w, 4, a.caso_batch or (2 if a.gpu else 1), a.once),
                 "csds": lambda: csds_rows(w, a.rounds)}[m]()
        print(f"[realscale] {name} {m}: {time.perf_counter() - t:.0f} s", flush=True)
    where = (f"CUDA ({torch.cuda.get_device_name()})" if a.gpu else f"CPU, {torch.get_num_threads()} threads") + (
        f", {dtype_name} weights")
    title = (f"{spec.title}, random weights ({params / 1e6:.0f} M parameters, built in {built:.0f} s), "
             f"{size}x{size} px, cfg {a.cfg}, {w.steps} steps, {where}")
    text = table(title, rows, a.gpu)
    print(text, flush=True)
    return {"title": title, "params": params, "size": size, "steps": w.steps, "cfg": a.cfg, "table": text,
            "rows": [{"what": r.what, "seconds": r.seconds, "per": r.unit, "ratio": r.ratio, "to": r.base,
                      "target": r.target, "memory": r.memory} for r in rows]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="run on CUDA (fp16) and report its peak memory")
    ap.add_argument("--models", default="sd15,sdxl,sd3", help=f"any of {','.join(fullsize.MODELS)}")
    ap.add_argument("--methods", default=None, help=f"any of {','.join(METHODS)} (default: the mode's PLANS)")
    ap.add_argument("--size", type=int, default=None, help="image side in px (default: the mode's PLANS)")
    ap.add_argument("--doodl-size", type=int, default=None, help="DOODL's image side (CPU 64; GPU --size)")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: the mode's PLANS)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds (the median is kept)")
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help=(
        "the diffusion model's weights (default fp16 on a GPU, fp32 on the CPU)"))
    ap.add_argument("--caso-batch", type=int, default=None, help="CASO's batch (CPU 1, GPU 2: the official 2)")
    ap.add_argument("--once", action="store_true", help=(
        "the gradient methods once each, for their memory at a size too slow to time here (e.g. --size 512 on the "
        "CPU): DOODL one iteration at T = lo, StyleDiffusion K = 1, CASO one step"))
    ap.add_argument("--out", type=Path, default=None, help="write realscale.md and realscale.json here")
    a = ap.parse_args(argv)
    models, methods = a.models.split(","), (a.methods or ",".join(METHODS)).split(",")
    for m in models:
        if m not in fullsize.MODELS:
            ap.error(f"--models: {m!r} is not one of {list(fullsize.MODELS)}")
    for m in methods:
        if m not in METHODS:
            ap.error(f"--methods: {m!r} is not one of {list(METHODS)}")
    if not a.gpu:
        unpooled_heap()
    else:
        os.environ["INVEDIT_DEVICE"] = "cuda"  # harness.host boots ComfyUI on its default device, not --cpu
    host.boot()
    import torch
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    if a.gpu and not torch.cuda.is_available():
        ap.error("--gpu: CUDA is not available here")
    t = time.perf_counter()
    where = f"CUDA ({torch.cuda.get_device_name()})" if a.gpu else f"CPU, {torch.get_num_threads()} threads"
    result = {"device": where,
              "models": {}}
    for m in models:
        result["models"][m] = run_model(m, a)
        free()
    result["seconds"] = time.perf_counter() - t
    anchors = "\n".join(f"- {k}: {v}" for k, v in ANCHORS.items())
    print(f"\nThe papers' figures:\n{anchors}\n[realscale] {result['seconds']:.0f} s in all", flush=True)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "realscale.json").write_text(json.dumps(result, indent=2) + "\n")
        (a.out / "realscale.md").write_text("\n".join(v["table"] for v in result["models"].values())
                                            + f"\n\nThe papers' figures:\n{anchors}\n")
    return result


if __name__ == "__main__":
    main()
