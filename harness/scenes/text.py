"""The scenes world's captions as ComfyUI's text encoders give them, computed once and cached.

A caption's encoding by the world's CLIP-L (the generated one of the shapes world, harness/tiny_models.py) costs
more than a U-Net step, and the scenes world has ~10⁵ possible captions. So the models train on a fixed set: the
captions of TRAIN_SCENES seeded scenes (4763 distinct of 8192), each encoded once, in one pass of ComfyUI's own
CLIP-L code that yields both conditionings the worlds need:
- SD1.5 (``CLIPTextEncode`` of an SD1.5 checkpoint): the last layer after the final LayerNorm, [77, 768];
- SD3 with CLIP-L alone: the penultimate layer without LayerNorm [77, 768] (ComfyUI pads it with zeros to 4096) and
  the pooled output [768] (padded to 2048).
Each training sample is one of the set's scenes with its continuous parameters redrawn (``data.resample``:
positions, radii, colourway, texture phase…), so images never repeat while captions do. The first chunk is
checked against ComfyUI's full ``encode_from_tokens`` path for both model types.

The cache lives in ``STATE/text-<TRAIN_SCENES>/`` (outside the work tree, not committed: ~1.1 GB; resumable chunk by
chunk; ~10 minutes on 2 cores, 0.12 s a caption).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..paths import COMFY
from . import STATE, data

TRAIN_SCENES = 8192  # 4763 distinct captions: the cache is rebuilt in every session that trains a generator
CHUNK = 256


def cache_dir(n: int = TRAIN_SCENES) -> Path:
    return STATE / f"text-{n}"


def caption_set(n: int = TRAIN_SCENES):
    """(scenes, captions, index): the training scenes, their distinct captions ("" first: the unconditional
    prompt), and each scene's caption index."""
    scenes = data.make_dataset(n, data.TRAIN_SEED)
    caps = scenes.captions
    uniq = [""] + sorted(set(caps))
    where = {c: i for i, c in enumerate(uniq)}
    return scenes, uniq, torch.tensor([where[c] for c in caps])


def _clips():
    from ..shapes.train import _comfy
    _comfy()
    import comfy.sd
    from ..tiny_models import verified_text_encoder
    te = verified_text_encoder(COMFY)
    sd1 = comfy.sd.load_text_encoder_state_dicts([te], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)
    sd3 = comfy.sd.load_text_encoder_state_dicts([te], clip_type=comfy.sd.CLIPType.SD3)
    return sd1, sd3


@torch.no_grad()
def encode(sd1_clip, captions: list[str]) -> dict:
    """One batched pass of ComfyUI's CLIP-L: {"sd1": [B, 77, 768], "sd3": [B, 77, 768], "sd3_pooled": [B, 768]}."""
    clip_l = sd1_clip.cond_stage_model.clip_l
    tokens = [[t for t, _ in sd1_clip.tokenize(c)["l"][0]] for c in captions]
    if any(len(t) != 77 for t in tokens):
        raise ValueError("a caption longer than one 77-token section")
    device = clip_l.transformer.get_input_embeddings().weight.device
    embeds, _, num_tokens, info = clip_l.process_tokens(tokens, device)
    out = clip_l.transformer(None, None, embeds=embeds, num_tokens=num_tokens, intermediate_output=-2,
                             final_layer_norm_intermediate=False, dtype=torch.float32, embeds_info=info)
    pooled = out[3] if len(out) >= 4 and out[3] is not None else out[2]
    return {"sd1": out[0].float(), "sd3": out[1].float(), "sd3_pooled": pooled.float()}


@torch.no_grad()
def check_against_comfy(sd1_clip, sd3_clip, captions: list[str], atol: float = 1e-4) -> float:
    """Max |difference| between ``encode`` and CLIPTextEncode's path (encode_from_tokens) for both model types;
    raises if above atol."""
    ours = encode(sd1_clip, captions)
    worst = 0.0
    for i, c in enumerate(captions):
        a = sd1_clip.encode_from_tokens(sd1_clip.tokenize(c))
        b = sd3_clip.encode_from_tokens(sd3_clip.tokenize(c), return_pooled=True, return_dict=True)
        if b["cond"].shape[-1] != 4096 or float(b["cond"][..., 768:].abs().max()) != 0.0:
            raise RuntimeError("the SD3 text encoder's conditioning is not CLIP-L padded with zeros")
        for x, y in ((ours["sd1"][i], a[0]), (ours["sd3"][i], b["cond"][0, :, :768]),
                     (ours["sd3_pooled"][i], b["pooled_output"][0, :768])):
            worst = max(worst, float((x - y.float()).abs().max()))
    if worst > atol:
        raise RuntimeError(f"the batched caption encoding differs from ComfyUI's by {worst:.3g} (> {atol})")
    return worst


def build_cache(minutes: float = 0, fresh: bool = False, n: int = TRAIN_SCENES) -> None:
    """Encode the caption set chunk by chunk into cache_dir(n) (resumable; a chunk is written atomically)."""
    from safetensors.torch import save_file
    _, caps, _ = caption_set(n)
    folder = cache_dir(n)
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        for p in folder.glob("*.safetensors"):
            p.unlink()
    sd1, sd3 = _clips()
    t0 = time.time()
    chunks = range(0, len(caps), CHUNK)
    for k, start in enumerate(chunks):
        path = folder / f"{k:04d}.safetensors"
        if path.exists():
            continue
        part = caps[start:start + CHUNK]
        if k == 0:
            print(f"[text] checked against ComfyUI: max diff {check_against_comfy(sd1, sd3, part[:4]):.2e}",
                  flush=True)
        enc = encode(sd1, part)
        tmp = path.with_suffix(".tmp")
        save_file({key: v.half().contiguous() for key, v in enc.items()}, str(tmp), metadata={"count": str(len(part))})
        tmp.replace(path)
        el = time.time() - t0
        print(f"[text] chunk {k + 1}/{len(chunks)} ({el:.0f} s)", flush=True)
        if minutes and el > minutes * 60:
            print("[text] time budget reached; run again to go on", flush=True)
            return
    (folder / "captions.txt").write_text("\n".join(caps))


def load_cache(n: int = TRAIN_SCENES) -> dict:
    """{"sd1", "sd3", "sd3_pooled"} for every caption of caption_set(n), in its order (fp16)."""
    from safetensors.torch import load_file
    _, caps, _ = caption_set(n)
    folder = cache_dir(n)
    k = (len(caps) + CHUNK - 1) // CHUNK
    missing = [i for i in range(k) if not (folder / f"{i:04d}.safetensors").exists()]
    if missing:
        print(f"[text] the caption cache lacks {len(missing)} of {k} chunks: building them", flush=True)
        build_cache(n=n)
    parts = [load_file(str(folder / f"{i:04d}.safetensors")) for i in range(k)]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
