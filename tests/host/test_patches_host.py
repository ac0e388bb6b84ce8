"""Stock patches in front of the pack's nodes (issue 26, item 3): a LoRA (LoraLoaderModelOnly, a file the harness
writes), a ControlNet (Apply ControlNet with a random-weight ControlNet for the U-Net), the shift nodes
ModelSamplingSD3 / ModelSamplingFlux, FreeU_V2, and the attention patches of PerturbedAttentionGuidance and
SelfAttentionGuidance, each on a model the patch acts on. For each: the patch changes the stock KSampler's result (it
acts), and every pack node composes with it (DDIM's regeneration by the stock sampler under the same patch; EDICT's
round trip bit-exact with the patch attached; the Asyrp sampler at strength 0 equal to stock euler under the patch,
bit for bit, which with a ControlNet means its shared encoder passes gives the middle block the ControlNet's
residual; each gradient node back-propagating through the patched model and leaving the shared one untouched) or
refuses it by name. The cells are checked against docs/matrix/patches.json (tests/matrix_doc.py)."""
import pytest
import torch

import matrix_doc
from grad_nodes import NODES, add_judges, ddim_regenerates, edict_round_trip, gradient_cell, stock
from harness.shapes import data
from host_models import random_taesd, tiny_sdxl, tiny_sdxl_clip, write_random_controlnet, write_random_lora

PROMPTS = ("a circle", "", "a red circle", "a blue circle", "blue")
SD3 = "sd3.5_medium.safetensors"  # the SD3 shapes world


def call(C, name, **kw):
    """A stock node's first output, for V1 (FUNCTION) and V3 (execute) nodes alike."""
    cls = C[name]
    out = cls.execute(**kw) if hasattr(cls, "define_schema") else getattr(cls(), cls.FUNCTION)(**kw)
    return out[0]


def lora(w, tmp):
    import folder_paths
    write_random_lora(w["model"], tmp / "invedit_test_lora.safetensors")
    folder_paths.add_model_folder_path("loras", str(tmp))
    w["model"] = call(w["C"], "LoraLoaderModelOnly", model=w["model"], lora_name="invedit_test_lora.safetensors",
                      strength_model=1.0)


def controlnet(w, tmp):
    import folder_paths
    write_random_controlnet(w["model"], tmp / "invedit_test_cn.safetensors")
    folder_paths.add_model_folder_path("controlnet", str(tmp))
    cn = call(w["C"], "ControlNetLoader", control_net_name="invedit_test_cn.safetensors")
    hint = data.make_batch(1, 3).images.permute(0, 2, 3, 1)
    for k, c in w["enc"].items():
        w["enc"][k] = call(w["C"], "ControlNetApplyAdvanced", positive=c, negative=c, control_net=cn, image=hint,
                           strength=1.0, start_percent=0.0, end_percent=1.0)


def tiny_xl(w, tmp):
    """The tiny SDXL (model channels 32 and 64: FreeU scales the 64-channel level) with its tiny CLIP, a random TAESD."""
    import nodes
    w["model"], w["te"], w["vae"] = tiny_sdxl(), tiny_sdxl_clip(), random_taesd(4)
    w["enc"] = {t: nodes.CLIPTextEncode().encode(w["te"], t)[0] for t in PROMPTS}


PATCHES = {  # row -> (world, how the patch is put in front)
    "LoraLoaderModelOnly": ("sd15", lora),
    "ControlNetApplyAdvanced": ("sd15", controlnet),
    "FreeU_V2 (tiny SDXL)": ("sdxl", lambda w, tmp: w.update(model=call(w["C"], "FreeU_V2", model=w["model"], b1=1.3,
                                                                         b2=1.4, s1=0.9, s2=0.2))),
    "PerturbedAttentionGuidance": ("sd15", lambda w, tmp: w.update(
        model=call(w["C"], "PerturbedAttentionGuidance", model=w["model"], scale=3.0))),
    "SelfAttentionGuidance": ("sd15", lambda w, tmp: w.update(
        model=call(w["C"], "SelfAttentionGuidance", model=w["model"], scale=0.5, blur_sigma=2.0))),
    "ModelSamplingSD3 on SD1.5": ("sd15", lambda w, tmp: w.update(
        model=call(w["C"], "ModelSamplingSD3", model=w["model"], shift=3.0))),
    "ModelSamplingSD3 on SD3": ("sd3", lambda w, tmp: w.update(
        model=call(w["C"], "ModelSamplingSD3", model=w["model"], shift=6.0))),
    "ModelSamplingFlux on SD3": ("sd3", lambda w, tmp: w.update(
        model=call(w["C"], "ModelSamplingFlux", model=w["model"], max_shift=1.15, base_shift=0.5, width=64,
                   height=64))),
}
COLUMNS = ("the patch acts", "DDIM Invert", "EDICT Invert → Regenerate", "Asyrp, strength 0", *NODES)


def test_the_rows_and_columns_are_the_documented_ones():
    assert tuple(PATCHES) == matrix_doc.PATCHES and COLUMNS == matrix_doc.PATCH_COLUMNS


# rows like another one in what they exercise (an attention patch; a flow shift, which ModelSamplingSD3 on SD1.5 also
# exercises) run in `make test-slow`, to keep `make test` within its time
SLOW = ("SelfAttentionGuidance", "ModelSamplingSD3 on SD3", "ModelSamplingFlux on SD3")


@pytest.fixture(scope="module", params=[pytest.param(p, marks=[pytest.mark.slow] if p in SLOW else [])
                                        for p in PATCHES])
def w(request, load_world, tmp_path_factory):
    world, patch = PATCHES[request.param]
    w = load_world(*PROMPTS, **({"ckpt": SD3} if world == "sd3" else {}))
    tmp = tmp_path_factory.mktemp("patch")
    with torch.inference_mode():
        if world == "sdxl":
            tiny_xl(w, tmp)
        add_judges(w)
        w["unpatched"] = stock(w)
        patch(w, tmp)
    w["patch"] = request.param
    yield w
    import comfy.model_management as mm
    import folder_paths
    for kind in ("loras", "controlnet"):
        paths = folder_paths.folder_names_and_paths[kind][0]
        if str(tmp) in paths:
            paths.remove(str(tmp))
    mm.unload_all_models()


def rms(t):
    return float(t.double().pow(2).mean().sqrt())


def acts(w):
    out = stock(w)
    assert torch.isfinite(out).all() and not torch.equal(out, w["unpatched"])
    return f"the stock KSampler's latent moves by {rms(out - w['unpatched']) / rms(w['unpatched']):.1%}"


def asyrp_identity(w):
    """SamplerAsyrp with a strength-0 h-space patch = stock euler on the patched model, bit for bit (cfg 3)."""
    import comfy.sample
    import comfy.samplers
    C = w["C"]
    with torch.inference_mode():
        lat = torch.zeros(1, 4, 8, 8)
        direction = C["InvEditHSpaceFromPrompts"].execute(w["model"], w["enc"]["a red circle"],
                                                          w["enc"]["a blue circle"], {"samples": lat}, 3, 0,
                                                          "per_timestep")[0]
        m0 = C["InvEditHSpaceApply"].execute(w["model"], direction, 0.0, 999, 0, "asymmetric", "both", "resize")[0]
        sig = C["BasicScheduler"].execute(w["model"], "ddim_uniform", 4, 1.0)[0]

        def run(model, sampler):
            return comfy.sample.sample_custom(model, comfy.sample.prepare_noise(lat, 3), 3.0, sampler, sig,
                                              w["enc"]["a red circle"], w["enc"][""], lat, disable_pbar=True, seed=3)
        a = run(m0, C["InvEditSamplerAsyrp"].execute(0, 1.0)[0])
        b = run(w["model"], comfy.samplers.sampler_object("euler"))
    assert torch.equal(a, b)
    return "bit-identical to stock euler under the patch"


RUNNERS = {"the patch acts": acts, "DDIM Invert": lambda w: ddim_regenerates(w, "simple", 10, 0.8, 0.3),
           "EDICT Invert → Regenerate": edict_round_trip, "Asyrp, strength 0": asyrp_identity,
           **{n: gradient_cell(n) for n in NODES}}


@pytest.mark.parametrize("column", COLUMNS)
def test_the_node_composes_with_the_patch_or_refuses_it_by_name(w, column):
    try:
        note, outcome = RUNNERS[column](w), "works"
    except ValueError as e:
        note, outcome = str(e), "refused"
        words = w["patch"].split()[0].replace("Apply", "")
        assert any(s in note for s in (words, "flow", "SD3", "U-Net")), note
    matrix_doc.check_cell(w["patch"], column, outcome, note, table="patches")


def test_with_a_controlnet_checkpointed_blocks_give_the_same_doodl_iterates(load_world, tmp_path):
    """ControlNet adds its residuals into the U-Net's skip tensors in place, after the next block took them as input:
    with gradient checkpointing each block recomputes from its own copy of its inputs, so DOODL's iterates equal the
    run without checkpointing (to float rounding), and the ControlNet acts (they differ from the run without it).
    The element-wise clip is set out of reach (grad_clip 10): a clip threshold turns a rounding difference in one
    gradient element into a whole step's difference (0.003 here with the default 0.02, depending on where the
    perturbation and crop draws put the elements), which is not what this test is about."""
    from grad_nodes import FAST_DOODL
    w = add_judges(load_world(*PROMPTS))
    plain = dict(w["enc"])
    with torch.inference_mode():
        controlnet(w, tmp_path)

        def run(enc, checkpointing):
            return w["C"]["InvEditDOODLOptimize"].execute(
                model=w["model"], positive=enc["a circle"], negative=enc[""], vae=w["vae"], loss=w["loss"],
                latent={"samples": torch.zeros(1, 4, 8, 8)}, grad_checkpointing=checkpointing,
                **dict(FAST_DOODL, iterations=2, grad_clip=10.0)).args[0]["samples"]
        a, b, c = run(w["enc"], False), run(w["enc"], True), run(plain, False)
    import folder_paths
    folder_paths.folder_names_and_paths["controlnet"][0].remove(str(tmp_path))
    # rounding: 1.4e-5 of the largest element on an AVX-512 machine (whose kernels round the recomputed blocks
    # differently), two iterations of lr 300 amplifying it; 1e-4 still lies ten times under the ControlNet's effect
    assert torch.allclose(a, b, rtol=0, atol=1e-4 * float(a.abs().max())), float((a - b).abs().max())
    assert not torch.allclose(a, c, rtol=0, atol=1e-3 * float(a.abs().max()))
