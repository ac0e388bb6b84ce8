"""Gradient nodes work on private copies (issue 25, item 2): on the real ComfyUI host, a stock KSampler before and
after each gradient node on the same MODEL gives bit-identical latents, and the shared U-Net, VAE and CLIP keep the
same parameter objects, values and inference flags; MultiGPU models are refused by name; CASO hands apply_model the
float32 latent (no cast to the storage dtype)."""
import pytest
import torch

from harness.shapes import data
from grad_nodes import FAST_DOODL, NODES, add_judges, assert_untouched, doodl_optimize, shared_state, stock
from host_helpers import must_be_interrupted


@pytest.fixture(scope="module")
def w(load_world):
    return add_judges(load_world("a circle", "", "a red circle", "a blue circle", "blue"))


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
