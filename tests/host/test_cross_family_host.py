"""Issue 29, 3: one conditioning check for every node that takes a MODEL and CONDITIONING. A conditioning encoded
for another model family is refused naming the node, the input, both widths and the fix, before any math (which
failed with raw shape errors such as "mat1 and mat2 shapes cannot be multiplied (77x4096 and 768x320)")."""
import types

import pytest
import torch

SD3 = "sd3.5_medium.safetensors"
# the nodes the issue found failing raw, each way round
RAW_BEFORE = {"InvEditDDIMInvert", "InvEditEDICTInvert", "InvEditDOODLOptimize", "InvEditCASOEdit",
              "InvEditNullTextInvert", "InvEditHSpaceFromPrompts", "InvEditP2PEdit"}


@pytest.fixture(scope="module")
def worlds(load_world):
    return load_world("a red circle"), load_world("a red circle", ckpt=SD3)


def checked_nodes(C):
    from harness import pack_node_ids
    return {n: C[n] for n in pack_node_ids() if getattr(C[n], "conditioning_checked", ())}


def test_every_node_with_a_model_and_conditioning_inputs_has_the_check(worlds):
    from comfy_api.latest import io
    C = worlds[0]["C"]
    from harness import pack_node_ids
    for n in pack_node_ids():
        schema = C[n].define_schema()
        kinds = {type(i) for i in schema.inputs}
        if io.Model.Input in kinds and io.Conditioning.Input in kinds:
            assert getattr(C[n], "conditioning_checked", ()), n
    assert RAW_BEFORE <= set(checked_nodes(C))


@pytest.mark.parametrize("way", ["sd3 conditioning, SD1.5 model", "SD1.5 conditioning, SD3 model"])
def test_conditioning_of_the_other_family_is_refused_by_name(worlds, way):
    from comfy_api.latest import io
    sd15, sd3 = worlds
    model, cond = (sd15["model"], sd3["enc"]["a red circle"]) if way.startswith("sd3") else \
        (sd3["model"], sd15["enc"]["a red circle"])
    got, want = (4096, 768) if way.startswith("sd3") else (768, 4096)
    nodes = checked_nodes(sd15["C"])
    assert RAW_BEFORE <= set(nodes)
    for node_id, cls in nodes.items():
        model_input = next(i.id for i in cls.define_schema().inputs if isinstance(i, io.Model.Input))
        first = cls.conditioning_checked[0]
        with torch.inference_mode(), pytest.raises(ValueError) as e:
            cls.execute(**{model_input: model, first: cond})  # the other inputs are never reached
        msg = str(e.value)
        who = cls.define_schema().display_name
        assert msg.startswith(f"{who}: the {first} conditioning has tokens of width {got}"), (node_id, msg)
        assert f"takes {want}" in msg and "Encode the prompts with this model's CLIP" in msg, (node_id, msg)


def test_the_matching_family_passes_the_check_and_runs(worlds):
    """The same node with its own family's conditioning gets past the check and inverts."""
    sd15, _ = worlds
    C, cond = sd15["C"], sd15["enc"]["a red circle"]
    lat = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    import comfy.samplers
    sig = comfy.samplers.calculate_sigmas(sd15["model"].get_model_object("model_sampling"), "normal", 4)
    with torch.inference_mode():
        out = C["InvEditDDIMInvert"].execute(model=sd15["model"], positive=cond, negative=cond, latent=lat,
                                             sigmas=sig, cfg=1.0).args[0]
    assert torch.isfinite(out["samples"]).all()


def test_a_whole_graph_with_the_sd3_clip_on_the_sd15_model_fails_by_name(comfy, worlds):
    """Through the real executor: CLIPTextEncode with the SD3 world's CLIP into DDIM Invert on the SD1.5 model."""
    from harness.host import PromptError
    g = comfy.graph()
    ck = g.node("CheckpointLoaderSimple", ckpt_name="v1-5-pruned-emaonly-fp16.safetensors")
    ck3 = g.node("CheckpointLoaderSimple", ckpt_name=SD3)
    enc = g.node("CLIPTextEncode", clip=ck3.out(1), text="a red circle")
    lat = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    sig = g.node("BasicScheduler", model=ck.out(0), scheduler="normal", steps=4, denoise=1.0)
    inv = g.node("InvEditDDIMInvert", model=ck.out(0), positive=enc.out(0), negative=enc.out(0), latent=lat.out(0),
                 sigmas=sig.out(0), cfg=1.0)
    g.node("SaveLatent", samples=inv.out(0), filename_prefix="x")
    with pytest.raises(PromptError, match=r"DDIM Invert \(InvEdit\): the positive conditioning has tokens of width "
                                          r"4096, but SD15 takes 768"):
        comfy.run_prompt(g.finalize())


def test_flux_and_sd3_are_told_apart_by_the_pooled_width():
    """SD3 and Flux tokens are both 4096 wide; their pooled outputs are not (2048, 768)."""
    from harness import host
    checks = host.pack_module("adapters.checks")

    class Flux:
        unet_config = {"context_in_dim": 4096, "vec_in_dim": 768}
    model = types.SimpleNamespace(model=types.SimpleNamespace(model_config=Flux()))
    sd3_cond = [[torch.zeros(1, 77, 4096), {"pooled_output": torch.zeros(1, 2048)}]]
    flux_cond = [[torch.zeros(1, 256, 4096), {"pooled_output": torch.zeros(1, 768)}]]
    checks.require_conditioning_width(model, {"positive": flux_cond}, "X")
    with pytest.raises(ValueError, match="X: the positive conditioning has a pooled output of width 2048, but Flux "
                                         "takes 768"):
        checks.require_conditioning_width(model, {"positive": sd3_cond}, "X")


def test_p2p_edit_refuses_a_clip_of_the_other_family(worlds):
    """P2P Edit encodes its prompts itself: the SD3 world's CLIP with the SD1.5 model is refused by name too."""
    sd15, sd3 = worlds
    with torch.inference_mode(), pytest.raises(ValueError, match=r"P2P Edit \(InvEdit\): the source and target "
                                                                 r"prompts' \(encoded by the clip input\) conditioning "
                                                                 r"has tokens of width 4096, but SD15 takes 768"):
        sd15["C"]["InvEditP2PEdit"].execute(
            model=sd15["model"], clip=sd3["te"], negative=sd15["enc"]["a red circle"], source_prompt="a red circle",
            target_prompt="a blue circle", edit="replace", guidance=3.0, tau_v=0.5, tau_c=0.6, tau_s=0.6, tau_u=0.0,
            blend_source="", blend_target="", blend_threshold=0.3, blend_start=0.2, reweight_words="",
            reweight_factor=1.0, latent={"samples": torch.randn(1, 4, 8, 8)}, sigmas=torch.tensor([14.6, 1.0, 0.03]))
