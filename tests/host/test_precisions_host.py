"""Precisions (issue 26, item 2): the shapes-world SD1.5 U-Net with its weights stored in fp16, bf16 and fp8 (the stock
UNETLoader's weight_dtype fp8_e4m3fn, and a diffusion-model file stored in fp8), i.e. ComfyUI's manual-cast path (the
weights stay in their storage dtype, each layer casts them to the compute dtype as it runs). Sampling and inversion
run; EDICT's float64 state over the low-precision model still round-trips the LATENT bit for bit; every gradient node
back-propagates through the manual-cast layers and leaves the shared model's weights, their dtype and the stock
KSampler's result as they were. The cells are checked against docs/matrix/precisions.json (tests/matrix_doc.py)."""
import pytest
import torch

import matrix_doc
from grad_nodes import NODES, add_judges, ddim_regenerates, edict_round_trip, gradient_cell, stock

UNET = "shapes_sd15_unet.safetensors"  # the shapes world's U-Net as a diffusion-model file (models/unet)
PRECISIONS = matrix_doc.PRECISIONS
COLUMNS = ("stock KSampler", "DDIM Invert", "EDICT Invert → Regenerate", *NODES)


def test_the_rows_and_columns_are_the_documented_ones():
    assert COLUMNS == matrix_doc.PRECISION_COLUMNS


def load_unet(precision, tmp_path_factory):
    import comfy.sd
    import comfy.utils
    import folder_paths
    import nodes
    if precision in ("fp32", "fp8_e4m3fn (UNETLoader)"):
        return nodes.UNETLoader().load_unet(UNET, "default" if precision == "fp32" else "fp8_e4m3fn")[0]
    path = folder_paths.get_full_path("diffusion_models", UNET)
    if precision in ("fp16", "bf16"):  # what ComfyUI loads on a GPU without fp32 forced (model_options "dtype"; on a
        # CPU it would up-cast to fp32)
        return comfy.sd.load_diffusion_model(path, model_options={"dtype": getattr(torch, {"fp16": "float16",
                                                                                           "bf16": "bfloat16"}[precision])})
    from safetensors.torch import save_file
    folder = tmp_path_factory.mktemp("fp8")
    sd = comfy.utils.load_torch_file(path)
    save_file({k: v.to(torch.float8_e4m3fn) if v.is_floating_point() and v.ndim > 1 else v for k, v in sd.items()},
              str(folder / "unet_fp8.safetensors"))
    return comfy.sd.load_diffusion_model(str(folder / "unet_fp8.safetensors"))  # what UNETLoader "default" calls


# `make test` runs the fp8 row (UNETLoader's fp8_e4m3fn: the manual-cast path users load most); the others run in
# `make test-slow`, to keep `make test` within its time: fp32 is the gradient nodes' own test world
# (test_grad_private_host.py), fp16 and bf16 take the same manual-cast path on this CPU, and a file stored in fp8 is
# up-cast to fp32 here
SLOW = ("fp32", "fp16", "bf16", "fp8 file")


@pytest.fixture(scope="module", params=[pytest.param(p, marks=[pytest.mark.slow] if p in SLOW else [])
                                        for p in PRECISIONS])
def w(request, load_world, tmp_path_factory):
    w = add_judges(load_world("a circle", "", "a red circle", "a blue circle", "blue"))
    with torch.inference_mode():
        w["model"] = load_unet(request.param, tmp_path_factory)
    w["precision"] = request.param
    yield w
    import comfy.model_management as mm
    mm.unload_all_models()


def dtypes(w):
    m = w["model"].model
    weights = {p.dtype for p in m.diffusion_model.parameters() if p.ndim > 1}
    return {"storage": sorted(str(d).removeprefix("torch.") for d in weights),
            "compute": str(m.manual_cast_dtype or m.get_dtype()).removeprefix("torch.")}


def ksampler(w):
    out = stock(w)
    assert torch.isfinite(out).all()
    return "finite"


RUNNERS = {"stock KSampler": ksampler,
           "DDIM Invert": lambda w: ddim_regenerates(w, "normal", 10, 1.0, 0.1),
           "EDICT Invert → Regenerate": edict_round_trip, **{n: gradient_cell(n) for n in NODES}}


def test_the_weights_are_stored_in_the_precision_and_cast_as_they_run(w):
    """The weights are held in the precision asked for, and cast per layer (``manual_cast_dtype``) as they run. A file
    stored in fp8 is loaded as ComfyUI chooses for the device (the CPU up-casts it to float32; a GPU with fp8 support
    keeps it): its weights are then fp8's values exactly."""
    d = dtypes(w)
    want = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp8 file": d["storage"][0]}.get(
        w["precision"], "float8_e4m3fn")
    assert d["storage"] == [want], d
    if want != "float32":
        assert w["model"].model.manual_cast_dtype is not None, d  # ComfyUI's manual-cast layers
    if w["precision"] == "fp8 file":
        for p in w["model"].model.diffusion_model.parameters():
            if p.ndim > 1:
                assert torch.equal(p.float(), p.to(torch.float8_e4m3fn).float()), d
    matrix_doc.record(w["precision"], "_model", d, table="precisions")


@pytest.mark.parametrize("column", COLUMNS)
def test_the_node_serves_the_precision_or_refuses_it_by_name(w, column):
    try:
        note, outcome = RUNNERS[column](w), "works"
    except ValueError as e:
        note, outcome = str(e), "refused"
        assert any(s in note for s in ("fp8", "fp16", "bf16", "precision", "dtype")), note
    matrix_doc.check_cell(w["precision"], column, outcome, note, table="precisions")
