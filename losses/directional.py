"""The directional CLIP loss (Gal et al., StyleGAN-NADA; used by Asyrp eq. 4 and DiffusionCLIP):

    L_dir = 1 − cos(ΔI, ΔT),   ΔI = E_I(x_edit) − E_I(x_src),   ΔT = E_T(y_trg) − E_T(y_src)

with E_I / E_T CLIP's image / text encoders (``losses.clip.LocalCLIP``), and its two training forms in Asyrp:

- the paper's (eq. 4, 7): λ_CLIP · L_dir, with x_src = P_t^src (the unedited prediction at the same step);
- the official code's (``diffusion_latent.py``, ``run_training``; the DiffusionCLIP form): λ_CLIP · −log((2 − L_dir)/2)
  = −log((1 + cos)/2), with x_src = x0, the real image (``official_clip_term``).

The text direction ΔT of the official code (``losses/clip_loss.py``, ``compute_text_direction``) is not the bare
texts': each text is put into the 79 ImageNet prompt templates (``IMAGENET_TEMPLATES``, from the official
``utils/text_templates.py``; "a bad photo of a {}.", …), every template's text embedding is normalised, ΔT is the mean
over the templates of E_T(template(y_trg)) − E_T(template(y_src)), normalised (``clip_text_direction``). Pure torch.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# kwonminki/Asyrp_official utils/text_templates.py ``imagenet_templates`` (79, in its order; the CLIP paper's ImageNet
# prompts as StyleGAN-NADA and DiffusionCLIP use them)
IMAGENET_TEMPLATES = (
    'a bad photo of a {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
)

# texts -> unit-norm text embeddings [N, D]
TextEncoder = Callable[[list], Tensor]


def compose_text_with_templates(text: str, templates: Sequence[str] = IMAGENET_TEMPLATES) -> list[str]:
    """[template.format(text) for each template] (official ``CLIPLoss.compose_text_with_templates``)."""
    return [template.format(text) for template in templates]


def clip_text_direction(encode: TextEncoder, source: str, target: str,
                        templates: Optional[Sequence[str]] = IMAGENET_TEMPLATES) -> Tensor:
    """ΔT [D]. With ``templates`` (default: the official 79): normalise(mean_k(E_T(template_k(target)) −
    E_T(template_k(source)))), ``encode`` giving unit-norm embeddings (official ``compute_text_direction``). With
    ``templates`` None or empty: E_T(target) − E_T(source) of the bare texts (unnormalised; L_dir is a cosine, so
    the scale does not matter)."""
    if not templates:
        src, trg = encode([source, target])
        return trg - src
    k = len(templates)
    feats = encode(compose_text_with_templates(source, templates) + compose_text_with_templates(target, templates))
    direction = (feats[k:] - feats[:k]).mean(dim=0)
    return direction / direction.norm()


def directional_clip_loss(edit_features: Tensor, source_features: Tensor, text_direction: Tensor) -> Tensor:
    """L_dir: mean over the batch of 1 − cos(E_I(edit) − E_I(source), ΔT)."""
    delta_i = edit_features - source_features
    return (1 - F.cosine_similarity(delta_i, text_direction.expand_as(delta_i), dim=-1, eps=1e-8)).mean()


def official_clip_term(l_dir: Tensor) -> Tensor:
    """−log((2 − L_dir)/2) = −log((1 + cos)/2): the official Asyrp / DiffusionCLIP form of the directional loss
    (L_dir of the batch mean, as ``diffusion_latent.py`` applies it). 0 when ΔI ∥ ΔT, log 2 at cos = 0."""
    return -torch.log((2 - l_dir) / 2)
