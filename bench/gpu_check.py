"""The GPU check (``make gpu-check``): every gradient node of the pack on the newest test host (ComfyUI 0.33.0),
each right after a stock KSampler on the same model, through a real ComfyUI server on the machine's GPU, once with
ComfyUI's default flags (dynamic VRAM on NVIDIA with torch >= 2.8) and once with ``--disable-dynamic-vram``; then
``python -m bench.realscale --gpu``. One report: ``<out>/gpu-check.md`` (and ``gpu-check.json``).

Why: since ComfyUI 0.12 / 0.16 a weight that is not resident is cast into a shared per-stream buffer, and dynamic
VRAM hands every Linear/Conv a weight tensor built by the VRAM manager, possibly during an earlier inference-mode
run of the same model (the KSampler before the node). Only a CUDA machine exercises that path; the CPU hosts never
build a dynamic patcher (docs/architecture.md, "Gradients through ComfyUI's models").

What each check does, in one server per flag set, models loaded once (ComfyUI's cache keeps the loader's MODEL):
  K_0      a stock KSampler (20 steps, euler, cfg 5) on the checkpoint, 64², decoded and saved;
  G_i      the gradient node's graph (the shipped example, or a small graph for nodes no example uses);
  K_i      the same KSampler again, its latent through i RepeatLatentBatch(amount 1) nodes (the same values; a new
           cache key, so it runs again): its pixels must equal K_0's (nothing of G_i leaked into the shared model).
K_1 runs before G_1 as the control (K_0 = K_1 with nothing between). The gradient nodes: DOODL Optimize (classifier,
CLIP and edit), the One-Step Guidance Sampler, StyleDiffusion Invert, Null-text Invert, CASO Train, h-space Train
Direction, EMS Edit Sampler with CSDS in autograd mode, and DOODL Optimize on the SD3 (flow) checkpoint. The CLIP
vision linear probe needs a stock CLIP vision file (none is built here); it runs in the CPU host tests only.

Usage (on a machine whose python3 has a CUDA torch and ComfyUI 0.33's packages; wheels can be carried, see
docs/testing.md):
    python3 -m bench.gpu_check [--out DIR] [--only NAME,...] [--no-realscale] [--cpu]
``--cpu`` runs the same sequence on the CPU host (a smoke test of this script; no dynamic VRAM there).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("COMFY_HOST", "0.33")

from harness import examples  # noqa: E402
from harness.paths import BASE, COMFY, COMFY_VERSION  # noqa: E402
from harness.server import ComfyServer, PromptFailed  # noqa: E402

FLAG_SETS = {"default flags": (), "--disable-dynamic-vram": ("--disable-dynamic-vram",)}
KSTEPS = 20


def _stock_ksampler(g, ckpt: str, repeats: int, tag: str):
    ck = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text="a red circle")
    neg = g.node("CLIPTextEncode", clip=ck.out(1), text="")
    lat = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    for _ in range(repeats):
        lat = g.node("RepeatLatentBatch", samples=lat.out(0), amount=1)
    ks = g.node("KSampler", model=ck.out(0), seed=7, steps=KSTEPS, cfg=5.0, sampler_name="euler", scheduler="normal",
                positive=pos.out(0), negative=neg.out(0), latent_image=lat.out(0), denoise=1.0)
    dec = g.node("VAEDecode", samples=ks.out(0), vae=ck.out(2))
    g.node("SaveImage", images=dec.out(0), filename_prefix=f"gpucheck/{tag}")


def _one_step_guidance(g):
    """The One-Step Guidance Sampler (no example uses it) in a stock SamplerCustom."""
    ck = g.node("CheckpointLoaderSimple", ckpt_name=examples.CKPT)
    pos = g.node("CLIPTextEncode", clip=ck.out(1), text="a circle")
    neg = g.node("CLIPTextEncode", clip=ck.out(1), text="")
    sig = g.node("BasicScheduler", model=ck.out(0), scheduler="ddim_uniform", steps=10, denoise=1.0)
    smp = g.node("InvEditDOODLGuidanceSampler", vae=ck.out(2), loss=examples._classifier_loss(g).out(0), scale=30.0,
                 seed=0)
    out = g.node("SamplerCustom", model=ck.out(0), add_noise=True, noise_seed=2, cfg=3.0, positive=pos.out(0),
                 negative=neg.out(0), sampler=smp.out(0), sigmas=sig.out(0),
                 latent_image=g.node("EmptyLatentImage", width=64, height=64, batch_size=1).out(0))
    g.node("SaveImage", images=g.node("VAEDecode", samples=out.out(0), vae=ck.out(2)).out(0),
           filename_prefix="gpucheck/one_step_guidance")


# name -> (what it runs, checkpoint of its KSampler, graph builder, edits of the API prompt)
CHECKS = {
    "doodl_classifier": ("DOODL Optimize, classifier loss", examples.CKPT, examples.doodl_classifier, {}),
    "doodl_clip": ("DOODL Optimize, CLIP loss", examples.CKPT, examples.doodl_clip, {}),
    "doodl_edit": ("DOODL Optimize on an inverted image", examples.CKPT, examples.doodl_edit, {}),
    "one_step_guidance": ("One-Step Guidance Sampler", examples.CKPT, _one_step_guidance, {}),
    "stylediffusion": ("StyleDiffusion Invert", examples.CKPT, examples.stylediffusion_edit, {}),
    "nulltext": ("Null-text Invert", examples.CKPT, examples.nulltext_edit, {}),
    "caso_train": ("CASO Train", examples.CKPT, examples.caso_edit, {}),
    "hspace_train": ("h-space Train Direction", examples.CKPT, examples.hspace_train, {}),
    "csds_autograd": ("EMS Edit Sampler, CSDS autograd", examples.CKPT, examples.ems_two_attributes,
                      {"InvEditEMSEditSampler": {"grad_mode": "autograd", "iterations": 3}}),
    "sd3_doodl": ("DOODL Optimize on SD3 (flow)", examples.SD3_CKPT, examples.sd3_doodl_classifier, {}),
}


def api(builder, edits: dict) -> dict:
    prompt = examples.build(builder)
    for node in prompt.values():
        node["inputs"].update(edits.get(node["class_type"], {}))
    return prompt


def ksampler_prompt(ckpt: str, repeats: int, tag: str) -> dict:
    return api(lambda g: _stock_ksampler(g, ckpt, repeats, tag), {})


def saved_pixels(srv: ComfyServer, entry: dict):
    import numpy as np
    from PIL import Image
    img = next(i for o in entry["outputs"].values() for i in o.get("images", []) if i["type"] == "output")
    return np.asarray(Image.open(io.BytesIO(srv.view(img))).convert("RGB")).astype(np.int16)


def run_flag_set(label: str, flags: tuple, names: list[str], cpu: bool, out: Path) -> dict:
    res = {"flags": label, "checks": {}}
    with ComfyServer(output_dir=out / "images", log_path=out / f"comfyui{'-'.join(flags) or '-default'}.log",
                     extra_args=flags, cpu=cpu, python=Path(sys.executable)) as srv:
        stats = srv.get("/system_stats")
        res["system"] = stats.get("system", {})
        res["devices"] = [{k: d.get(k) for k in ("name", "type", "vram_total")} for d in stats.get("devices", [])]
        ref, repeats = {}, 0

        def ksampler(ckpt):
            nonlocal repeats
            entry = srv.wait(srv.queue(ksampler_prompt(ckpt, repeats, f"k{repeats}")), timeout=900)
            repeats += 1
            return saved_pixels(srv, entry)

        for ckpt in sorted({CHECKS[n][1] for n in names}):
            ref[ckpt] = ksampler(ckpt)
            control = ksampler(ckpt)
            res.setdefault("control", {})[ckpt] = int(abs(control - ref[ckpt]).max())
        for name in names:
            what, ckpt, builder, edits = CHECKS[name]
            row = {"what": what}
            t = time.time()
            try:
                srv.wait(srv.queue(api(builder, edits)), timeout=1800)
                row["status"] = "ok"
            except PromptFailed as e:
                m = e.messages[0] if e.messages else {}
                row["status"] = f"FAILED in {m.get('node_type', '?')}: {m.get('exception_message', e)}".strip()
                row["traceback"] = "".join(m.get("traceback", []))[-3000:]
            except Exception as e:  # a dead server, a timeout: report and go on with the next flag set
                row["status"] = f"FAILED: {type(e).__name__}: {e}"[:2000]
            row["seconds"] = round(time.time() - t, 1)
            try:
                after = ksampler(ckpt)
                row["ksampler_after_max_abs_diff"] = int(abs(after - ref[ckpt]).max())
            except Exception as e:
                row["ksampler_after_max_abs_diff"] = f"KSampler after failed: {e}"[:500]
            res["checks"][name] = row
            print(f"[gpu-check] {label}: {name}: {row['status'][:200]} ({row['seconds']} s; KSampler after: "
                  f"{row['ksampler_after_max_abs_diff']})", flush=True)
        log = srv.log_path.read_text(errors="replace") if srv.log_path.exists() else ""
        res["dynamic_vram"] = "DynamicVRAM support detected and enabled" in log
    return res


def report(results: list[dict], realscale: str | None, out: Path) -> str:
    lines = [f"# GPU check, {datetime.now():%Y-%m-%d %H:%M}", "",
             f"ComfyUI {COMFY_VERSION} ({COMFY}), python {sys.version.split()[0]}, "
             f"torch {__import__('torch').__version__}.", ""]
    for r in results:
        dev = ", ".join(f"{d['name']} ({(d.get('vram_total') or 0) / 2 ** 30:.0f} GiB)" for d in r.get("devices", []))
        lines += [f"## {r['flags']}", "", f"- device: {dev or '?'}; dynamic VRAM enabled: {r.get('dynamic_vram')}",
                  f"- control (KSampler twice, nothing between), max |Δpixel|: {r.get('control')}", "",
                  "| check | node | status | s | KSampler after, max abs Δ (0 = no leak) |", "|---|---|---|---|---|"]
        for name, row in r["checks"].items():
            status = row["status"].replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {name} | {row['what']} | {status} | {row['seconds']} | "
                         f"{row['ksampler_after_max_abs_diff']} |")
        lines.append("")
        for name, row in r["checks"].items():
            if row.get("traceback"):
                lines += [f"### {r['flags']}: {name}", "```", row["traceback"], "```", ""]
    if realscale is not None:
        lines += ["## bench.realscale --gpu", "", realscale, ""]
    text = "\n".join(lines)
    (out / "gpu-check.md").write_text(text)
    (out / "gpu-check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="report folder (default out/gpu-check-<time>)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(CHECKS)}")
    ap.add_argument("--no-realscale", action="store_true", help="skip python -m bench.realscale --gpu")
    ap.add_argument("--cpu", action="store_true", help="run the sequence on the CPU (a smoke test of this script)")
    ap.add_argument("--flags", default=",".join(FLAG_SETS), help="which flag sets, comma-separated")
    a = ap.parse_args(argv)
    names = a.only.split(",") if a.only else list(CHECKS)
    for n in names:
        if n not in CHECKS:
            ap.error(f"--only: {n!r} is not one of {list(CHECKS)}")
    import torch
    if not a.cpu and not torch.cuda.is_available():
        ap.error("no CUDA device here: run it on a CUDA machine, or pass --cpu for a smoke test of the script")
    out = a.out or ROOT / "out" / f"gpu-check-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    # ComfyUI 0.33.0 (COMFY_HOST, default 0.33) and its base directory for this interpreter (no venv: the machine's own
    # CUDA torch)
    subprocess.run([sys.executable, str(ROOT / "harness" / "setup_host.py"), "--no-venv", "--quiet"], check=True,
                   env=dict(os.environ))  # COMFY_HOST: 0.33 unless set
    assert (BASE / "custom_nodes").exists(), BASE
    results = []
    for label in a.flags.split(","):
        results.append(run_flag_set(label, FLAG_SETS[label], names, a.cpu, out))
        report(results, None, out)  # what is there so far, in case a later step dies
    realscale = None
    if not a.no_realscale and not a.cpu:
        proc = subprocess.run([sys.executable, "-m", "bench.realscale", "--gpu", "--out", str(out / "realscale")],
                              cwd=ROOT, env=dict(os.environ), capture_output=True, text=True)
        md = out / "realscale" / "realscale.md"
        realscale = md.read_text() if md.exists() else f"FAILED (exit {proc.returncode}):\n```\n" \
                                                        f"{(proc.stdout + proc.stderr)[-4000:]}\n```"
    print(report(results, realscale, out))
    print(f"\n[gpu-check] report: {out / 'gpu-check.md'}")
    failed = [n for r in results for n, row in r["checks"].items()
              if row["status"] != "ok" or row["ksampler_after_max_abs_diff"] != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
