"""A CLIP for the pack's losses, loaded from a local folder, and CLIP's image preprocessing.

``LocalCLIP`` loads a transformers ``CLIPModel`` from a folder on disk (``local_files_only``, safetensors weights only:
never downloaded, never unpickled) and preprocesses images differentiably (resize, centre crop, normalise), unlike
``CLIPImageProcessor`` which works on 8-bit arrays. ``clip_preprocess`` is shared with the adapter for a stock
CLIP_VISION (``adapters.clip_vision``). Pure torch + transformers; no ComfyUI.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvEditError, quote
from .directional import IMAGENET_TEMPLATES, clip_text_direction

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPLoadError(InvEditError):
    pass


def clip_preprocess(images: Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> a CLIP's input: shortest side resized to ``size`` (bilinear, antialiased), centre
    crop, normalised by ``mean``/``std`` [1, 3, 1, 1]. Differentiable (ComfyUI's ``clip_preprocess`` rounds to 8 bits)."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = images
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    return (x - mean.to(x)) / std.to(x)


def plain_words(text: str, who: str, name: str) -> None:
    """Refuse ``embedding:<name>`` in a text for the pack's own CLIP (``LocalCLIP``), which reads words only (ComfyUI's
    CLIP reads embedding files; this one would read the name as words)."""
    named = [w for w in text.split() if w.startswith("embedding:")]
    if named:
        raise ValueError(f"{who}: {quote(named[0])} in {name}: this CLIP (a folder in models/invedit_clip, read by "
                         f"transformers) reads no embedding files, only words; type the words instead")


class LocalCLIP:
    """CLIP from a local folder (config.json, model.safetensors, tokenizer files, optional preprocessor_config.json).
    Frozen: no parameter requires grad; gradients flow to the images only."""

    def __init__(self, folder: str | Path, device="cpu", who: str = "CLIP"):
        from transformers import CLIPModel, CLIPTokenizer
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise CLIPLoadError(f"{who}: {folder} is not a CLIP folder (no config.json); put a transformers CLIPModel "
                                f"folder (config.json, model.safetensors, tokenizer files) there")
        if not (folder / "model.safetensors").is_file():
            raise CLIPLoadError(f"{who}: {folder.name} has no model.safetensors (pickled .bin weights are refused); "
                                f"convert it with transformers' save_pretrained(safe_serialization=True)")
        try:
            self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        except Exception as e:  # a truncated or foreign model.safetensors (SafetensorError), a bad config, …
            why = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:400]
            raise CLIPLoadError(f"{who}: cannot load the CLIP in {folder.name}: its config.json or model.safetensors "
                                f"is broken ({type(e).__name__}: {why}); save it again with transformers' "
                                f"save_pretrained") from None
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:
            raise CLIPLoadError(f"{who}: cannot load the tokenizer files of {folder.name} (vocab.json, merges.txt): "
                                f"{type(e).__name__}: {e}") from None
        self.model = self.model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        pre = folder / "preprocessor_config.json"
        cfg = json.loads(pre.read_text()) if pre.is_file() else {}
        self.mean = torch.tensor(cfg.get("image_mean", OPENAI_MEAN), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("image_std", OPENAI_STD), device=self.device).view(1, 3, 1, 1)
        self.size = int(self.model.config.vision_config.image_size)
        self.dim = int(self.model.config.projection_dim)  # of the image (and text) embeddings

    def text_features(self, texts: list[str]) -> Tensor:
        for t in texts:
            plain_words(t, "the pack's CLIP", "text")
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt")
        with torch.no_grad():
            f = self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()})
        return F.normalize(f.float(), dim=-1)

    def preprocess(self, images: Tensor) -> Tensor:
        return clip_preprocess(images.to(self.device, torch.float32), self.size, self.mean, self.std)

    def image_features(self, images: Tensor) -> Tensor:
        """Unit-norm image embeddings of [B, 3, H, W] images in [0, 1] (differentiable in the images)."""
        return F.normalize(self.model.get_image_features(pixel_values=self.preprocess(images)).float(), dim=-1)

    def text_direction(self, source: str, target: str,
                       templates: Optional[Sequence[str]] = IMAGENET_TEMPLATES) -> Tensor:
        """ΔT [D] of the directional loss (``losses.directional.clip_text_direction``): by default the mean over the
        official Asyrp code's 79 prompt templates of the normalised embeddings' differences, normalised; with
        ``templates`` None or empty, E_T(target) − E_T(source) of the bare texts. (``text_features``, which DOODL's
        and the classifiers' losses use, embeds the bare texts.)"""
        return clip_text_direction(self.text_features, source, target, templates)

    def text_cosine(self, source: str, target: str) -> float:
        """cos(E_T(source), E_T(target)): Asyrp's λ_recon = recon_mult·cos (smaller L1 weight for bigger edits)."""
        src, trg = self.text_features([source, target])
        return float((src * trg).sum())
