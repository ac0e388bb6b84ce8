"""PIE-Bench's metrics on the scenes world, computed as PIE-Bench computes them (cure-lab/PnPInversion,
evaluation/evaluate.py ``calculate_metric`` and evaluation/matrics_calculator.py ``MetricsCalculator``), with the
scenes world's own networks where PIE-Bench uses pretrained ones:

| PIE-Bench                                         | here                                                        |
|---------------------------------------------------|-------------------------------------------------------------|
| structure distance: MSE of the cosine self-similarity of DINO ViT-B/8's last-layer keys (all tokens, CLS included), source vs edited, whole image | the same on the toy CLIP's vision tower (ViT, 16 px patches, 4 layers): last layer's keys |
| background PSNR / MSE / SSIM: both images times (1 − mask), then the whole-image metric | the same (SSIM: Gaussian window 11, σ 1.5, data range 1, as torchmetrics) |
| background LPIPS (SqueezeNet)                     | **a stand-in**, ``feature distance``: LPIPS's formula (unit-normalised channels, squared difference, spatial mean, summed over layers) on the scene judge's three feature maps with unit layer weights — LPIPS's learnt weights and ImageNet features cannot reach this machine |
| CLIP similarity whole / edited: CLIPScore (100 · max(cos, 0)) of the edited image with the target prompt; edited: image times mask | the same with the toy CLIP |

PIE-Bench sets the mask's one-pixel border to "edited" to absorb annotation errors; the scenes world's masks are
the generator's own, so the border is left as it is. Where the mask covers the whole image (style) the background
metrics are NaN, as PIE-Bench's "nan".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _masked(img: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return img * keep.to(img.dtype)[:, None]


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).pow(2).mean((1, 2, 3))
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-12))


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).mean((1, 2, 3))


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per image SSIM (data range 1, Gaussian 11 / 1.5, valid windows only, mean over channels and positions)."""
    c = a.shape[1]
    w = _gauss().expand(c, 1, -1, -1)

    def f(x):
        return F.conv2d(x, w, groups=c)
    mu_a, mu_b = f(a), f(b)
    s_aa = f(a * a) - mu_a ** 2
    s_bb = f(b * b) - mu_b ** 2
    s_ab = f(a * b) - mu_a * mu_b
    c1, c2 = k1 ** 2, k2 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    return m.mean((1, 2, 3))


class Meter:
    """The judges bound to the metrics: ``judge`` (harness/scenes/judges.SceneJudge), ``clip`` / ``tokenizer``
    (the toy CLIP)."""

    def __init__(self, judge, clip, tokenizer):
        self.judge, self.clip, self.tok = judge, clip, tokenizer

    # --- structure distance (toy CLIP ViT keys' self-similarity) ------------------------------------------------
    @torch.no_grad()
    def _keys(self, img: torch.Tensor) -> torch.Tensor:
        vision = self.clip.vision_model
        grabbed = {}
        layer = vision.encoder.layers[-1]
        h = layer.self_attn.k_proj.register_forward_hook(lambda m, i, o: grabbed.__setitem__("k", o))
        try:
            vision(pixel_values=(img * 2 - 1).to(self.clip.dtype))
        finally:
            h.remove()
        return grabbed["k"].float()                          # [B, tokens, width]: heads concatenated

    def structure_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def selfsim(k):
            n = k.norm(dim=2, keepdim=True)
            return (k @ k.transpose(1, 2)) / (n @ n.transpose(1, 2)).clamp(min=1e-8)
        return (selfsim(self._keys(a)) - selfsim(self._keys(b))).pow(2).mean((1, 2))

    # --- the LPIPS stand-in --------------------------------------------------------------------------------------
    @torch.no_grad()
    def _features(self, img: torch.Tensor) -> list[torch.Tensor]:
        j = self.judge
        x = img * 2 - 1
        a = j.stem(x)
        b = j.down1(a)
        c = j.down2(b)
        return [a, b, c]

    def feature_distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = 0
        for fa, fb in zip(self._features(a), self._features(b)):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            out = out + (na - nb).pow(2).sum(1).mean((1, 2))
        return out

    # --- CLIP score ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def clip_score(self, img: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        from .judges import CLIP_TOKENS
        t = self.tok(prompts, padding="max_length", max_length=CLIP_TOKENS, truncation=True, return_tensors="pt")
        ie = self.clip.get_image_features(pixel_values=(img * 2 - 1).to(self.clip.dtype)).float()
        te = self.clip.get_text_features(input_ids=t.input_ids, attention_mask=t.attention_mask).float()
        cos = F.cosine_similarity(ie, te, dim=-1)
        return 100 * cos.clamp(min=0)

    # --- all of PIE-Bench's columns --------------------------------------------------------------------------------
    def measure(self, source: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor,
                target_prompts: list[str]) -> dict[str, list[float]]:
        """source, edited [B, 3, 128, 128] in [0, 1]; mask [B, 128, 128] bool (True: may change)."""
        keep = ~mask
        sa, ea = _masked(source, keep), _masked(edited, keep)
        whole = keep.flatten(1).sum(1) == 0
        nan = torch.full((source.shape[0],), math.nan)

        def bg(v):
            return torch.where(whole, nan, v)
        return {
            "structure": self.structure_distance(source, edited).tolist(),
            "bg_psnr": bg(psnr(sa, ea)).tolist(),
            "bg_featdist": bg(self.feature_distance(sa, ea)).tolist(),
            "bg_mse": bg(mse(sa, ea)).tolist(),
            "bg_ssim": bg(ssim(sa, ea)).tolist(),
            "clip_whole": self.clip_score(edited, target_prompts).tolist(),
            "clip_edited": self.clip_score(_masked(edited, mask), target_prompts).tolist(),
        }
