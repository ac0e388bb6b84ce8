"""The model fingerprint (issue 29, item 2): an EDICT or BDIA pair, a value embedding and an h-space direction remember
the model they were made with, and a replay on another model (another sampling, other weights, a stock merge, a LoRA)
is refused or warned about by name; the same model, loaded or not, a LoRA clone applied in place, keeps its
fingerprint."""
import logging

import pytest
import torch

OPTS = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)


@pytest.fixture(scope="module")
def w(load_world):
    w = load_world("a red circle", "a blue circle", "")
    w["src"] = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * 6}
    return w


def invert(w, node="InvEditEDICTInvert", model=None, **kw):
    C = w["C"]
    model = model or w["model"]
    with torch.inference_mode():
        sig = C["InvEditEDICTSigmas"].execute(model, 8, "official_980_0", 1.0)[0]
        extra = OPTS if node == "InvEditEDICTInvert" else dict(gamma=0.5)
        return C[node].execute(model=model, positive=w["enc"]["a red circle"], negative=w["enc"][""],
                               latent=w["src"], sigmas=sig, cfg=3.0, state_dtype="float64", **extra, **kw)[0]


def regenerate(w, pair, model, node="InvEditEDICTRegenerate"):
    extra = OPTS if node == "InvEditEDICTRegenerate" else dict(gamma=0.5)
    with torch.inference_mode():
        out = w["C"][node].execute(model=model, positive=w["enc"]["a red circle"], negative=w["enc"][""],
                                   pair=pair, cfg=3.0, **extra)
    return out[0]["samples"]


def v_prediction(model):
    import comfy_extras.nodes_model_advanced as adv
    out = adv.ModelSamplingDiscrete().patch(model, "v_prediction", False)
    return out[0] if isinstance(out, tuple) else out.result[0]


def halved(model):
    """The same weights halved by a stock merge: model − 0.5·model."""
    import comfy_extras.nodes_model_merging as merging
    out = merging.ModelSubtract().merge(model, model, 0.5)
    return out[0] if isinstance(out, tuple) else out.result[0]


def other_checkpoint(model):
    """Another checkpoint of the same family: a fresh load of the shapes world with every U-Net weight scaled by
    1.01 (``model`` only names the family here)."""
    import nodes
    m = nodes.CheckpointLoaderSimple().load_checkpoint("v1-5-pruned-emaonly-fp16.safetensors")[0]
    with torch.no_grad():
        for p in m.model.diffusion_model.parameters():
            p.mul_(1.01)
    return m


def mse(a, b):
    return float((a.float() - b.float()).pow(2).mean())


def test_the_fingerprint_is_recorded_and_the_same_model_regenerates_exactly_without_a_word(w, caplog):
    pair = invert(w)
    fp = pair["invedit_inversion"]["model_fingerprint"]
    assert set(fp) == {"family", "sampling", "weights", "patches", "wrappers"}
    assert fp["family"] == "SD15" and fp["patches"] == "none" and "EPS" in fp["sampling"].split(",")[0]
    with caplog.at_level(logging.WARNING):
        out = regenerate(w, pair, w["model"])
    assert mse(out, w["src"]["samples"]) < 1e-10
    assert "another model" not in caplog.text


@pytest.mark.parametrize("node", ["InvEditEDICTInvert", "InvEditBDIAInvert"])
def test_a_pair_regenerated_with_another_sampling_is_refused_by_name(w, node):
    pair = invert(w, node)
    regen = node.replace("Invert", "Regenerate")
    with pytest.raises(ValueError, match=r"made with another model: its sampling .* is ModelSamplingDiscrete \+ "
                                         r"EPS.* there, ModelSamplingDiscrete \+ V_PREDICTION.* here.*connect the "
                                         r"same MODEL"):
        regenerate(w, pair, v_prediction(w["model"]), regen)


@pytest.mark.parametrize("change, says", [(halved, "weight patches differ"), (other_checkpoint, "weights differ")],
                         ids=["stock merge", "other checkpoint"])
def test_a_pair_regenerated_with_other_weights_warns_and_names_them(w, caplog, change, says):
    pair = invert(w)
    with caplog.at_level(logging.WARNING):
        out = regenerate(w, pair, change(w["model"]))
    assert mse(out, w["src"]["samples"]) > 1e-3        # not the reconstruction: the warning is due
    assert "EDICT Regenerate (InvEdit): the pair was made with another model than this one" in caplog.text
    assert says in caplog.text and "EDICT Invert" in caplog.text


def test_a_lora_applied_in_place_by_a_clone_leaves_the_base_models_fingerprint(w):
    import comfy.model_management as mm
    from importlib import import_module
    fingerprint = import_module(f"{pack_name()}.adapters.fingerprint").fingerprint
    base = w["model"]
    before = fingerprint(base)
    lora = base.clone()
    key = next(k for k in base.model.state_dict() if k.startswith("diffusion_model.") and k.endswith("proj_in.weight"))
    weight = base.model.state_dict()[key]
    lora.add_patches({key: (torch.ones_like(weight) * 0.1,)}, 1.0)
    mm.load_models_gpu([lora])   # CPU here: the patch is written into the shared weights, the originals backed up
    try:
        assert fingerprint(base) == before
        after = fingerprint(lora)
        assert after["weights"] == before["weights"] and after["patches"].startswith("1 keys")
    finally:
        mm.unload_all_models()
    assert fingerprint(base) == before


def pack_name():
    import sys
    return next(n.rsplit(".adapters.fingerprint", 1)[0] for n in sys.modules if n.endswith(".adapters.fingerprint"))


def test_a_value_embedding_replayed_on_another_model_warns_or_refuses(w, caplog):
    C = w["C"]
    args = dict(model=w["model"], positive=w["enc"]["a red circle"], negative=w["enc"][""],
                latent={"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))}, seed=0,
                steps=3, guidance=3.0, inner_steps=2, inner_decay=0.0, lr=0.01, lr_decay=0.01, early_stop=1e-5)
    with torch.inference_mode():
        emb = C["InvEditNullTextInvert"].execute(**args)[0]
    assert emb.meta["model_fingerprint"]
    apply = C["InvEditValueApply"]
    with caplog.at_level(logging.WARNING):
        apply.execute(w["model"], emb, 1.0, 1.0, "cond", "nearest")
        assert "another model" not in caplog.text
        apply.execute(other_checkpoint(w["model"]), emb, 1.0, 1.0, "cond", "nearest")
    assert "the value embedding was made with another model than this one: its weights differ" in caplog.text
    assert "Null-text Invert" in caplog.text
    with pytest.raises(ValueError, match="the value embedding was made with another model: its sampling"):
        apply.execute(v_prediction(w["model"]), emb, 1.0, 1.0, "cond", "nearest")


def test_an_h_space_direction_on_another_model_warns_and_directions_compose_without_a_word(w, caplog):
    import nodes
    C = w["C"]
    with torch.inference_mode():
        d = C["InvEditHSpaceFromPrompts"].execute(w["model"], w["enc"]["a red circle"], w["enc"]["a blue circle"],
                                                   nodes.EmptyLatentImage().generate(64, 64, 1)[0], 3, 0,
                                                   "global")[0]
    args = (1.0, 999, 0, "asymmetric", "both", "resize", False)
    with caplog.at_level(logging.WARNING):
        once = C["InvEditHSpaceApply"].execute(w["model"], d, *args)[0]
        C["InvEditHSpaceApply"].execute(once, d, *args)       # stacked: the pack's own patch is not a difference
        assert "another model" not in caplog.text
        C["InvEditHSpaceApply"].execute(halved(w["model"]), d, *args)
    assert "the direction was made with another model than this one: its weight patches differ" in caplog.text
