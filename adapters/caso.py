"""CASO on ComfyUI models (``optim.caso``): a class embedding as the stock CLIP's tokens, encoded the way
CLIPTextEncode encodes the prompt ``embedding:<class file>`` (so the pack's conditioning and the stock one are the
same tensors), several classes stitched, and differentiably for training
(``adapters.clip.differentiable_text_encoder``); a linear probe on a stock CLIP_VISION; training on a ComfyUI model,
the windowed guidance patch, the edit and the encoders' fingerprints."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..hooks.run_state import run_state
from ..optim import caso
from .progress import warn

# ComfyUI tokenizer key -> the embedding file's tensor key (SD1.x: l; SD2.x: h; SDXL: l and g)
ENCODER_OF = {"l": "clip_l", "g": "clip_g", "h": "clip_h"}


def class_tokens(clip, embedding: dict, who: str) -> dict:
    """The tokens of ``embedding:<file>`` built in memory: per text encoder, [BOS, the class's n rows, EOS, pad…]
    (77 entries, as the stock tokenizer writes them). ``embedding``: {"clip_l": [n, 768], ("clip_g": [n, 1280])}; the
    rows may carry gradients."""
    base = clip.tokenize("")
    out = {}
    for key, chunks in base.items():
        name = ENCODER_OF.get(key, key)
        if name not in embedding:
            raise ValueError(f"{who}: this CLIP has a {name} text encoder and the embedding has {sorted(embedding)}; "
                             f"use an embedding trained with this model's CLIP")
        e = embedding[name]
        width = getattr(getattr(clip.tokenizer, name, None), "embedding_size", e.shape[-1])
        if e.ndim != 2 or e.shape[-1] != width:
            raise ValueError(f"{who}: the embedding's {name} tensor is {tuple(e.shape)}, this CLIP's {name} takes "
                             f"[n, {width}]; use an embedding trained with this model's CLIP")
        chunk = chunks[0]
        rows = [(e[i], 1.0) for i in range(e.shape[0])]
        if len(rows) > len(chunk) - 2:
            raise ValueError(f"{who}: {len(rows)} embedding rows do not fit one {len(chunk)}-token chunk")
        out[key] = [[chunk[0], *rows, *chunk[1:len(chunk) - len(rows)]]]
    return out


def encode_class(clip, embedding: dict, who: str):
    """The CONDITIONING of a class embedding: what CLIPTextEncode gives for ``embedding:<its file>``."""
    return clip.encode_from_tokens_scheduled(class_tokens(clip, embedding, who))


STITCHES = ("tokens", "concat_conditioning")


def stitch(clip, embeddings: list, mode: str, who: str):
    """The CONDITIONING of several class embeddings (several attributes in one edit, the paper's Fig. 5a):
    ``tokens`` writes their rows one after another in one prompt, [BOS, e_a, e_b, EOS, …], which is what the stock
    CLIPTextEncode gives for ``embedding:a embedding:b``; ``concat_conditioning`` encodes each alone and joins the
    tensors along the token axis (the stock ConditioningConcat: [1, 77·n, D], the first one's pooled output), for a
    class trained alone at position 1 that does not work at position 2."""
    if not embeddings:
        raise ValueError(f"{who}: no class to encode")
    if mode == "tokens":
        rows = {}
        for e in embeddings:
            for name, t in e.items():
                rows.setdefault(name, []).append(t)
        keys = [set(e) for e in embeddings]
        if any(k != keys[0] for k in keys):
            raise ValueError(f"{who}: the classes were trained for different text encoders ({[sorted(k) for k in keys]}"
                             f"); stitch classes of this model's CLIP only")
        return encode_class(clip, {name: torch.cat(t) for name, t in rows.items()}, who)
    if mode == "concat_conditioning":
        conds = [encode_class(clip, e, who) for e in embeddings]
        first = conds[0]
        return [[torch.cat([c[0][0] for c in conds], dim=1), dict(first[0][1])]]
    raise ValueError(f"{who}: stitch must be one of {STITCHES}, got {mode!r}")


def class_cond_tensor(clip, embedding: dict, who: str) -> torch.Tensor:
    """The cross-attention tensor [1, 77, D] of a class embedding, differentiable in it (call inside
    ``differentiable_text_encoder``)."""
    return clip.encode_from_tokens(class_tokens(clip, embedding, who), return_pooled=True, return_dict=True)["cond"]


def linear_probe(clip_vision, images: torch.Tensor, labels: list, class_names: list, steps: int,
                 weight_decay: float, who: str):
    """(ImageClassifier, training accuracy, feature width): a linear head fitted on a stock CLIP_VISION's normalised
    image embedding of the labelled ``images`` [B, H, W, 3] (``losses.classifiers.fit_linear_probe``), classifying
    through the differentiable tower (``adapters.clip.ComfyCLIPVision``)."""
    from ..losses import classifiers
    from .clip import ComfyCLIPVision
    from .run import grad_context
    with grad_context():
        try:
            encoder = ComfyCLIPVision(clip_vision)
        except ValueError as e:
            raise ValueError(f"{who}: {e}") from None
        with torch.no_grad():
            feats = torch.cat([encoder.image_features(x.movedim(-1, 1)) for x in images.split(16)])
        w, b, acc = classifiers.fit_linear_probe(feats, labels, len(class_names), steps, weight_decay=weight_decay)
    return classifiers.ImageClassifier.linear_probe(encoder, w, b, class_names), acc, feats.shape[1]


# -- training -----------------------------------------------------------------------------------------------------

INITS = ("repo_uniform", "zeros")


@dataclass
class CASOSettings:
    n_tokens: int = 1
    init: str = "repo_uniform"     # e = W·1 + b with W, b ~ U(−1, 1) as the official code, or zeros
    level: float = 0.4             # L as a fraction of T: 0.4 (t = 401) as the official code, 0.3 for faces
    ddim_steps: int = 50           # T, which fixes t_L = 1 + (1000 / T)·round(level·T)
    config: caso.TrainConfig = field(default_factory=caso.TrainConfig)


def training_timestep(level: float, ddim_steps: int) -> int:
    """t_L: the DDIM step round(level·T) of ComfyUI's ddim_uniform grid, t = 1 + (1000/T)·k (``optim.caso.
    grid_timestep``, the map the edit window uses too)."""
    return caso.grid_timestep(level, ddim_steps)


def encoder_widths(clip) -> dict:
    """{embedding file key: width} of a CLIP's text encoders, in its tokenizer order."""
    return {ENCODER_OF.get(k, k): int(getattr(getattr(clip.tokenizer, ENCODER_OF.get(k, k), None), "embedding_size",
                                              0) or 0) for k in clip.tokenize("")}


def split_rows(e: torch.Tensor, widths: dict) -> dict:
    """[n, ΣD] -> {encoder key: [n, D]} (the optimised tensor holds every encoder's rows side by side)."""
    out, k = {}, 0
    for name, d in widths.items():
        out[name] = e[:, k:k + d]
        k += d
    return out


def mirror_latents(vae, images: torch.Tensor, samples: torch.Tensor, who: str, tolerance: float = 1e-2):
    """The VAE latents of ``images`` [B, H, W, C] in [0, 1] mirrored left-right in pixel space (cropped first as VAE
    Encode crops), for the official flip of an image before the encoder. ``samples`` (the training LATENT) must be
    this VAE's encoding of these images: checked by encoding them too (relative difference within ``tolerance``),
    so that a sample and its mirror are the same image."""
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"{who}: images must be an IMAGE batch [B, H, W, 3], got {tuple(images.shape)}")
    pixels = images[..., :3]
    crop = getattr(vae, "vae_encode_crop_pixels", None)
    if crop is not None:
        pixels = crop(pixels)
    with torch.inference_mode():
        plain = vae.encode(pixels)
        if plain.shape != samples.shape or float((plain.float().cpu() - samples.float().cpu()).norm()) > \
                tolerance * float(samples.float().norm()):
            raise ValueError(f"{who}: the latent {tuple(samples.shape)} is not this VAE's encoding of images "
                             f"{tuple(images.shape)}; connect the images the latent was encoded from (VAE Encode "
                             f"with this VAE), or disconnect images to mirror the latent instead")
        return vae.encode(pixels.flip(2))


def train(model, clip, vae, classifier, samples: torch.Tensor, s: CASOSettings, who: str, on_step=None,
          mirrored: torch.Tensor = None):
    """Train one embedding per class of ``classifier`` on the images' latents ``samples`` (VAE space); ``mirrored``:
    the latents of the mirror images (``mirror_latents``; without them a flip mirrors the latent). Returns (list of
    ClassEmbedding, optim.caso.TrainResult)."""
    import comfy.model_management
    from .checks import model_family, require_unet, require_vp_model
    from .clip import differentiable_text_encoder
    from .run import block_checkpointing, decode_01, private_for_grad, vae_decoder
    require_unet(model, who)
    require_vp_model(model.get_model_object("model_sampling"), model_family(model.model), who)
    if s.init not in INITS:
        raise ValueError(f"{who}: init must be one of {INITS}, got {s.init!r}")
    widths = encoder_widths(clip)
    if not all(widths.values()):
        raise ValueError(f"{who}: this CLIP's text encoders {list(widths)} do not state their width; use an SD1.x, "
                         f"SD2.x or SDXL CLIP")
    k = len(classifier.class_names)
    t_L = training_timestep(s.level, s.ddim_steps)
    sigma = float(model.get_model_object("model_sampling").sigma(torch.tensor(t_L)))
    gen = torch.Generator().manual_seed(int(s.config.seed))
    shape = (k, s.n_tokens, sum(widths.values()))
    init = (torch.rand(shape, generator=gen) * 2 - 1 + torch.rand(shape, generator=gen) * 2 - 1
            if s.init == "repo_uniform" else torch.zeros(shape))
    # private copies of the U-Net, the VAE and the CLIP (a CLIP_VISION inside the classifier gets one on first use),
    # loaded whole, released after training; the shared models are not changed
    with private_for_grad(who, model, vae=vae, clip=clip) as private:
        base, vae = private.model.model, private.vae
        device = comfy.model_management.get_torch_device()
        latents = base.process_latent_in(samples.clone().to(device, torch.float32))
        mirror = None if mirrored is None else base.process_latent_in(mirrored.clone().to(device, torch.float32))
        with torch.no_grad():
            null = private.clip.encode_from_tokens(clip.tokenize(""), return_pooled=True, return_dict=True)

        def conds(cond: dict, x):
            c = base.extra_conds(cross_attn=cond["cond"].to(device), pooled_output=cond.get("pooled_output"),
                                 noise=x, device=device)
            return {name: v.process_cond(batch_size=x.shape[0], device=device).cond for name, v in c.items()}

        def denoise(x, cond):
            s_in = x.new_full((x.shape[0],), sigma)
            # x as it is (float32): apply_model casts the model input to the compute dtype itself; the storage dtype
            # (get_dtype(): fp8 on a quantized checkpoint) would round the latent
            return base.apply_model(x, s_in, **conds(null if cond is None else cond, x)).float()

        with differentiable_text_encoder(clip, who) as text:  # private.clip, its layers out of place
            def encode(e):
                return text.encode_from_tokens(class_tokens(text, split_rows(e, widths), who), return_pooled=True,
                                               return_dict=True)
            # checkpointing: besides its segments (optim.caso.segment), the U-Net's and the decoder's blocks, so that a
            # segment's recomputation holds one block's activations at a time
            try:
                with block_checkpointing(base.diffusion_model, vae_decoder(vae), enabled=s.config.checkpointing):
                    result = caso.train_embeddings(init.to(device), latents, sigma, encode, denoise,
                                                   lambda z: decode_01(vae, base, z), classifier.logits, s.config,
                                                   on_step, mirrored=mirror)
            except caso.CASOError as e:
                raise ValueError(f"{who}: {e}") from None
    embeddings = result.embeddings.cpu()
    return [caso.ClassEmbedding(name, i, split_rows(embeddings[i], widths), {}) for i, name in
            enumerate(classifier.class_names)], result


# -- guidance and editing -----------------------------------------------------------------------------------------

def window_sigmas(model, window_start: float, window_end: float, steps: int = 50) -> tuple[float, float]:
    """(σ_start, σ_end) of a window given as fractions of the timesteps on the ``steps``-step DDIM grid, the map of the
    training level (``optim.caso.window_timesteps``: 0.3 → t 301 at 50 steps)."""
    ms = model.get_model_object("model_sampling")
    n = int(getattr(ms, "sigmas", torch.zeros(1000)).shape[0])
    t_start, t_end = caso.window_timesteps(window_start, window_end, steps, n)
    return float(ms.sigma(torch.tensor(t_start))), float(ms.sigma(torch.tensor(t_end)))


GUIDANCE_FIX = ("set its steps to the sampler's step count and use the ddim_uniform scheduler, or widen the window "
                "(window_start = window_end guides the one step of the steps-step grid at that timestep)")


def check_window(sigmas, sigma_start: float, sigma_end: float, who: str, fix: str = GUIDANCE_FIX) -> int:
    """The number of steps of a schedule (its σ's but the last, where the sampler evaluates the model) that lie in the
    window; a ValueError naming ``who`` and the fix when none does (the guidance would silently do nothing)."""
    steps = [float(x) for x in torch.as_tensor(sigmas).flatten()[:-1]]
    count = sum(caso.in_window(x, sigma_start, sigma_end) for x in steps)
    if not count:
        where = f"σ {steps[0]:.4g} … {steps[-1]:.4g}, {len(steps)} steps" if steps else "no step"
        raise ValueError(f"{who}: no step of the sampler's schedule ({where}) lies in the window σ "
                         f"[{sigma_end:.4g}, {sigma_start:.4g}], so nothing would be guided; {fix}")
    return count


class WindowedGuidance:
    """A ``sampler_post_cfg_function``: D = D_u + λ·(D_c − D_u) while the step's σ is in [σ_end, σ_start], D_u
    outside (CASO's edit, ``optim.caso.guided``), for any λ (negative too, which the stock cfg widgets do not allow).
    It replaces the stock combination from the two predictions themselves (a ``sampler_cfg_function`` would return
    x − D, and x − (x − D_u) is not D_u to the bit), so λ = 0 is the negative prompt's prediction exactly. A sampling
    run whose schedule has no step in the window gets a warning naming the node and the fix at its first step
    (``check_window``): not an error, since one pass of a split sampling (KSamplerAdvanced's start/end steps) may
    rightly lie outside the window. CASO Edit, which runs the whole schedule, refuses such a window."""

    def __init__(self, scale: float, sigma_start: float, sigma_end: float, who: str = "CASO Guidance"):
        self.scale, self.sigma_start, self.sigma_end, self.who = float(scale), sigma_start, sigma_end, who

    def __call__(self, args):
        # immutable (clones share it since ComfyUI 0.14): "checked once" is the sampling run's (hooks.run_state)
        opts = args.get("model_options", {}).get("transformer_options")
        sigmas = None if opts is None else opts.get("sample_sigmas")
        if sigmas is not None and run_state(opts, create=True).first(("caso-window", id(self))):
            try:
                check_window(sigmas, self.sigma_start, self.sigma_end, self.who)
            except ValueError as e:  # a warning, not an error: one pass of a split sampling may lie outside it
                who, _, text = str(e).partition(": ")
                warn(who, f"{text} (this run is the negative prompt's sampling; fine for one pass of a split "
                          f"sampling, e.g. KSamplerAdvanced's steps before the window)")
        sigma = float(args["sigma"].flatten()[0])
        if not caso.in_window(sigma, self.sigma_start, self.sigma_end):
            return args["uncond_denoised"]
        return caso.guided(args["uncond_denoised"], args["cond_denoised"], self.scale)


class UncondOutsideWindow:
    """A ``model_function_wrapper`` that, at a step outside the window, evaluates only the batch's unconditional
    chunks and gives the conditional ones a copy of them: ``WindowedGuidance`` returns D_u there, so the conditional
    prediction would be computed for nothing (a single-step window makes one conditional call in all). Inside the
    window, or with a ControlNet attached, the call is the stock one. A wrapper already on the model runs inside
    this one. Immutable (clones share it): no state besides the window and the wrapper it wraps."""

    def __init__(self, sigma_start: float, sigma_end: float, inner=None):
        self.sigma_start, self.sigma_end, self.inner = sigma_start, sigma_end, inner

    def _call(self, apply_model, args):
        if self.inner is not None:
            return self.inner(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def __call__(self, apply_model, args):
        parts = list(args["cond_or_uncond"])
        sigma = float(args["timestep"].flatten()[0])
        if (caso.in_window(sigma, self.sigma_start, self.sigma_end) or 0 not in parts or 1 not in parts
                or args["c"].get("control") is not None):
            return self._call(apply_model, args)
        x = args["input"]
        n, b = x.shape[0], x.shape[0] // len(parts)
        keep = [i for i, k in enumerate(parts) if k == 1]
        rows = torch.cat([torch.arange(i * b, (i + 1) * b) for i in keep]).to(x.device)
        c = {}
        for key, v in args["c"].items():
            if torch.is_tensor(v) and v.ndim and v.shape[0] == n:
                c[key] = v[rows]
            elif key == "transformer_options":
                c[key] = {**v, "cond_or_uncond": [1] * len(keep)}
            else:
                c[key] = v
        t = args["timestep"]
        out = self._call(apply_model, {"input": x[rows], "timestep": t[rows] if t.ndim and t.shape[0] == n else t,
                                       "c": c, "cond_or_uncond": [1] * len(keep)}).chunk(len(keep))
        return torch.cat([out[keep.index(i)] if k == 1 else out[0] for i, k in enumerate(parts)])


def guidance_patch(model, scale: float, window_start: float, window_end: float, who: str, steps: int = 50):
    """A clone of ``model`` whose guidance is ``WindowedGuidance`` (the cfg widget of the sampler is then ignored;
    the uncond pass runs even at cfg 1) and whose steps outside the window evaluate the unconditional prediction
    only (``UncondOutsideWindow``). The window's fractions are steps of the ``steps``-step DDIM grid."""
    try:
        sigmas = window_sigmas(model, window_start, window_end, steps)
    except ValueError as e:
        raise ValueError(f"{who}: {e}") from None
    m = model.clone()
    m.set_model_sampler_post_cfg_function(WindowedGuidance(scale, *sigmas, who), disable_cfg1_optimization=True)
    m.set_model_unet_function_wrapper(UncondOutsideWindow(*sigmas, m.model_options.get("model_function_wrapper")))
    return m


def edit(model, positive, negative, samples: torch.Tensor, steps: int, scale: float, window_start: float,
         window_end: float, inversion: str, seed: int, who: str):
    """CASO's edit (Eq. 6–7): invert the image to the window's start (DDIM with the null text, or forward noise with
    ``seed``), then DDIM down with the windowed guidance. Returns (edited, start) LATENT samples."""
    import comfy.sample
    import comfy.samplers
    from .ddim import DDIMInversionSampler
    from .run import run_with_cfg_guider
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", steps).cpu()
    try:
        sigma_start, sigma_end = window_sigmas(model, window_start, window_end, steps)
    except ValueError as e:
        raise ValueError(f"{who}: {e}") from None
    i0 = int((sigmas[:-1] > sigma_start * (1 + 1e-6)).sum())
    part = sigmas[i0:]
    if part.numel() < 2:
        raise ValueError(f"{who}: the window starts below the last step; raise window_start")
    check_window(part, sigma_start, sigma_end, who, "widen the window (its ends both lie above the grid's first step)")
    if inversion == "ddim":
        with torch.inference_mode():
            start = run_with_cfg_guider(model, negative, negative, 1.0, DDIMInversionSampler(), samples, part)
    elif inversion == "noise":
        noise = comfy.sample.prepare_noise(samples, seed)  # Eq. 8: x_σ = z0 + σ·ε at the window's start
        start = model.model.process_latent_out(model.model.process_latent_in(samples) + float(part[0]) * noise)
    else:
        raise ValueError(f"{who}: inversion must be ddim or noise, got {inversion!r}")
    guided_model = guidance_patch(model, scale, window_start, window_end, who, steps)
    out = run_with_cfg_guider(guided_model, positive, negative, 1.0, comfy.samplers.sampler_object("euler"), start,
                              part)
    return out, start


# -- files --------------------------------------------------------------------------------------------------------

def fingerprints(clip) -> dict:
    """{"te_clip_l": …, "te_clip_g": …}: short hashes of the CLIP's token-embedding tables (``artifacts.caso``)."""
    from ..artifacts.caso import fingerprint
    out = {}
    for name in encoder_widths(clip):
        enc = getattr(clip.cond_stage_model, name, None)
        table = getattr(getattr(getattr(getattr(getattr(enc, "transformer", None), "text_model", None), "embeddings",
                                        None), "token_embedding", None), "weight", None)
        if table is not None:
            out[f"te_{name}"] = fingerprint(table)
    return out


def check_fingerprints(clip, embedding, who: str) -> list:
    """Warnings for a class embedding trained with another text encoder (a fingerprint that differs)."""
    have = fingerprints(clip)
    return [f"{who}: {embedding.name} was trained with another {key[3:]} text encoder (fingerprint "
            f"{embedding.meta[key]} vs {value}); it may not edit as it did" for key, value in have.items()
            if embedding.meta.get(key) not in (None, value)]
