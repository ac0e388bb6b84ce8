"""The seven gradient nodes run on a world (``w``: a MODEL, its CLIP and VAE, prompts, an image latent, a classifier
and a loss, as tests/host/test_grad_private_host.py and test_precisions_host.py build it), and what a gradient node
must leave alone: the shared models' tensors, their inference flags and the stock KSampler's result."""
import math

import torch

from harness.shapes import data
from host_helpers import stock_ksampler

FAST_DOODL = dict(seed=1, steps=4, cfg=3.0, mix_p=0.93, iterations=1, lr=300.0, grad_clip=0.02, momentum=0.9,
                  perturb_std=1e-4, keep="last", backprop="reversible", pair_steps="shared")
INVERT = dict(steps=3, guidance=3.0, inner_steps=2, inner_decay=0.1, lr=0.01, lr_decay=0.01, early_stop=1e-5)


def stock(w):
    return stock_ksampler(w, 4)


class State(list):
    """``shared_state``'s list, with the ComfyUI loaded models there were when it was taken (``loaded``)."""
    loaded = frozenset()


def shared_state(w):
    """(name, tensor object, is_inference, value) of every parameter and buffer of the shared U-Net, VAE and CLIP,
    and (``.loaded``) the ids of the models ComfyUI has loaded now: a test module before may leave some there."""
    import comfy.model_management as mm
    out = State()
    out.loaded = frozenset(id(lm) for lm in mm.current_loaded_models)
    for tag, module in (("unet", w["model"].model), ("vae", w["vae"].first_stage_model),
                        ("clip", w["te"].cond_stage_model)):
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            out.append((f"{tag}.{name}", t, t.is_inference(), t.detach().clone()))
    return out


def assert_untouched(w, before, state):
    assert torch.equal(stock(w), before)  # the stock KSampler on the same MODEL: bit-identical latents
    now = {name: t for name, t, _, _ in shared_state(w)}
    assert set(now) == {name for name, _, _, _ in state}
    for name, t, inference, value in state:
        assert now[name] is t, name  # the same tensor object: nothing replaced in the shared model
        assert t.is_inference() == inference, name
        assert t.dtype == value.dtype, name
        now_, was = t.detach().float(), value.float()  # fp8 has no nan_to_num; float32 holds every fp8 / fp16 value
        assert torch.equal(now_.isnan(), was.isnan()), name
        assert torch.equal(now_.nan_to_num(0.0), was.nan_to_num(0.0)), name
    for m in (*w["model"].model.modules(), *w["vae"].first_stage_model.modules()):
        assert "forward" not in vars(m)  # no checkpointing or residual forward left on the shared modules
    import comfy.model_management as mm  # the private copies are gone from ComfyUI's loaded models
    shared = {id(w["model"].model), id(w["vae"].first_stage_model), id(w["te"].cond_stage_model)}
    extra = [lm for lm in mm.current_loaded_models if lm.model is not None and id(lm.model.model) not in shared
             and id(lm) not in state.loaded]
    assert not extra, extra


def doodl_optimize(w):
    import nodes
    with torch.inference_mode():
        lat = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
        return w["C"]["InvEditDOODLOptimize"].execute(model=w["model"], positive=w["enc"]["a circle"],
                                                       negative=w["enc"][""], vae=w["vae"], loss=w["loss"],
                                                       latent=lat, **FAST_DOODL)


def doodl_guidance(w):
    import comfy.sample
    C = w["C"]
    with torch.inference_mode():
        lat = torch.zeros(1, 4, 8, 8)
        sig = C["BasicScheduler"].execute(w["model"], "ddim_uniform", 3, 1.0)[0]
        sampler = C["InvEditDOODLGuidanceSampler"].execute(w["vae"], w["loss"], 200.0, 0)[0]
        return comfy.sample.sample_custom(w["model"], comfy.sample.prepare_noise(lat, 4), 3.0, sampler, sig,
                                          w["enc"]["a circle"], w["enc"][""], lat, disable_pbar=True, seed=4)


def stylediffusion(w):
    with torch.inference_mode():
        return w["C"]["InvEditStyleDiffusionInvert"].execute(
            model=w["model"], positive=w["enc"]["a red circle"], negative=w["enc"][""], latent=w["latent"],
            image=w["image"], clip_name="shapes-toy-clip", attn_weight=1.0, init="identity", warm_start=True, seed=0,
            grad_checkpointing=True, **INVERT)


def null_text(w):
    with torch.inference_mode():
        return w["C"]["InvEditNullTextInvert"].execute(model=w["model"], positive=w["enc"]["a red circle"],
                                                        negative=w["enc"][""], latent=w["latent"], seed=0, **INVERT)


def caso_train(w):
    with torch.inference_mode():
        lat = {"samples": w["vae"].encode(data.make_batch(2, 77).images.permute(0, 2, 3, 1))}
        return w["C"]["InvEditCASOTrain"].execute(model=w["model"], clip=w["te"], vae=w["vae"], classifier=w["clf"],
                                                   latent=lat, attribute="colour", steps=2, batch_size=2, scale=10.0,
                                                   level=0.4, lr=0.02, weight_decay=0.005, gamma=0.0, n_tokens=1,
                                                   init="repo_uniform", hflip=True, seed=0)


def hspace_train(w):
    with torch.inference_mode():
        return w["C"]["InvEditHSpaceTrainDirection"].execute(
            model=w["model"], vae=w["vae"], clip_name="shapes-toy-clip", neutral=w["enc"][""], latent=w["latent"],
            source_text="a red circle", target_text="a blue circle", init="inverted", steps=4, t_edit=500,
            lambda_clip=0.8, recon_mult=3.0, lr=0.003, epochs=1, batch_size=1, seed=0)


def csds_autograd(w):
    C = w["C"]
    with torch.inference_mode():
        enc = C["InvEditEMSEncodeEditPrompts"].execute(w["te"], "a red circle", "a blue circle", "blue", "").args
        return C["InvEditEMSEditSampler"].execute(
            model=w["model"], positive=enc[1], negative=enc[3], attribute=enc[2], latent_image=w["latent"], seed=3,
            steps=4, strength=0.75, strength_mode="diffusers", cfg=3.0, sampler_name="euler", scheduler="normal",
            iterations=2, lr_start=0.1, lr_end=0.01, lr_schedule="geometric", lambda_=0.5, csds_cfg=1.0,
            direction="toward_attribute", grad_mode="autograd", step_space="auto")


NODES = {"DOODL Optimize": doodl_optimize, "One-Step Guidance Sampler": doodl_guidance,
         "StyleDiffusion Invert": stylediffusion, "Null-text Invert": null_text, "CASO Train": caso_train,
         "h-space Train Direction": hspace_train, "EMS CSDS autograd": csds_autograd}


# -- what the precision and stock-patch tables run on a world (tests/host/test_precisions_host.py, test_patches_host.py)

def add_judges(w):
    """The world's held-out image, its latent, a classifier loss (blue) and the colour classifier, on ``w``."""
    w["image"] = data.make_batch(1, data.HELDOUT_SEED + 5, colour=0, shape=0).images.permute(0, 2, 3, 1)
    with torch.inference_mode():
        w["latent"] = {"samples": w["vae"].encode(w["image"])}
        w["loss"] = w["C"]["InvEditDOODLClassifierLoss"].execute(
            classifier="shapes_colour.safetensors", architecture="small_cnn", target="blue", num_classes=0,
            normalisation="none", mode="cross_entropy", weight=1.0, crops=2, crop_power=0.3, input_size=64).args[0]
        w["clf"] = w["C"]["InvEditClassifierLoad"].execute("shapes_colour.safetensors", "small_cnn", 0,
                                                           "none").args[0]
    return w


def _rms(t):
    return float(t.double().pow(2).mean().sqrt())


def ddim_regenerates(w, scheduler, steps, denoise, bound):
    """DDIM Invert ("a red circle", cfg 1) then the stock SamplerCustom (euler, no noise, the same sigmas): the
    regeneration within ``bound`` of the distance the inversion travelled."""
    C, src = w["C"], w["latent"]
    with torch.inference_mode():
        sig = C["BasicScheduler"].execute(w["model"], scheduler, steps, denoise)[0]
        inv = C["InvEditDDIMInvert"].execute(model=w["model"], positive=w["enc"]["a red circle"],
                                             negative=w["enc"][""], latent=src, sigmas=sig, cfg=1.0)[0]
        sampler = C["KSamplerSelect"].execute("euler")[0]
        rec = C["SamplerCustom"].execute(model=w["model"], add_noise=False, noise_seed=0, cfg=1.0,
                                         positive=w["enc"]["a red circle"], negative=w["enc"][""], sampler=sampler,
                                         sigmas=sig, latent_image=inv)[0]["samples"]
    err, travelled = _rms(rec - src["samples"]), _rms(inv["samples"] - src["samples"])
    assert err < bound * travelled, (err, travelled)
    return f"the stock sampler regenerates within {err / travelled:.1%} of the distance ({sig.numel() - 1} steps)"


def edict_round_trip(w):
    """EDICT Invert → Regenerate (4 official steps, cfg 3, float64 state): the LATENT back bit for bit."""
    C, src = w["C"], w["latent"]
    opts = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)
    with torch.inference_mode():
        sig = C["InvEditEDICTSigmas"].execute(w["model"], 4, "official_980_0", 1.0)[0]
        pair = C["InvEditEDICTInvert"].execute(model=w["model"], positive=w["enc"]["a red circle"],
                                               negative=w["enc"][""], latent=src, sigmas=sig, cfg=3.0,
                                               state_dtype="float64", **opts)[0]
        x, y = C["InvEditEDICTRegenerate"].execute(model=w["model"], positive=w["enc"]["a red circle"],
                                                   negative=w["enc"][""], pair=pair, cfg=3.0, **opts).args
    assert torch.equal(x["samples"], src["samples"]) and torch.equal(y["samples"], src["samples"])
    return "LATENT round trip bit-exact"


def gradient_cell(name):
    """A cell running gradient node ``name``: finite losses, and the shared models and the stock KSampler's result
    as they were (``assert_untouched``)."""
    def run(w):
        before, state = stock(w), shared_state(w)
        out = NODES[name](w)
        history = [a for a in getattr(out, "args", ()) if isinstance(getattr(a, "values", None), (list, tuple))]
        assert all(math.isfinite(v) for h in history for v in h.values), history
        assert_untouched(w, before, state)  # no weight changed (values, dtype), the stock result neither
        return "back-propagates; the shared model untouched"
    return run
