"""What differs between the two test hosts (ComfyUI 0.3.75 and 0.33.0) and touches the pack, each checked on the
host where it applies (docs/hosts.md)."""
import pytest

from harness.paths import COMFY_VERSION


@pytest.mark.parametrize("kind", ["IMG_TO_IMG", "IMG_TO_IMG_FLOW"])
def test_image_to_image_sampling_kinds_are_refused_by_name(comfy, kind):
    """IMG_TO_IMG (an EPS subclass; in 0.3.75 too) and 0.33's IMG_TO_IMG_FLOW (a CONST subclass) add no noise:
    nothing to invert. Without the explicit refusal both would pass as VP / flow models."""
    import comfy.model_base
    import comfy.model_sampling
    if not hasattr(comfy.model_sampling, kind):
        pytest.skip(f"ComfyUI {COMFY_VERSION} has no {kind} sampling (added after 0.3.75)")
    import comfy.supported_models
    from harness import host
    checks = host.pack_module("adapters.checks")
    cfg = comfy.supported_models.SD15({"image_size": 32})
    ms = comfy.model_base.model_sampling(cfg, getattr(comfy.model_base.ModelType, kind))
    assert isinstance(ms, comfy.model_sampling.EPS if kind == "IMG_TO_IMG" else comfy.model_sampling.CONST)
    for check in (checks.require_vp_or_flow_model, checks.require_vp_model):
        with pytest.raises(ValueError, match=f"DDIM Invert: SD15 is sampled with {kind}, an image-to-image model"):
            check(ms, "SD15", "DDIM Invert")


def test_eps_and_flow_models_still_pass_on_both_hosts(comfy):
    import comfy.model_base
    import comfy.supported_models
    from harness import host
    checks = host.pack_module("adapters.checks")
    cfg = comfy.supported_models.SD15({"image_size": 32})
    for kind in ("EPS", "V_PREDICTION", "FLOW"):
        ms = comfy.model_base.model_sampling(cfg, getattr(comfy.model_base.ModelType, kind))
        checks.require_vp_or_flow_model(ms, "SD15", "DDIM Invert")
