"""The PIE-Bench-style scorecard on the scenes world (issue 27): every method of the pack on the same held-out edit
cases (harness/scenes/suite.py: seven edit types), the same judges and PIE-Bench's metrics computed as PIE-Bench
computes them (harness/scenes/pie.py), on both model kinds: the U-Net world (SD1.5-detectable, ε) and the SD3 world
(MMDiT, rectified flow). One table per edit type and one summary.

Columns
  success      the edit's own attribute is what the target prompt says (the scene judge: the edited object's colour,
               shape or size with the right object count; the count for add / remove, plus the added object's
               attributes; the texture; the style);
  all right    every attribute of the target scene (objects left to right, texture, style), i.e. success and
               nothing else changed;
  structure    PIE-Bench's structure distance ×10³ (toy-CLIP ViT keys' self-similarity; lower is better);
  bg PSNR, bg MSE ×10⁴, bg SSIM ×10², bg feat ×10³   outside the edit mask (PIE-Bench's "unedited part"; "feat" is
               the named stand-in for LPIPS, see harness/scenes/pie.py); "—" for style (the mask is the whole image);
  CLIP whole / edited   the toy CLIP's CLIPScore of the edited image (whole; edit region only) with the target prompt;
  evals, bwd   model evaluations and backward passes per image (the pack's counter: cond and uncond batched count
               once); s/img on this machine.
Claims: each paper whose claimed advantage the suite can test (CLAIMS: h-space, StyleDiffusion, DOODL, CASO, CSDS)
gets a row per world: its method against the baseline the paper compares with, on the edit types it concerns,
"reproduces here" when better on the claimed metric without losing more than a tolerance on the kept ones.
Settings: each method's come from ``--tune`` on the tune split (harness/scenes/suite.py TUNE_SEED; chosen by success,
then background PSNR), written to docs/bench/pie_settings.json and read back by the test-split run; without that
file the defaults below.

Results are cached per (world, method, settings, case, weights) in docs/bench/pie-cache/<world>.jsonl (a JSON line
each, committed: the tables are rebuilt from it, a run longer than a session goes on where the last one stopped,
and a run with new methods only computes those); the key holds a digest of the files that make the result (the
world's assembled checkpoint, the judge, the toy CLIP), so retrained weights are measured anew. The edited images go
to out/pie-images/<key>.png (not committed).

    python -m bench.pie [--per-type 3] [--worlds unet dit] [--methods NAME ...] [--tune]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import scorecard as S  # noqa: E402
from harness.paths import BASE, ROOT  # noqa: E402
from harness.scenes import data as sd  # noqa: E402
from harness.scenes import judges as J  # noqa: E402
from harness.scenes import pie as P  # noqa: E402
from harness.scenes import suite  # noqa: E402
from harness.tiny_models import (SCENES_FILES, SCENES_SD3_FILES, SCENES_TOY_CLIP_DIR,  # noqa: E402
                                 SCENES_WEIGHTS)

SETTINGS_FILE = ROOT / "docs" / "bench" / "pie_settings.json"
CACHE = ROOT / "docs" / "bench" / "pie-cache"
IMAGES = ROOT / "out" / "pie-images"
TOY_CLIP = "scenes-toy-clip"


class ScenesWorld(S.World):
    """A scenes-world checkpoint (``kind`` "unet" or "dit") through the stock loaders, with the scenes judges."""

    def __init__(self, kind: str = "unet"):
        self.kind = kind
        self.load((SCENES_FILES if kind == "unet" else SCENES_SD3_FILES)["checkpoints"])
        from harness.shapes.models import load_toy_clip
        self.judge = J.load_judge(SCENES_WEIGHTS / "scenes_judge.safetensors")
        clip, tok = load_toy_clip(BASE / "models" / SCENES_TOY_CLIP_DIR)
        self.meter = P.Meter(self.judge, clip, tok)

    def loss(self, target: str, classifier: str = "scenes_texture.safetensors"):
        with self.torch.inference_mode():
            return self.C("InvEditDOODLClassifierLoss").execute(
                classifier=classifier, architecture="small_cnn", target=target, num_classes=0, normalisation="none",
                mode="cross_entropy", weight=1.0, crops=4, crop_power=0.3, input_size=sd.SIZE).args[0]

    def clip_loss(self, text: str):
        with self.torch.inference_mode():
            return self.C("InvEditDOODLCLIPLoss").execute(clip_name=TOY_CLIP, text=text, weight=1.0,
                                                          reduction="mean", crops=4, crop_power=0.3).args[0]


# ---- what each edit asks for ----------------------------------------------------------------------------------

def new_words(case: suite.Case) -> tuple[str, str]:
    """(source words, target words) that differ between the prompts: P2P's LocalBlend words and EMS's attribute
    prompt ("" where a side has none: the removed object has no target words, the added one no source words)."""
    if case.kind == "style":
        return "", sd.STYLE_WORDS[sd.STYLES[int(case.target.style[0])]].strip(", ")
    if case.kind == "add":
        return "", sd.object_phrase(case.target, 0, case.obj)[2:]
    if case.kind == "remove":
        return sd.object_phrase(case.source, 0, case.obj)[2:], ""
    a, b = case.source_prompt.split(), case.target_prompt.split()
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    return " ".join(x for x, _ in diff), " ".join(y for _, y in diff)


def p2p_mode(case: suite.Case) -> str:
    return "replace" if len(case.source_prompt.split()) == len(case.target_prompt.split()) else "refine"


def success(case: suite.Case, seen: J.Verdict) -> float:
    want = J.expected(case.target, 0)
    if case.kind == "texture":
        return float(seen.texture == want.texture)
    if case.kind == "style":
        return float(seen.style == want.style)
    if len(seen.objects) != len(want.objects):
        return 0.0
    if case.kind == "remove":
        return 1.0
    got, exp = seen.objects[case.obj], want.objects[case.obj]
    attrs = {"colour": ("colour",), "shape": ("shape",), "size": ("size",), "add": ("colour", "shape", "size")}
    return float(all(got[a] == exp[a] for a in attrs[case.kind]))


# ---- the methods -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def overrides(**dicts):
    """Temporarily update bench.scorecard's settings dicts (EDIT, P2P, DOODL, …) with a method's settings."""
    saved = {k: dict(getattr(S, k)) for k in dicts}
    try:
        for k, v in dicts.items():
            getattr(S, k).update(v)
        yield
    finally:
        for k, v in saved.items():
            getattr(S, k).clear()
            getattr(S, k).update(v)


def _p2p(w, m, case, **kw):
    src_w, tgt_w = new_words(case)
    local = case.kind in ("colour", "shape", "size", "add", "remove")
    with w.torch.inference_mode():
        out = w.C("InvEditP2PEdit").execute(
            model=m, clip=w.te, negative=w.enc(""), source_prompt=case.source_prompt, target_prompt=case.target_prompt,
            edit=p2p_mode(case), guidance=S.P2P["guidance"], tau_v=S.P2P["tau_v"], tau_c=S.P2P["tau_c"],
            tau_s=S.P2P["tau_s"], blend_source=src_w.split()[-1] if local and src_w else "",
            blend_target=tgt_w.split()[-1] if local and tgt_w else "", blend_threshold=0.3, blend_start=0.2,
            reweight_words="", reweight_factor=1.0, **kw).args
    return out[0]["samples"], out[1]["samples"]


def ddim_p2p(w, m, src, case):
    sig = w.C("InvEditValueSigmas").execute(m, S.P2P["steps"], 1.0).args[0][:-1]
    noise = S._ddim_invert(w, m, src, case.source_prompt, sig, 1.0)
    return _p2p(w, m, case, latent=noise, sigmas=sig, tau_u=0.0)


def nulltext_p2p(w, m, src, case):
    with w.torch.inference_mode():
        emb = w.C("InvEditNullTextInvert").execute(
            model=m, positive=w.enc(case.source_prompt), negative=w.enc(""), latent=src,
            inner_steps=S.P2P["nt_inner"], inner_decay=0.0, seed=0, **S._inversion_args(S.P2P)).args[0]
    return _p2p(w, m, case, value_embed=emb, tau_u=0.0)


def stylediffusion_p2plus(w, m, src, case):
    img = w.decode(src["samples"]).permute(0, 2, 3, 1)
    with w.torch.inference_mode():
        emb = w.C("InvEditStyleDiffusionInvert").execute(
            model=m, positive=w.enc(case.source_prompt), negative=w.enc(""), latent=src, image=img, clip_name=TOY_CLIP,
            inner_steps=S.P2P["sd_inner"], inner_decay=0.1, attn_weight=1.0, init="identity", warm_start=True,
            seed=0, **S._inversion_args(S.P2P)).args[0]
    return _p2p(w, m, case, value_embed=emb, tau_u=S.P2P["tau_u"])


def prompt_method(fn):
    """A bench.scorecard method f(w, m, src, source, target, shape) on a case."""
    def run(w, m, src, case):
        return fn(w, m, src, case.source_prompt, case.target_prompt, None)
    return run


def ems(iterations: int):
    def run(w, m, src, case):
        return S._ems(w, m, src, case.source_prompt, case.target_prompt, new_words(case)[1] if iterations else "",
                      S.EMS["alpha"], iterations)
    return run


def doodl_clip(w, m, src, case):
    return S.doodl_edit(lambda _: w.clip_loss(case.target_prompt))(w, m, src, case.source_prompt, "", None)


CLASS_KINDS = ("texture", "style")   # the edits a classifier of the scenes world names (texture, style)
CASO_PREFIX = "pie_caso"


def target_class(case: suite.Case) -> str:
    return (sd.TEXTURES[int(case.target.texture[0])] if case.kind == "texture"
            else sd.STYLES[int(case.target.style[0])])


def classifier_for(case: suite.Case) -> str:
    return f"scenes_{case.kind}.safetensors"


def guidance(w, m, src, case):
    """One-step classifier guidance (DOODL's baseline) from a DDIM inversion, towards the target class."""
    sig = S._ddim_sigmas(w, S.GUIDANCE["steps"])
    noise = S._ddim_invert(w, m, src, case.source_prompt, sig, S.DOODL["cfg"])
    sampler = w.C("InvEditDOODLGuidanceSampler").execute(
        w.vae, w.loss(target_class(case), classifier_for(case)), S.GUIDANCE["scale"], 0)[0]
    return S._sample(w, m, sampler, sig, case.source_prompt, noise, S.DOODL["cfg"])


def doodl_classifier(w, m, src, case):
    loss = w.loss(target_class(case), classifier_for(case))
    return S.doodl_edit(lambda _: loss)(w, m, src, case.source_prompt, "", None)


def hspace_prompts(w, m, src, case):
    """Asyrp: the h-space direction of the prompt pair (h-space From Prompts on 4 samples, counted), applied over
    the whole window by the Asyrp sampler from a DDIM inversion (cfg 1)."""
    with w.torch.inference_mode():
        d = w.C("InvEditHSpaceFromPrompts").execute(
            m, w.enc(case.source_prompt), w.enc(case.target_prompt),
            {"samples": w.torch.zeros(4, w.channels, sd.SIZE // 8, sd.SIZE // 8)}, 12, 0, "per_timestep").args[0]
    return S.hspace_edit(d, S.HSPACE["strength"], 0)(w, m, src, case.source_prompt, "", None)


def hspace_direction(w, style: str):
    """Asyrp's trained direction towards a style (h-space Train Direction with the toy CLIP's directional loss,
    "an image" → "an image, <style words>"), trained once per world and style on 4 tune-split renders of the normal
    style (not counted in the rows' evaluations; the time is kept in w.hspace_seconds)."""
    cache = w.__dict__.setdefault("hspace_dirs", {})
    if style not in cache:
        t = time.perf_counter()
        images = sd.render(sd.make_scenes(4, suite.TUNE_SEED + 11, style=0))
        with w.torch.inference_mode():
            cache[style] = w.C("InvEditHSpaceTrainDirection").execute(
                model=w.model, vae=w.vae, clip_name=TOY_CLIP, neutral=w.enc(""), latent=w.encode(images),
                source_text="an image", target_text="an image" + sd.STYLE_WORDS[style], init="inverted", steps=10,
                t_edit=S.HSPACE["t_edit"], lambda_clip=0.8, recon_mult=3.0, lr=0.003, epochs=2, batch_size=1,
                seed=0, loss="paper", prompt_templates=False).args[0]
        w.__dict__.setdefault("hspace_seconds", {})[style] = time.perf_counter() - t
    return cache[style]


def hspace_trained(w, m, src, case):
    d = hspace_direction(w, target_class(case))
    return S.hspace_edit(d, S.HSPACE["trained_strength"], S.HSPACE["t_edit"])(w, m, src, case.source_prompt, "", None)


def sdedit_clip_best_of(n: int):
    """SDEdit (denoise EDIT["strength"]) to the target prompt, best of n samples by the toy CLIP's loss to the target
    prompt."""
    def run(w, m, src, case):
        import comfy.sample
        sig = S._ddim_sigmas(w, S.EDIT["steps"], S.EDIT["strength"])
        many = {"samples": src["samples"].repeat(n, 1, 1, 1)}
        noise = comfy.sample.prepare_noise(many["samples"], 7)
        out = S._sample(w, m, "euler", sig, case.target_prompt, many, S.EDIT["cfg"], noise=noise, seed=7)
        imgs = w.decode(out)
        loss = w.clip_loss(case.target_prompt)
        best = int(w.torch.stack([loss(i[None], w.torch.Generator().manual_seed(0)) for i in imgs]).argmin())
        return out[best:best + 1]
    return run


def caso_classes(w, attr: str) -> None:
    """CASO's classes of ``attr`` (texture or style) trained once per world from the scenes world's classifier on
    S.CASO["train_images"] unlabeled renders, saved as embedding files ``pie_caso_<attr>_<class>`` for the stock
    CLIPTextEncode (not counted in the rows' evaluations; the time is kept in w.caso_seconds)."""
    if attr in getattr(w, "caso_done", set()):
        return
    t = time.perf_counter()
    scenes = sd.make_scenes(S.CASO["train_images"], suite.TUNE_SEED + 7)
    images = sd.render(scenes)
    lat = w.encode(images)
    with w.torch.inference_mode():
        clf = w.C("InvEditClassifierLoad").execute(f"scenes_{attr}.safetensors", "small_cnn", 0, "none").args[0]
        emb = w.C("InvEditCASOTrain").execute(
            model=w.model, clip=w.te, vae=w.vae, classifier=clf, latent=lat, attribute=attr, steps=S.CASO["steps"],
            batch_size=S.CASO["batch"], scale=S.CASO["train_scale"], level=0.4, lr=0.02, weight_decay=0.005,
            gamma=0.0, n_tokens=1, init="repo_uniform", hflip=True, seed=0, images=images.permute(0, 2, 3, 1)).args[0]
        remove_caso_files(attr)
        w.C("InvEditCASOSave").execute(emb, f"{CASO_PREFIX}_{attr}")
    w.caso_done = getattr(w, "caso_done", set()) | {attr}
    w.caso_seconds = getattr(w, "caso_seconds", {}) | {attr: time.perf_counter() - t}


def remove_caso_files(attr: str = "") -> None:
    import folder_paths
    for root in folder_paths.get_folder_paths("embeddings"):
        for f in Path(root).glob(f"{CASO_PREFIX}_{attr}*.safetensors"):
            f.unlink()


def caso_prompt(case: suite.Case) -> str:
    """The target prompt with the class token in place of the class word (CASO's use in a ComfyUI prompt)."""
    name = f"embedding:{CASO_PREFIX}_{case.kind}_{target_class(case)}"
    if case.kind == "texture":
        return case.target_prompt.replace(f" {target_class(case)} background", f" {name} background")
    return f"{case.source_prompt}, {name}"


def caso_edit(w, m, src, case):
    caso_classes(w, case.kind)
    with w.torch.inference_mode():
        return w.C("InvEditCASOEdit").execute(m, w.enc(caso_prompt(case)), w.enc(""), src, S.CASO["edit_steps"],
                                              S.CASO["scale"], S.CASO["window"], 0.0, "ddim", 0).args[0]["samples"]


@dataclass
class Method:
    name: str
    run: object                    # f(world, model, source latent, case) -> latent or (edit, reconstruction)
    settings: dict                 # {scorecard dict name: {key: value}} applied while it runs
    grid: dict = field(default_factory=dict)   # {"DICT.key": [values]} searched by --tune
    kinds: tuple = suite.EDIT_TYPES
    flow: bool = True              # runs on the SD3 world too


STEPS = 20   # every method's sampling steps in this suite (50 in the shapes scorecard: the U-Net here costs ~4×)

METHODS = [
    Method("DDIM prompt swap", prompt_method(S.ddim_swap), {"EDIT": {"steps": STEPS, "strength": 0.8, "cfg": 3.0}},
           {"EDIT.strength": [0.6, 0.8, 1.0], "EDIT.cfg": [3.0, 5.0]}),
    Method("EDICT prompt swap", prompt_method(S.edict_swap), {"EDIT": {"steps": STEPS, "strength": 0.8, "cfg": 3.0}},
           {"EDIT.strength": [0.6, 0.8, 1.0], "EDIT.cfg": [3.0, 5.0]}),
    Method("DDIM + P2P", ddim_p2p, {"P2P": {"steps": STEPS, "guidance": 5.0, "tau_c": 0.6, "tau_s": 0.6}},
           {"P2P.tau_c": [0.4, 0.8], "P2P.guidance": [3.0, 5.0]}, flow=False),
    Method("null-text + P2P", nulltext_p2p, {"P2P": {"steps": STEPS, "guidance": 5.0, "nt_inner": 10}},
           {"P2P.tau_c": [0.4, 0.8]}, flow=False),
    Method("StyleDiffusion + P2Plus", stylediffusion_p2plus,
           {"P2P": {"steps": STEPS, "guidance": 5.0, "sd_inner": 20, "tau_u": 0.5}},
           {"P2P.tau_c": [0.4, 0.8], "P2P.tau_u": [0.3, 0.6]}, flow=False),
    Method("EMS text only", ems(0), {"EMS": {"steps": STEPS, "strength": 0.75, "cfg": 5.0}},
           {"EMS.alpha": [1.0, 1.5], "EMS.strength": [0.6, 0.75]}),
    Method("EMS + CSDS", ems(50), {"EMS": {"steps": STEPS, "strength": 0.75, "cfg": 5.0}},
           {"EMS.lam": [0.25, 0.5]}),
    Method("DOODL CLIP (EDICT pair)", doodl_clip, {"DOODL": {"steps": 10, "iterations": 6, "cfg": 3.0}},
           {"DOODL.lr": [100.0, 1000.0], "DOODL.edit_clip": [0.01]}),
    Method("SDEdit to the target, best of 4 by CLIP", sdedit_clip_best_of(4),
           {"EDIT": {"steps": STEPS, "strength": 0.6, "cfg": 3.0}}, {"EDIT.strength": [0.4, 0.8]}),
    Method("h-space, prompt direction", hspace_prompts, {"HSPACE": {"steps": STEPS, "strength": 5.0}},
           {"HSPACE.strength": [2.5, 10.0]}, flow=False),
    Method("h-space, trained direction (style)", hspace_trained,
           {"HSPACE": {"steps": STEPS, "trained_strength": 2.0, "t_edit": 500}},
           {"HSPACE.trained_strength": [1.0, 4.0]}, kinds=("style",), flow=False),
    Method("one-step guidance (DDIM-inverted)", guidance, {"GUIDANCE": {"steps": 10, "scale": 200.0}},
           {"GUIDANCE.scale": [50.0, 1000.0]}, kinds=CLASS_KINDS, flow=False),
    Method("DOODL classifier (EDICT pair)", doodl_classifier, {"DOODL": {"steps": 10, "iterations": 6, "cfg": 3.0}},
           {"DOODL.lr": [100.0, 1000.0]}, kinds=CLASS_KINDS),
    Method("CASO class in a prompt", caso_edit, {"CASO": {"edit_steps": STEPS, "scale": 3.0, "window": 0.4}},
           {"CASO.scale": [1.0, 6.0], "CASO.window": [0.6]}, kinds=CLASS_KINDS, flow=False),
]


def method_by_name(name: str) -> Method:
    for m in METHODS:
        if m.name == name:
            return m
    raise KeyError(f"no method {name!r}; one of: {', '.join(m.name for m in METHODS)}")


# ---- running and caching -------------------------------------------------------------------------------------------

_DIGESTS: dict = {}


def weights_digest(world: str) -> str:
    """md5 (10 hex) of the files a result of ``world`` depends on: the checkpoint set-up assembled (generator, text
    encoder, VAE), the scene judge and the toy CLIP."""
    if world not in _DIGESTS:
        h = hashlib.md5()
        ckpt = (SCENES_FILES if world == "unet" else SCENES_SD3_FILES)["checkpoints"]
        for path in (BASE / "models" / "checkpoints" / ckpt, SCENES_WEIGHTS / "scenes_judge.safetensors",
                     SCENES_WEIGHTS / "toy_clip" / "model.safetensors"):
            h.update(path.read_bytes())
        _DIGESTS[world] = h.hexdigest()[:10]
    return _DIGESTS[world]


def _key(world: str, method: Method, settings: dict, case_id: str) -> str:
    blob = json.dumps([world, method.name, settings, case_id, weights_digest(world)], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _cache_read() -> dict:
    out = {}
    if CACHE.exists():
        for f in CACHE.glob("*.jsonl"):
            for line in f.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    out[r["key"]] = r
    return out


def _save_png(img, path: Path) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()).save(path)


def _cache_write(world: str, record: dict) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{world}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def case_id(split: str, i: int, case: suite.Case) -> str:
    return f"{split}:{case.kind}:{i}:{case.target_prompt}"


def run_case(w, method: Method, settings: dict, case: suite.Case) -> dict:
    """One method on one case: the edited image's metrics, the judge's verdicts, the counts."""
    img = case.source_image[None]
    src = w.encode(img)
    with overrides(**settings):
        out, evals, bwd, sec = w.timed(lambda m: method.run(w, m, src, case))
    if isinstance(out, tuple):
        out = out[0]
    edited = w.decode(out)
    seen = J.read(w.judge, edited)[0]
    r = {k: v[0] for k, v in w.meter.measure(img, edited, case.mask[None], [case.target_prompt]).items()}
    r.update(success=success(case, seen), all_right=J.compare(seen, J.expected(case.target, 0))["all"],
             evals=evals, bwd=bwd, seconds=sec)
    r["_image"] = edited[0]
    return r


def evaluate(world: str, w, method: Method, settings: dict, cases: list, split: str, cache: dict) -> list[dict]:
    out = []
    for i, case in enumerate(cases):
        if case.kind not in method.kinds:
            continue
        cid = case_id(split, i, case)
        key = _key(world, method, settings, cid)
        if key not in cache:
            rec = run_case(w, method, settings, case)
            rec.update(key=key, world=world, method=method.name, case=cid, kind=case.kind, settings=settings,
                       weights=weights_digest(world))
            _save_png(rec.pop("_image"), IMAGES / f"{key}.png")
            _cache_write(world, rec)
            cache[key] = rec
        out.append(cache[key])
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.mean(xs) if xs else math.nan


def summarise(records: list[dict]) -> dict:
    return {k: _mean([r[k] for r in records]) for k in
            ("success", "all_right", "structure", "bg_psnr", "bg_mse", "bg_ssim", "bg_featdist", "clip_whole",
             "clip_edited", "evals", "bwd", "seconds")}


def _fmt(v, scale=1.0, fmt=".1f"):
    return "—" if not math.isfinite(v) else format(v * scale, fmt)


TYPE_HEADER = ("| method | success | all right | structure ×10³ | bg PSNR | bg MSE ×10⁴ | bg SSIM ×10² | "
               "bg feat ×10³ | CLIP whole | CLIP edited | evals | bwd | s/img |")


def type_table(rows: list[tuple[str, dict]]) -> str:
    lines = [TYPE_HEADER, "|" + "---|" * 13]
    for name, s in rows:
        lines.append(f"| {name} | {_fmt(s['success'], 100, '.0f')} % | {_fmt(s['all_right'], 100, '.0f')} % | "
                     f"{_fmt(s['structure'], 1e3, '.2f')} | {_fmt(s['bg_psnr'])} | {_fmt(s['bg_mse'], 1e4, '.1f')} | "
                     f"{_fmt(s['bg_ssim'], 1e2, '.1f')} | {_fmt(s['bg_featdist'], 1e3, '.1f')} | "
                     f"{_fmt(s['clip_whole'])} | {_fmt(s['clip_edited'])} | {_fmt(s['evals'], 1, '.0f')} | "
                     f"{_fmt(s['bwd'], 1, '.0f')} | {_fmt(s['seconds'], 1, '.1f')} |")
    return "\n".join(lines)


def summary_table(per_method: dict) -> str:
    kinds = suite.EDIT_TYPES
    head = ("| method | " + " | ".join(kinds) + " | success | all right | structure ×10³ | bg PSNR | CLIP whole | "
            "CLIP edited | evals | s/img |")
    lines = [head, "|" + "---|" * (len(kinds) + 9)]
    for name, recs in per_method.items():
        s = summarise(recs)
        by = {k: summarise([r for r in recs if r["kind"] == k]) for k in kinds}
        cells = [_fmt(by[k]["success"], 100, ".0f") for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(s['success'], 100, '.0f')} % | "
                     f"{_fmt(s['all_right'], 100, '.0f')} % | {_fmt(s['structure'], 1e3, '.2f')} | "
                     f"{_fmt(s['bg_psnr'])} | {_fmt(s['clip_whole'])} | {_fmt(s['clip_edited'])} | "
                     f"{_fmt(s['evals'], 1, '.0f')} | {_fmt(s['seconds'], 1, '.1f')} |")
    return "\n".join(lines)


# ---- the papers' claimed advantages -------------------------------------------------------------------------------

@dataclass
class Claim:
    """A paper's claimed advantage as a comparison of two rows on the edit types it concerns: ``method`` is better
    than ``baseline`` on ``better`` (metric, +1 higher is better / −1 lower), without losing more than the
    tolerance on each of ``keep`` ((metric, +1 / −1, tolerance))."""
    paper: str
    text: str
    method: str
    baseline: str
    kinds: tuple
    better: tuple
    keep: tuple = ()


CLAIMS = [
    Claim("Asyrp (h-space)", "a direction in h-space makes a semantic edit that keeps the content better than the "
          "words alone", "h-space, trained direction (style)", "DDIM prompt swap", ("style",), ("structure", -1),
          (("success", +1, 0.1),)),
    Claim("Asyrp (h-space)", "the prompt pair's h-space direction edits as the words do, keeping the structure",
          "h-space, prompt direction", "DDIM prompt swap", suite.EDIT_TYPES, ("structure", -1),
          (("success", +1, 0.1),)),
    Claim("StyleDiffusion", "value-embedding inversion + P2Plus keeps the structure better than null-text + P2P",
          "StyleDiffusion + P2Plus", "null-text + P2P", suite.EDIT_TYPES, ("structure", -1),
          (("success", +1, 0.1),)),
    Claim("DOODL", "optimising the noise through the whole chain beats one-step classifier guidance",
          "DOODL classifier (EDICT pair)", "one-step guidance (DDIM-inverted)", CLASS_KINDS, ("success", +1)),
    Claim("CASO", "a class embedding trained from the classifier edits better than classifier guidance",
          "CASO class in a prompt", "one-step guidance (DDIM-inverted)", CLASS_KINDS, ("success", +1)),
    Claim("EMS (CSDS)", "constrained score distillation makes the text-only edit more faithful, keeping the "
          "structure", "EMS + CSDS", "EMS text only", suite.EDIT_TYPES, ("success", +1),
          (("structure", -1, 0.01),)),
]


def claim_verdict(claim: Claim, per_method: dict) -> tuple[dict, dict, bool] | None:
    """(the method's summary, the baseline's, whether the claim reproduces) on the claim's edit types; None where
    either row is missing."""
    if claim.method not in per_method or claim.baseline not in per_method:
        return None
    a, b = (summarise([r for r in per_method[n] if r["kind"] in claim.kinds]) for n in (claim.method, claim.baseline))
    metric, sign = claim.better
    ok = math.isfinite(a[metric]) and math.isfinite(b[metric]) and sign * (a[metric] - b[metric]) > 0
    for metric, sign, tol in claim.keep:
        ok = ok and sign * (a[metric] - b[metric]) >= -tol
    return a, b, ok


def claims_table(per_method: dict) -> str:
    lines = ["| paper | claim | rows compared (edit types) | figures: method vs baseline | reproduces here |",
             "|---|---|---|---|---|"]
    for c in CLAIMS:
        v = claim_verdict(c, per_method)
        if v is None:
            continue
        a, b, ok = v
        shown = [c.better[0]] + [k[0] for k in c.keep]
        figs = "; ".join(f"{m} {_claim_fmt(m, a[m])} vs {_claim_fmt(m, b[m])}" for m in shown)
        lines.append(f"| {c.paper} | {c.text} | {c.method} vs {c.baseline} ({', '.join(c.kinds)}) | {figs} | "
                     f"{'**yes**' if ok else '**no**'} |")
    return "\n".join(lines)


def _claim_fmt(metric: str, v: float) -> str:
    if metric == "success":
        return _fmt(v, 100, ".0f") + " %"
    if metric == "structure":
        return _fmt(v, 1e3, ".2f") + " ×10⁻³"
    return _fmt(v)


# ---- tuning ----------------------------------------------------------------------------------------------------------

def candidates(method: Method) -> list[dict]:
    """The method's default settings, then each grid value changed one at a time (a coordinate search: the grids
    are small and every setting costs a full pass over the tune split)."""
    out = [method.settings]
    for dotted, values in method.grid.items():
        d, k = dotted.split(".")
        for v in values:
            s = json.loads(json.dumps(method.settings))
            s.setdefault(d, {})[k] = v
            if s not in out:
                out.append(s)
    return out


def tune(world: str, w, method: Method, per_type: int, cache: dict) -> tuple[dict, list]:
    """The settings with the best success rate on the tune split, ties broken by the mean background PSNR."""
    cases = suite.cases("tune", per_type)
    scored = []
    for s in candidates(method):
        sm = summarise(evaluate(world, w, method, s, cases, "tune", cache))
        bg = sm["bg_psnr"] if math.isfinite(sm["bg_psnr"]) else 0.0
        scored.append(((round(sm["success"], 6), bg), s, sm))
    scored.sort(key=lambda x: x[0], reverse=True)
    return scored[0][1], scored


def load_settings() -> dict:
    return json.loads(SETTINGS_FILE.read_text()) if SETTINGS_FILE.exists() else {}


def run(worlds=("unet", "dit"), per_type: int = 3, methods: list[str] | None = None, tune_first: bool = False,
        tune_per_type: int = 2, out: Path | None = None) -> tuple[str, Path]:
    chosen = [method_by_name(n) for n in methods] if methods else METHODS
    cache = _cache_read()
    settings = load_settings()
    cases = suite.cases("test", per_type)
    text = [f"# PIE-Bench-style scorecard on the scenes world\n\n{per_type} test cases per edit type "
            f"({len(cases)} in all), tune split {tune_per_type} per type.\n"]
    for world in worlds:
        w = ScenesWorld(world)
        per_method = {}
        for m in chosen:
            if world == "dit" and not m.flow:
                continue
            key = f"{world}:{m.name}"
            if tune_first and m.grid:
                best, scored = tune(world, w, m, tune_per_type, cache)
                settings[key] = best
                SETTINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
                SETTINGS_FILE.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
            s = settings.get(key, m.settings)
            per_method[m.name] = evaluate(world, w, m, s, cases, "test", cache)
        label = "U-Net world (SD1.5-detectable, ε)" if world == "unet" else "SD3 world (MMDiT, rectified flow)"
        text.append(f"## {label}: summary\n\n{summary_table(per_method)}\n")
        text.append(f"### {label}: the papers' claimed advantages\n\n{claims_table(per_method)}\n")
        for kind in suite.EDIT_TYPES:
            rows = [(name, summarise([r for r in recs if r["kind"] == kind])) for name, recs in per_method.items()
                    if any(r["kind"] == kind for r in recs)]
            text.append(f"### {label}: {kind}\n\n{type_table(rows)}\n")
    md = "\n".join(text)
    out = Path(out or ROOT / "out") / time.strftime("pie-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "pie.md").write_text(md)
    return md, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-type", type=int, default=3)
    ap.add_argument("--tune-per-type", type=int, default=2)
    ap.add_argument("--worlds", nargs="+", default=["unet", "dit"], choices=["unet", "dit"])
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--tune", action="store_true", help="choose each method's settings on the tune split first")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    md, out = run(a.worlds, a.per_type, a.methods, a.tune, a.tune_per_type, a.out)
    print(md)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
