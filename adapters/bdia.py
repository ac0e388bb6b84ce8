"""BDIA (``samplers.bdia``) as ComfyUI SAMPLERs, the settings an inversion and its regeneration share, and the pair
LATENT it shares with EDICT (``adapters.edict.pair_latent``: ``samples`` = z_T at σ_0, the second latent z_{T−1} at
σ_1, the exact pair in the state dtype)."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from ..samplers import bdia, edict
from .edict import PairSamplerBase
from .progress import NodeName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BDIAOptions:
    """The settings that must be equal for an inversion and its regeneration."""
    gamma: float = bdia.DEFAULT_GAMMA
    state_dtype: str = "float64"

    def exactness_settings(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "state_dtype"}


class BDIABase(PairSamplerBase):
    WHO = "BDIA"
    NAN_HINT = "check the model (an fp16 overflow?) and the SIGMAS; a gamma near 1 keeps the inversion small."

    def __init__(self, options: BDIAOptions = BDIAOptions(), invert: bool = False):
        super().__init__(options.state_dtype)
        bdia.check_gamma(options.gamma, self.WHO, invert=invert)
        self.options = options

    def method_kwargs(self) -> dict:
        return dict(gamma=self.options.gamma)


class BDIASampler(BDIABase):
    """BDIA sampling as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: one model call a step (a DDIM step first,
    then BDIA steps). With ``pair`` (the state at sigmas[0] and sigmas[1], from BDIAInvert) it regenerates that pair
    instead and ignores the noise. Returns the state at the end of SIGMAS; ``self.pair`` keeps it and the one
    before it."""

    WHO = NodeName("BDIA Sampler (InvEdit)")

    def __init__(self, options: BDIAOptions = BDIAOptions(), pair=None):
        super().__init__(options, invert=False)
        self.start_pair = pair

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        run = self.setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise)
        sig = sigmas.to(run.device)
        bdia.check_bdia_schedule(sig, self.WHO)
        if self.start_pair is not None:
            z, z_next = (t.to(run.device, self.dtype) for t in self.start_pair)
            if z.shape != latent_image.shape:
                raise ValueError(f"{self.WHO}: the pair has shape {tuple(z.shape)}, the LATENT "
                                 f"{tuple(latent_image.shape)}.")
        else:
            z, z_next = self.start_from_noise(model_wrap, sigmas, noise, latent_image, run.device), None
        z_end, z_before = bdia.bdia_sample(run.denoiser, z, sig, z_next=z_next, **run.kwargs)
        self.keep((z_end, z_before), (edict.end_sigma(sig), sig[-2]), latent_image)
        return self.result("x").to(latent_image.dtype)


class BDIAInversionSampler(BDIABase):
    """BDIA inversion: the clean latent (the one the guider passes in, or ``start``: the same in model space in the
    state dtype) walked back up the descending SIGMAS; returns z_T (σ-space at sigmas[0]); ``self.pair`` keeps the
    exact (z_T, z_{T−1}) pair at (sigmas[0], sigmas[1])."""

    WHO = "BDIA inversion"

    def __init__(self, options: BDIAOptions = BDIAOptions(), start=None):
        super().__init__(options, invert=True)
        self.start = start

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        run = self.setup(model_wrap, sigmas, latent_image, denoise_mask, extra_args, callback, noise)
        sig = sigmas.to(run.device)
        z0 = self.clean_state(run, sig, latent_image, noise, self.start)
        z_t, z_t1 = bdia.bdia_invert(run.denoiser, z0, sig, **run.kwargs)
        self.keep((z_t, z_t1), (sig[0], sig[1]), latent_image)
        return self.result("x").to(latent_image.dtype)
