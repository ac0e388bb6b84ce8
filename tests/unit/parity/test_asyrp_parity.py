"""Parity of the pack's Asyrp (h-space) with the official code, kwonminki/Asyrp_official at a6c82dc, in float64 on a
seeded non-linear toy U-Net with an h-space bottleneck (tolerance TOL, relative; each planted mutation of the
reference must move the result by more than 1000·TOL).

The reference below is transcribed from the official repository, not from the pack:

- ``utils/diffusion_utils.py`` ``denoising_step`` (sampling_type 'ddim', learn_sigma False):
  ``x0_t = (xt − et_modified·sqrt(1 − at))/sqrt(at)`` when ``index`` is given (else with ``et``);
  ``eta == 0``: ``xt_next = sqrt(at_next)·x0_t + sqrt(1 − at_next)·et``; else
  ``c1 = eta·sqrt((1 − at/at_next)·(1 − at_next)/(1 − at))``, ``c2 = sqrt((1 − at_next) − c1²)``,
  ``xt_next = sqrt(at_next)·x0_t + c2·et + c1·randn``; ``at_next = 1`` when ``t_next == −1``.
- ``models/ddpm/diffusion.py`` ``DDPM.forward``: encoder and middle block once, ``middle_h = h``; with ``index`` and
  ``t[0] >= t_edit``: ``h2 = h·hs_coeff[0] + layer_0(h, temb)·hs_coeff[1]``, else ``h2 = h``; the decoder runs on
  ``h2`` (-> ``et_modified``) and on ``h`` (-> ``et``) with the same skips and temb. ``DeltaBlock.forward``:
  ``conv1 -> + temb_proj(swish(temb)) -> GroupNorm -> swish -> conv2`` (f_t, used on both sides below: the pack's
  own DeltaNet is a documented architecture difference, not part of the loop's parity).
- ``diffusion_latent.py`` ``Asyrp.save_image`` (the generative process): for ``(i, j)`` in
  ``zip(reversed(seq_inv), reversed(seq_inv_next))``, ``eta = 1.0 if t < t_addnoise else 0.0``, the shift when
  ``t >= t_edit`` (``seq = [int(s + 1e-6) for s in linspace(0, 1, n)·t_0]``, ``seq_next = [−1] + seq[:−1]``).
- ``diffusion_latent.py`` ``Asyrp.run_training``: ``seq_train`` = the grid's ``t >= t_edit``, ``seq_train_next =
  [−1] + seq_train[:−1]``; per step ``optim_ft.zero_grad()``; ``xt_next, x0_t = denoising_step(xt_next.detach(), …,
  eta=0, index=0)``; ``x_origin, x0_t_origin = denoising_step(x_origin.detach(), …)`` without grad;
  ``loss_l1 = L1Loss()(x0_t, x0_t_origin)``; ``loss_clip = −log((2 − clip_loss_func(x0, src, x0_t, trg))/2)``;
  ``loss = id_loss_w·0 + l1_loss_w·loss_l1·cosine + clip_loss_w·loss_clip``; ``backward``; ``optim_ft.step()``;
  ``scheduler_ft.step()`` after each pass over the images (``it_out``).
- ``losses/clip_loss.py`` ``CLIPLoss``: ``get_text_features`` (templates composed by ``compose_text_with_templates``
  from ``utils/text_templates.py`` ``imagenet_templates``, each embedding normalised), ``compute_text_direction``
  (``(target − source).mean(0)``, normalised), ``clip_directional_loss`` (normalised image embeddings,
  ``edit_direction = (target − src)/(|·| + 1e-7)``, ``1 − CosineSimilarity(edit_direction, text_direction)``, mean);
  ``preprocess`` = Normalize(−1, 2) to [0, 1], Resize + CenterCrop (identity on the toy's size), CLIP's Normalize.
  ``set_t_edit_t_addnoise``: ``cosine`` = CosineSimilarity of the bare texts' embeddings.

The paper's loss (eq. 4, 7: λ_CLIP·L_dir(P_t^edit, y_trg; P_t^src, y_src) + λ_recon·|P_t^edit − P_t^src|) is in no
official file; its reference is the official loop above with that loss (paper, Sec. 3.3–3.4, App. I).

Both sides train the same f_t network (the official DeltaBlock) with the official SGD (``TrainConfig.optimizer``
"sgd"); the pack's defaults, Adam and its own zero-initialised DeltaNet, are documented differences of the node (see
optim/hspace.py and hooks/directions.py), not of the loop. Documented differences shown here with their size: the ᾱ
table in float32 in the official ``extract`` (float64 here), the step scaling Δt_gen/Δt_train instead of
n_train/n_test, and what training under the paper's vs the official loss does to an edit.
"""
from __future__ import annotations

import copy
import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from invedit.hooks.hspace import HSpacePatch
from invedit.hooks.directions import ImplicitDirection, Where
from invedit.hooks.passes import EDIT, PASS_KEY
from invedit.losses.clip import OPENAI_MEAN, OPENAI_STD, clip_preprocess
from invedit.losses.directional import (IMAGENET_TEMPLATES, clip_text_direction, directional_clip_loss)
from invedit.optim.hspace import TrainConfig, train_direction
from invedit.samplers import asyrp

F64 = torch.float64
TOL = 1e-10
MUT = 1000 * TOL


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --- the toy: a DDPM schedule, a U-Net-like ε-model with an h-space, f_t, a CLIP --------------------------------------

BETAS = torch.linspace(1e-4, 0.02, 1000, dtype=F64)   # the DDPM++ / SDEdit checkpoints' linear schedule
ALPHAS = torch.cumprod(1 - BETAS, 0)                   # ᾱ_t, t = 0 … 999
SIGMAS = ((1 - ALPHAS) / ALPHAS).sqrt()                 # the pack's σ(t)


def sinusoid(t: float, dim: int = 8) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=F64) / half)
    args = float(t) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)])[None]


class ToyUNet:
    """ε(x, t) = decode(h, skip, temb) with h = middle(encode(x, temb)): one skip level, a stride-2 bottleneck of
    CH channels (the h-space), tanh non-linearities, the DDPM time embedding; float64."""
    C, CH, TD = 3, 8, 6

    def __init__(self, seed=0):
        g = gen(seed)
        r = lambda *s, k=0.3: torch.randn(*s, generator=g, dtype=F64) * k  # noqa: E731
        self.w_t = r(self.TD, 8, k=0.5)
        self.w_in, self.w_down = r(self.TD, self.C, 3, 3), r(self.CH, self.TD, 3, 3)
        self.w_mid, self.b_mid = r(self.CH, self.CH, 1, 1, k=0.5), r(self.CH)
        self.w_up, self.w_out = r(self.TD, self.CH + self.TD, 3, 3), r(self.C, self.TD, 3, 3)

    def temb(self, t: float) -> torch.Tensor:
        return torch.tanh(sinusoid(t) @ self.w_t.T)                           # [1, TD]

    def encode(self, x, t):
        temb = self.temb(t)
        skip = torch.tanh(F.conv2d(x, self.w_in, padding=1) + temb[..., None, None])
        h = torch.tanh(F.conv2d(skip, self.w_down, stride=2, padding=1) + self.b_mid[:, None, None])
        return h + torch.tanh(F.conv2d(h, self.w_mid)), skip, temb           # the middle block's output h

    def decode(self, h, skip, temb):
        u = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skip], 1)
        return 0.5 * F.conv2d(torch.tanh(F.conv2d(u, self.w_up, padding=1) + temb[..., None, None]), self.w_out,
                              padding=1)


class DeltaBlock(torch.nn.Module):
    """models/ddpm/diffusion.py DeltaBlock: conv1 (1×1) -> + temb_proj(swish(temb)) -> GroupNorm -> swish -> conv2."""

    def __init__(self, ch=ToyUNet.CH, td=ToyUNet.TD, seed=5):
        super().__init__()
        torch.manual_seed(seed)  # PyTorch's default init, as the official code (not zero)
        self.conv1, self.conv2 = torch.nn.Conv2d(ch, ch, 1), torch.nn.Conv2d(ch, ch, 1)
        self.temb_proj, self.norm2 = torch.nn.Linear(td, ch), torch.nn.GroupNorm(4, ch)
        self.double()

    def forward(self, h, temb):
        x = self.conv1(h) + self.temb_proj(F.silu(temb))[:, :, None, None]
        return self.conv2(F.silu(self.norm2(x)))


class ToyCLIP:
    """A non-linear image encoder (two tanh layers over the normalised pixels) and a text encoder over characters;
    the official ``get_*_features`` normalise both."""
    D = 12

    def __init__(self, seed=7, hw=8):
        g = gen(seed)
        self.w1 = torch.randn(24, 3 * hw * hw, generator=g, dtype=F64) / (3 * hw * hw) ** 0.5
        self.w2 = torch.randn(self.D, 24, generator=g, dtype=F64) / 24 ** 0.5
        self.chars = torch.randn(128, 16, generator=g, dtype=F64)
        self.wt = torch.randn(self.D, 16, generator=g, dtype=F64) / 4
        self.bt = torch.randn(self.D, generator=g, dtype=F64)  # shared by every text: related texts have cos > 0
        # the CLIP normalisation, checked against the OpenAI clip package's Normalize constants
        assert OPENAI_MEAN == (0.48145466, 0.4578275, 0.40821073)
        assert OPENAI_STD == (0.26862954, 0.26130258, 0.27577711)
        self.mean = torch.tensor(OPENAI_MEAN, dtype=F64).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_STD, dtype=F64).view(1, 3, 1, 1)
        self.hw = hw

    def encode_image(self, normalised):
        return torch.tanh(torch.tanh(normalised.flatten(1) @ self.w1.T) @ self.w2.T)

    def encode_text(self, texts):
        out = []
        for s in texts:
            v = sum(self.chars[ord(c) % 128] * math.cos(0.37 * i) for i, c in enumerate(s))
            out.append(torch.tanh(v / len(s) ** 0.5) @ self.wt.T + self.bt)
        return torch.stack(out)

    # the official CLIPLoss methods (losses/clip_loss.py)
    def ref_image_features(self, img_pm1):
        x = (img_pm1 - (-1.0)) / 2.0                                 # Normalize(mean=-1, std=2): [-1, 1] -> [0, 1]
        f = self.encode_image((x - self.mean) / self.std)            # (Resize, CenterCrop: identity) + Normalize
        return f / f.clone().norm(dim=-1, keepdim=True)

    def ref_text_features(self, text, templates=IMAGENET_TEMPLATES):
        f = self.encode_text([t.format(text) for t in templates])
        return f / f.norm(dim=-1, keepdim=True)

    def ref_text_direction(self, source, target):
        d = (self.ref_text_features(target) - self.ref_text_features(source)).mean(axis=0, keepdim=True)
        return d / d.norm(dim=-1, keepdim=True)

    def ref_directional_loss(self, src_img, target_img, text_direction):
        edit = self.ref_image_features(target_img) - self.ref_image_features(src_img)
        edit = edit / (edit.clone().norm(dim=-1, keepdim=True) + 1e-7)
        return (1.0 - torch.nn.CosineSimilarity()(edit, text_direction)).mean()

    def ref_cosine(self, source, target):  # set_t_edit_t_addnoise: the bare texts
        a, b = self.encode_text([source]), self.encode_text([target])
        return float(torch.nn.CosineSimilarity(dim=1, eps=1e-6)(a, b))

    # the pack's side: unit text embeddings (LocalCLIP.text_features) and image features of [0, 1] images
    # (LocalCLIP.image_features: losses.clip.clip_preprocess, then normalised)
    def text_features(self, texts):
        return F.normalize(self.encode_text(list(texts)), dim=-1)

    def image_features(self, images01):
        return F.normalize(self.encode_image(clip_preprocess(images01, self.hw, self.mean, self.std)), dim=-1)


# --- the official reference ------------------------------------------------------------------------------------------

def ref_model(unet, f, x, t, t_edit, coeff=1.0):
    """models/ddpm/diffusion.py forward with index 0: (et, et_modified)."""
    h, skip, temb = unet.encode(x, t)
    h2 = h * 1.0 + f(h, temb) * coeff if t >= t_edit else h
    return unet.decode(h, skip, temb), unet.decode(h2, skip, temb)


def ref_denoising_step(xt, t, t_next, et, et_modified, eta=0.0, z=None, edit=True, a=ALPHAS):
    """utils/diffusion_utils.py denoising_step, 'ddim' (index given: x0_t from et_modified)."""
    at = a[t]
    at_next = torch.ones_like(at) if t_next == -1 else a[t_next]
    x0_t = (xt - (et_modified if edit else et) * (1 - at).sqrt()) / at.sqrt()
    if eta == 0:
        xt_next = at_next.sqrt() * x0_t + (1 - at_next).sqrt() * et
    else:
        c1 = eta * ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
        c2 = ((1 - at_next) - c1 ** 2).sqrt()
        xt_next = at_next.sqrt() * x0_t + c2 * et + c1 * z
    return xt_next, x0_t


def official_seq(n, t0=999):
    seq = [int(s + 1e-6) for s in list(torch.linspace(0, 1, n, dtype=F64).numpy() * t0)]
    return seq, [-1] + list(seq[:-1])


def ref_generate(unet, f, x_lat, n, t_edit, t_addnoise, noises, coeff=1.0, mutate=None):
    """diffusion_latent.py save_image (the edit loop): eta 1 below t_addnoise, the shift at t >= t_edit."""
    seq, seq_next = official_seq(n)
    x = x_lat.clone()
    for k, (i, j) in enumerate(zip(reversed(seq), reversed(seq_next))):
        et, et_mod = ref_model(unet, f, x, i, t_edit if mutate != "edit_exclusive" else t_edit + 1, coeff)
        eta = 1.0 if (i < t_addnoise if mutate != "boost_inclusive" else i <= t_addnoise) else 0.0
        if mutate == "edit_wins" and i >= t_edit:  # the pack's rule before issue 24: no noise in edit steps
            eta = 0.0
        if mutate == "symmetric":                   # D_t from the shifted ε too (Theorem 1's ε-shift)
            et = et_mod
        a = ALPHAS if mutate != "alpha_off_by_one" else torch.cat([ALPHAS[1:], ALPHAS[-1:]])
        x, _ = ref_denoising_step(x, i, j, et, et_mod, eta, noises[k], a=a)
    return x


# --- the pack's side: its functions on the same toy, wired as the ComfyUI adapters wire them -------------------------

class ToyDirection:
    """A direction for hooks.hspace.HSpacePatch (the interface of hooks.directions): Δh = f(h, temb(t)) at the
    timestep the patch reads off the σ table."""

    def __init__(self, unet, f):
        self.unet, self.f, self.meta = unet, f, {}

    @property
    def channels(self):
        return ToyUNet.CH

    def delta_for(self, h, where: Where):
        return self.f(h, self.unet.temb(where.t))


def t_of(sigma) -> int:
    return int((SIGMAS.log() - math.log(float(sigma))).abs().argmin())


class PackToy:
    """pair / plain / denoise callables over the toy in ComfyUI's σ-space (x̂ = x/sqrt(ᾱ), D(x̂, σ) = x̂ − σ·ε(x̂/
    sqrt(1 + σ²), t)), the shift added by the pack's HSpacePatch at the bottleneck on the EDIT pass (the shared
    encoder: one encoder pass for both predictions)."""

    def __init__(self, unet, f, t_edit, strength=1.0):
        self.unet = unet
        self.patch = HSpacePatch(ToyDirection(unet, f), strength, math.inf, float(SIGMAS[t_edit]), "asymmetric",
                                 "both", "resize", SIGMAS.log(), step_scaling=False)

    def both(self, x, sigma, edit=True):
        t = t_of(sigma)
        h, skip, temb = self.unet.encode(x / (1 + sigma ** 2).sqrt(), t)
        p_orig = x - sigma * self.unet.decode(h, skip, temb)
        if not edit:
            return p_orig, None
        opts = {"block": ("output", 0), "sigmas": torch.tensor([float(sigma)], dtype=F64), PASS_KEY: EDIT}
        h2, _ = self.patch(h, skip, opts)
        return p_orig, x - sigma * self.unet.decode(h2, skip, temb)

    def pair(self, x, sigma):
        p_orig, p_edit = self.both(x, sigma)
        return p_orig.detach(), p_edit

    def plain(self, x, sigma):
        return self.both(x, sigma, edit=False)[0]

    def denoise(self, x, sigma, edit):
        with torch.no_grad():
            return self.both(x, sigma, edit)

    def edit_at(self, sigma: float) -> bool:  # adapters.asyrp.AsyrpSampler.edit_at
        return self.patch.mode == "asymmetric" and self.patch.active(sigma)


def pack_sigmas(seq) -> torch.Tensor:
    return torch.cat([SIGMAS[list(reversed(seq))], torch.zeros(1, dtype=F64)])


def pack_generate(unet, f, x_lat, n, t_edit, t_boost, noises, strength=1.0):
    seq, _ = official_seq(n)
    sig = pack_sigmas(seq)
    toy = PackToy(unet, f, t_edit, strength)
    index = {float(s): k for k, s in enumerate(sig[:-1])}
    sigma_boost = float(SIGMAS[t_boost]) if t_boost > 0 else 0.0  # AsyrpSampler: ms.sigma(t_boost)
    x = asyrp.asyrp_sample(toy.denoise, x_lat / ALPHAS[-1].sqrt(), sig, toy.edit_at, sigma_boost, 1.0,
                           lambda s, s_next: noises[index[float(s)]])
    return x  # σ = 0: x̂ = x


# --- the tests -------------------------------------------------------------------------------------------------------

def toy_world(seed=0):
    unet, f = ToyUNet(seed), DeltaBlock()
    x_lat = torch.randn(1, 3, 8, 8, generator=gen(seed + 1), dtype=F64)
    noises = [torch.randn(1, 3, 8, 8, generator=gen(100 + k), dtype=F64) for k in range(40)]
    return unet, f, x_lat, noises


def test_the_asymmetric_step_and_the_boosted_step_equal_the_official_denoising_step():
    unet, f, x_lat, noises = toy_world()
    worst = 0.0
    with torch.no_grad():
        for t, t_next in ((999, 949), (600, 550), (180, 130), (40, -1)):
            x = x_lat * 0.7
            et, et_mod = ref_model(unet, f, x, t, 0)
            s = SIGMAS[t]
            s_next = torch.zeros((), dtype=F64) if t_next == -1 else SIGMAS[t_next]
            p_orig, p_edit = PackToy(unet, f, 0).denoise(x / ALPHAS[t].sqrt(), s, True)
            a_next = 1.0 if t_next == -1 else ALPHAS[t_next]
            ref0, _ = ref_denoising_step(x, t, t_next, et, et_mod, 0.0)
            ref1, _ = ref_denoising_step(x, t, t_next, et, et_mod, 1.0, noises[0])
            pack0 = asyrp.asyrp_step(x / ALPHAS[t].sqrt(), s, s_next, p_orig, p_edit) * math.sqrt(a_next)
            pack1 = (asyrp.asyrp_boost_step(x / ALPHAS[t].sqrt(), s, s_next, p_orig, p_edit, noises[0])
                     * math.sqrt(a_next))
            worst = max(worst, rel(pack0, ref0), rel(pack1, ref1))
            if t_next != -1:  # (the last step is x0_t: no D_t, no noise)
                assert rel(pack0, ref_denoising_step(x, t, t_next, et_mod, et_mod, 0.0)[0]) > MUT  # D_t from ε_edit
                assert rel(pack1, ref0) > MUT  # the noise term is there
    assert worst < TOL, worst


@pytest.mark.parametrize("t_edit,t_boost", [(525, 210), (315, 630)])
def test_the_edit_and_boost_trajectory_equals_the_official_generative_process(t_edit, t_boost):
    """20 steps of the official grid (… 210, 262, 315, … 525, 578, 630, …), the shift at t >= t_edit, η = 1 below
    t_boost (both on the grid, so that the boundaries are tested). (315, 630): t_boost above t_edit, where the
    official code boosts the edit steps below t_boost too (issue 24, item 6; the pack gave the edit step priority
    before)."""
    unet, f, x_lat, noises = toy_world()
    with torch.no_grad():
        ref = ref_generate(unet, f, x_lat, 20, t_edit, t_boost, noises)
        pack = pack_generate(unet, f, x_lat, 20, t_edit, t_boost, noises)
        plain = ref_generate(unet, f, x_lat, 20, 1000, t_boost, noises)
        assert rel(ref, plain) > 0.05  # the edit is real
        assert rel(pack, ref) < TOL, rel(pack, ref)
        mutations = {m: rel(ref_generate(unet, f, x_lat, 20, t_edit, t_boost, noises, mutate=m), pack)
                     for m in ("symmetric", "edit_exclusive", "boost_inclusive", "alpha_off_by_one")}
        if t_boost > t_edit:
            mutations["edit_wins"] = rel(ref_generate(unet, f, x_lat, 20, t_edit, t_boost, noises, mutate="edit_wins"),
                                         pack)
        assert all(v > MUT for v in mutations.values()), mutations


def test_the_text_direction_averages_the_official_templates():
    clip = ToyCLIP()
    ref = clip.ref_text_direction("face", "smiling face")[0]
    pack = clip_text_direction(clip.text_features, "face", "smiling face")
    # the list itself, checked against the official file independently of the pack: the sha256 of
    # '\n'.join(imagenet_templates) of kwonminki/Asyrp_official a6c82dc utils/text_templates.py (79 entries)
    assert len(IMAGENET_TEMPLATES) == 79 and hashlib.sha256("\n".join(IMAGENET_TEMPLATES).encode()).hexdigest() == \
        "9cf11dc6bfc24c775bd4a500a616fde36d9f19a7c61234bdd111606bd649a0ef"
    assert rel(pack, ref) < TOL, rel(pack, ref)
    bare = clip_text_direction(clip.text_features, "face", "smiling face", templates=None)
    assert rel(F.normalize(bare, dim=-1), pack) > MUT  # the bare texts (the pack before issue 24)
    first = clip.ref_text_features("smiling face")[:1] - clip.ref_text_features("face")[:1]
    assert rel(F.normalize(first[0], dim=-1), pack) > MUT  # one template only
    # normalising each template's embedding before the mean matters
    raw = (clip.encode_text([t.format("smiling face") for t in IMAGENET_TEMPLATES])
           - clip.encode_text([t.format("face") for t in IMAGENET_TEMPLATES])).mean(0)
    assert rel(F.normalize(raw, dim=-1), pack) > MUT


def run_reference_training(unet, f, clip, x_lats, x0s, n, t_edit, loss, epochs, lr, l1_w, clip_w, step_size,
                           mutate=None):
    """diffusion_latent.py run_training (SGD, weight decay 0, StepLR per pass) on f (modified in place)."""
    seq, _ = official_seq(n)
    seq_train = [t for t in seq if t >= t_edit]
    seq_train_next = [-1] + list(seq_train[:-1])
    cosine = clip.ref_cosine("face", "smiling face")
    if loss == "official":
        text_dir = clip.ref_text_direction("face", "smiling face")
    else:  # the paper's ΔT = E_T(y_trg) − E_T(y_src) of the bare texts
        bare = clip.encode_text(["face", "smiling face"])
        bare = bare / bare.norm(dim=-1, keepdim=True)
        text_dir = (bare[1] - bare[0])[None]
    opt = torch.optim.SGD(list(f.parameters()), weight_decay=0, lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=0.1)
    losses = []
    for _ in range(epochs):
        for x_lat, x0 in zip(x_lats, x0s):
            x_origin = xt_next = x_lat
            pairs = list(zip(reversed(seq_train), reversed(seq_train_next)))
            if mutate == "window_off_by_one":
                pairs = pairs[1:]
            for i, j in pairs:
                opt.zero_grad()
                et, et_mod = ref_model(unet, f, xt_next.detach(), i, t_edit)
                xt_next, x0_t = ref_denoising_step(xt_next.detach(), i, j, et, et_mod, 0.0)
                with torch.no_grad():  # denoising_step without index: the plain forward
                    eo, _ = ref_model(unet, f, x_origin.detach(), i, 1000)
                    x_origin, x0_t_origin = ref_denoising_step(x_origin.detach(), i, j, eo, eo, 0.0, edit=False)
                loss_l1 = torch.nn.L1Loss()(x0_t, x0_t_origin)
                if loss == "official":
                    source = x0_t_origin if mutate == "source_p_src" else x0
                    l_dir = clip.ref_directional_loss(source, x0_t, text_dir)
                    loss_clip = -torch.log((2 - l_dir) / 2) if mutate != "linear_clip" else l_dir
                else:
                    loss_clip = clip.ref_directional_loss(x0_t_origin, x0_t, text_dir)
                w1 = l1_w * (cosine if mutate != "no_cosine" else 1.0)
                total = 0 + w1 * loss_l1 + clip_w * loss_clip
                total.backward()
                opt.step()
                losses.append(float(total.detach()))
        sched.step()
    return losses


def run_pack_training(unet, f, clip, x_lats, x0s, n, t_edit, loss, epochs, lr, l1_w, clip_w, step_size):
    """optim.hspace.train_direction on the same toy, wired as adapters.hspace_train wires it: the window of the
    official grid from the top to the first level below t_edit, λ_recon = recon_mult·cos, the CLIP source x0's
    features computed once (official) or P_src's each step (paper)."""
    seq, _ = official_seq(n)
    sig = pack_sigmas(seq)
    k = int((sig[:-1] >= SIGMAS[t_edit]).sum())
    toy = PackToy(unet, f, t_edit)
    templates = IMAGENET_TEMPLATES if loss == "official" else None
    text_dir = clip_text_direction(clip.text_features, "face", "smiling face", templates)

    def features(p):  # decode_01 of a pixel model's prediction, then CLIP
        return clip.image_features((p + 1) / 2)

    def clip_loss(p_edit, source):
        if loss != "official":
            with torch.no_grad():
                source = features(source)
        return directional_clip_loss(features(p_edit), source, text_dir)

    with torch.no_grad():
        sources = [features(x0) for x0 in x0s]
    cfg = TrainConfig(lambda_clip=clip_w, lambda_recon=l1_w * clip.ref_cosine("face", "smiling face"), lr=lr,
                      epochs=epochs, lr_step_epochs=step_size, lr_gamma=0.1, loss=loss, optimizer="sgd")
    starts = [x / ALPHAS[-1].sqrt() for x in x_lats]
    return train_direction(f.parameters(), toy.pair, toy.plain, clip_loss, starts, sig[:k + 1], cfg,
                           clip_sources=sources)


TRAIN = dict(n=10, t_edit=500, epochs=2, lr=0.05, l1_w=3.0, clip_w=1.0, step_size=1)


def trained(loss, mutate=None, pack=False):
    unet, f, _, _ = toy_world()
    clip = ToyCLIP()
    x_lats = [torch.randn(1, 3, 8, 8, generator=gen(20 + k), dtype=F64) for k in range(2)]
    x0s = [torch.tanh(torch.randn(1, 3, 8, 8, generator=gen(30 + k), dtype=F64)) for k in range(2)]  # real images
    f = copy.deepcopy(f)
    if pack:
        losses = run_pack_training(unet, f, clip, x_lats, x0s, loss=loss, **TRAIN)
    else:
        losses = run_reference_training(unet, f, clip, x_lats, x0s, loss=loss, mutate=mutate, **TRAIN)
    return f, losses


def params(f):
    return torch.cat([p.detach().flatten() for p in f.parameters()])


@pytest.mark.parametrize("loss", ["official", "paper"])
def test_f_t_training_equals_the_official_loop(loss):
    """Every step's loss and the trained f_t's weights, under the official loss (x0 as CLIP's source, −log form, the
    templated text direction) and the paper's (P_src, λ·L_dir, bare texts); 5 steps × 2 images × 2 epochs."""
    f_ref, l_ref = trained(loss)
    f_pack, l_pack = trained(loss, pack=True)
    assert len(l_pack) == len(l_ref) == 20
    w0 = params(DeltaBlock())
    assert rel(params(f_ref), w0) > 1e-3  # it trained
    assert rel(torch.tensor(l_pack, dtype=F64), torch.tensor(l_ref, dtype=F64)) < TOL
    assert rel(params(f_pack) - w0, params(f_ref) - w0) < TOL, rel(params(f_pack) - w0, params(f_ref) - w0)
    mutations = ["no_cosine", "window_off_by_one"]
    if loss == "official":
        mutations += ["source_p_src", "linear_clip"]
    for m in mutations:
        f_mut, _ = trained(loss, mutate=m)
        assert rel(params(f_mut) - w0, params(f_pack) - w0) > MUT, m


def test_the_paper_and_the_official_loss_train_different_edits():
    """The documented difference between the two losses (issue 24, item 5): the edits of f_t trained under each,
    from the same start, differ by a sizeable fraction of the edit itself."""
    unet, _, x_lat, noises = toy_world()
    f_off, _ = trained("official", pack=True)
    f_pap, _ = trained("paper", pack=True)
    with torch.no_grad():
        plain = pack_generate(unet, f_off, x_lat, 10, 500, 0, noises, strength=0.0)
        e_off = pack_generate(unet, f_off, x_lat, 10, 500, 0, noises)
        e_pap = pack_generate(unet, f_pap, x_lat, 10, 500, 0, noises)
    size = rel(e_pap - e_off, e_off - plain)
    assert 0.1 < size < 10, size


def test_the_float32_alpha_table_of_the_official_extract_is_the_only_rounding_gap():
    """The official ``extract`` gathers ᾱ as torch.float (float32); the pack works in float64 here: the trajectory
    moves by about float32's resolution, far below any mutation above."""
    unet, f, x_lat, noises = toy_world()
    a32 = ALPHAS.float().double()
    seq, seq_next = official_seq(20)
    with torch.no_grad():
        x = x_lat.clone()
        for k, (i, j) in enumerate(zip(reversed(seq), reversed(seq_next))):
            et, et_mod = ref_model(unet, f, x, i, 500)
            x, _ = ref_denoising_step(x, i, j, et, et_mod, 1.0 if i < 200 else 0.0, noises[k], a=a32)
        pack = pack_generate(unet, f, x_lat, 20, 500, 200, noises)
    assert 1e-9 < rel(x, pack) < 1e-5, rel(x, pack)


def test_step_scaling_is_the_timestep_spacing_ratio_not_n_train_over_n_test():
    """A documented difference: the official test scales f_t by n_train/n_test (``run_test``: ``scaling_factor =
    n_train_step/n_test_step·hs_coeff_delta_h``); the pack by Δt_gen/Δt_train, the ratio of timestep spacings
    (Δt_train = the training window's mean spacing, ``adapters.hspace_train.training_window``). Trained with S = 40
    on the official grid int(i·999/39) and t_edit 500 (20 steps, 999 → 486: Δt_train = 25.65) and applied on the
    1000-step grid (Δt_gen = 1): 0.03899 per step in the pack against 0.04, 0.975×; summed over the 500 steps with
    t ≥ 500, 19.49 against 20.0."""
    seq40, _ = official_seq(40)
    seq1000, _ = official_seq(1000)
    window40 = [t for t in seq40 if t >= 500]
    below = max(t for t in seq40 if t < 500)
    train_dt = (999 - below) / len(window40)  # the window's mean spacing, as training_window computes it
    assert (len(window40), below, train_dt) == (20, 486, 25.65)
    d = ImplicitDirection(None, {"train_dt": str(train_dt)})
    patch = HSpacePatch(d, 1.0, math.inf, float(SIGMAS[500]), "asymmetric", log_sigmas=SIGMAS.log())
    sched = pack_sigmas(seq1000)
    scales = [d.step_scale(patch.where(float(SIGMAS[t]), {"sample_sigmas": sched})) for t in seq1000 if t >= 500]
    official = 40 / 1000
    assert len(scales) == 500 and max(abs(x - 1 / 25.65) for x in scales) < 1e-9
    assert abs(scales[0] / official - 0.9747) < 1e-4, scales[0] / official
    assert abs(sum(scales) - 19.493) < 1e-3  # the official n_train/n_test over 500 steps: 20
