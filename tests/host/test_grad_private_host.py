"""Gradient nodes work on private copies (issue 25, item 2): on the real ComfyUI host, a stock KSampler before and
after each gradient node on the same MODEL gives bit-identical latents, and the shared U-Net, VAE and CLIP keep the
same parameter objects, values and inference flags; MultiGPU models are refused by name; CASO hands apply_model the
float32 latent (no cast to the storage dtype)."""
import pytest
import torch

from harness.shapes import data
from host_helpers import must_be_interrupted, stock_ksampler

FAST_DOODL = dict(seed=1, steps=4, cfg=3.0, mix_p=0.93, iterations=1, lr=300.0, grad_clip=0.02, momentum=0.9,
                  perturb_std=1e-4, keep="last", backprop="reversible", pair_steps="shared")
INVERT = dict(steps=3, guidance=3.0, inner_steps=2, inner_decay=0.1, lr=0.01, lr_decay=0.01, early_stop=1e-5)


@pytest.fixture(scope="module")
def w(load_world):
    w = load_world("a circle", "", "a red circle", "a blue circle", "blue")
    w["image"] = data.make_batch(1, data.HELDOUT_SEED + 5, colour=0, shape=0).images.permute(0, 2, 3, 1)
    with torch.inference_mode():
        w["latent"] = {"samples": w["vae"].encode(w["image"])}
        w["loss"] = w["C"]["InvEditDOODLClassifierLoss"].execute(
            classifier="shapes_colour.safetensors", architecture="small_cnn", target="blue", num_classes=0,
            normalisation="none", mode="cross_entropy", weight=1.0, crops=2, crop_power=0.3, input_size=64).args[0]
        w["clf"] = w["C"]["InvEditClassifierLoad"].execute("shapes_colour.safetensors", "small_cnn", 0,
                                                           "none").args[0]
    return w


def stock(w):
    return stock_ksampler(w, 4)


def shared_state(w):
    """(name, tensor object, is_inference, value) of every parameter and buffer of the shared U-Net, VAE and CLIP."""
    out = []
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
        assert torch.equal(t.detach().isnan(), value.isnan()), name
        assert torch.equal(t.detach().nan_to_num(0.0), value.nan_to_num(0.0)), name
    for m in (*w["model"].model.modules(), *w["vae"].first_stage_model.modules()):
        assert "forward" not in vars(m)  # no checkpointing or residual forward left on the shared modules
    import comfy.model_management as mm  # the private copies are gone from ComfyUI's loaded models
    shared = {id(w["model"].model), id(w["vae"].first_stage_model), id(w["te"].cond_stage_model)}
    extra = [lm for lm in mm.current_loaded_models if lm.model is not None and id(lm.model.model) not in shared
             and type(lm.model.model).__name__ in ("BaseModel", "AutoencoderKL", "SD1ClipModel")]
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


def dead_entries() -> list:
    """ComfyUI's loaded-model entries whose patcher is gone while their module lives (``LoadedModel.is_dead``): each
    makes every later ``load_models_gpu`` log a memory leak and run a full ``gc.collect()``."""
    import comfy.model_management as mm
    return [type(lm.real_model()).__name__ for lm in mm.current_loaded_models
            if lm.real_model is not None and lm.real_model() is not None and lm.model is None]


@pytest.mark.parametrize("name", list(NODES))
def test_a_gradient_node_leaves_the_shared_models_alone(w, name, monkeypatch):
    """… and, while it runs, ComfyUI's list of loaded models holds no dead entry. On 0.33 the copies come from
    ``clone(force_deepcopy=True)``, which loads a CLIP's fresh patcher and drops it (``adapters/run``
    ``_forget_loader_patchers``); 0.3.75 deep-copies the module and has no such entry either way."""
    import comfy.model_management as mm
    seen, cleanup = [], mm.cleanup_models_gc
    monkeypatch.setattr(mm, "cleanup_models_gc", lambda: (seen.extend(dead_entries()), cleanup())[1])
    before = stock(w)
    state = shared_state(w)
    NODES[name](w)
    assert not seen, f"{name}: dead loaded-model entries during the node: {sorted(set(seen))}"
    assert_untouched(w, before, state)


def test_a_failing_gradient_node_releases_its_copies_and_leaves_the_model_alone(w):
    before = stock(w)
    state = shared_state(w)
    with must_be_interrupted():
        doodl_optimize(w)
    from harness import host
    assert host.pack_module("adapters.run").current_copies() is None
    assert_untouched(w, before, state)


def test_the_clip_vision_probe_is_differentiable_without_touching_the_shared_tower(w, tmp_path):
    from host_models import tiny_clip_vision
    cv = tiny_clip_vision(tmp_path)
    state = [(n, t, t.is_inference()) for n, t in cv.model.state_dict(keep_vars=True).items()]
    train = data.make_batch(8, 90)
    labels = ", ".join(data.COLOURS[int(c)] for c in train.colour)
    with torch.inference_mode():
        clf = w["C"]["InvEditCLIPVisionLinearProbe"].execute(cv, train.images.movedim(1, -1), labels,
                                                             ", ".join(data.COLOURS), 20, 1e-3).args[0]
    with torch.inference_mode(False), torch.enable_grad():
        x = train.images[:2].clone().requires_grad_(True)
        clf.logits(x)[:, 2].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    now = cv.model.state_dict(keep_vars=True)
    assert all(now[n] is t and t.is_inference() == inf for n, t, inf in state)


def multigpu(model, how):
    m = model.clone()
    if how == "model_options":  # what ComfyUI ≥ 0.33's sampling sets: {device: ModelPatcher}
        m.model_options["multigpu_clones"] = {torch.device("cpu"): model.clone()}
    else:  # the MultiGPU node's additional models
        m.additional_models["multigpu"] = [model.clone()]
    return m


@pytest.mark.parametrize("how", ["model_options", "additional_models"])
def test_multigpu_models_are_refused_by_name_with_the_fix(w, how):
    import nodes
    m = multigpu(w["model"], how)
    with torch.inference_mode(), pytest.raises(ValueError, match=r"DOODL Optimize \(InvEdit\): .*MultiGPU.*Fix: "
                                                                 r"remove the MultiGPU node"):
        w["C"]["InvEditDOODLOptimize"].execute(model=m, positive=w["enc"]["a circle"], negative=w["enc"][""],
                                               vae=w["vae"], loss=w["loss"],
                                               latent=nodes.EmptyLatentImage().generate(64, 64, 1)[0], **FAST_DOODL)
    with torch.inference_mode(), pytest.raises(ValueError, match=r"CASO Train.*MultiGPU.*Fix"):
        lat = {"samples": torch.zeros(2, 4, 8, 8)}
        w["C"]["InvEditCASOTrain"].execute(model=m, clip=w["te"], vae=w["vae"], classifier=w["clf"], latent=lat,
                                           attribute="colour", steps=1, batch_size=2, scale=10.0, level=0.4, lr=0.02,
                                           weight_decay=0.005, gamma=0.0, n_tokens=1, init="repo_uniform",
                                           hflip=False, seed=0)


class _Seen(Exception):
    pass


def test_caso_hands_apply_model_the_float32_latent_not_the_storage_dtype(w, monkeypatch):
    """A model whose storage dtype is fp8 (get_dtype(); a quantized checkpoint): CASO's denoiser gives apply_model
    the float32 latent (apply_model casts to the compute dtype itself), not one rounded to fp8."""
    import comfy.model_base
    from harness import host
    ad, oc = host.pack_module("adapters.caso"), host.pack_module("optim.caso")
    seen = []

    def apply_model(self, x, t, *args, **kwargs):
        seen.append(x.dtype)
        raise _Seen

    monkeypatch.setattr(comfy.model_base.BaseModel, "get_dtype", lambda self: torch.float8_e4m3fn)
    monkeypatch.setattr(comfy.model_base.BaseModel, "apply_model", apply_model)
    s = ad.CASOSettings(config=oc.TrainConfig(steps=1, batch_size=2, scale=10.0, seed=0))
    with torch.inference_mode(), pytest.raises(_Seen):
        ad.train(w["model"], w["te"], w["vae"], w["clf"], torch.zeros(2, 4, 8, 8), s, "test")
    assert seen == [torch.float32]
