"""RF-Solver and FireFlow SAMPLERs on the real host (issue 28): invert with the stock SamplerCustom and regenerate
with it on the SD3 shapes world (closer than the Euler / DDIM inversion at the same step count), refusals by name;
the sampling direction on random-weight Flux is in test_flux_host.py."""
import pytest
import torch

CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
SD3 = "sd3.5_medium.safetensors"


@pytest.fixture(scope="module")
def sd3(comfy):
    import nodes
    from harness.inputs import EXAMPLE_IMAGES
    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(SD3)
        img = nodes.LoadImage().load_image(next(iter(EXAMPLE_IMAGES)))[0]
        return {"model": model, "vae": vae, "C": nodes.NODE_CLASS_MAPPINGS,
                "pos": nodes.CLIPTextEncode().encode(clip, "a red circle")[0],
                "neg": nodes.CLIPTextEncode().encode(clip, "")[0],
                "src": {"samples": vae.encode(img[..., :3])}}


def custom(w, sampler, sigmas, latent, cfg=2.0):
    with torch.inference_mode():
        return w["C"]["SamplerCustom"].execute(model=w["model"], add_noise=False, noise_seed=0, cfg=cfg,
                                               positive=w["pos"], negative=w["neg"], sampler=sampler, sigmas=sigmas,
                                               latent_image=latent)[0]


def round_trip(w, name, steps=12, denoise=0.8):
    C = w["C"]
    with torch.inference_mode():
        sig = C["BasicScheduler"].execute(w["model"], "simple", steps, denoise)[0]
        if name == "euler":
            inv = C["InvEditSamplerDDIMInversion"].execute()[0]
            fwd = C["KSamplerSelect"].execute("euler")[0]
        else:
            node = C[{"rf_solver": "InvEditSamplerRFSolver", "fireflow": "InvEditSamplerFireFlow"}[name]]
            inv, fwd = node.execute("invert")[0], node.execute("sample")[0]
    noise = custom(w, inv, sig, w["src"])
    back = custom(w, fwd, sig, noise)
    return noise["samples"], back["samples"]


def test_flow_solver_nodes_are_registered(comfy):
    import nodes
    for i in ("InvEditSamplerRFSolver", "InvEditSamplerFireFlow"):
        assert i in nodes.NODE_CLASS_MAPPINGS and nodes.NODE_DISPLAY_NAME_MAPPINGS[i].endswith("(InvEdit)")


def test_solvers_reconstruct_closer_than_the_euler_inversion(sd3):
    src = sd3["src"]["samples"]
    err = {}
    for name in ("euler", "rf_solver", "fireflow"):
        noise, back = round_trip(sd3, name)
        assert float((noise - src).abs().max()) > 0.5 and torch.isfinite(back).all()
        err[name] = float((back - src).pow(2).mean())
    assert err["rf_solver"] < err["euler"] and err["fireflow"] < err["euler"], err


def test_a_vp_model_is_refused_by_name(comfy):
    import nodes
    from harness.inputs import EXAMPLE_IMAGES
    C = nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(CKPT)
    with torch.inference_mode():
        cond = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
        img = nodes.LoadImage().load_image(next(iter(EXAMPLE_IMAGES)))[0]
        lat = {"samples": vae.encode(img[..., :3])}
        sig = C["BasicScheduler"].execute(model, "normal", 4, 0.5)[0]
        for node, direction in (("InvEditSamplerRFSolver", "invert"), ("InvEditSamplerFireFlow", "sample")):
            sampler = C[node].execute(direction)[0]
            with pytest.raises(ValueError, match="needs a flow-matching model"):
                C["SamplerCustom"].execute(model=model, add_noise=False, noise_seed=0, cfg=1.0, positive=cond,
                                           negative=cond, sampler=sampler, sigmas=sig, latent_image=lat)


def test_an_inversion_to_pure_noise_is_refused(sd3):
    with torch.inference_mode():
        sig = sd3["C"]["BasicScheduler"].execute(sd3["model"], "simple", 6, 1.0)[0]
        inv = sd3["C"]["InvEditSamplerFireFlow"].execute("invert")[0]
    with pytest.raises(ValueError, match="reaches σ = 1"):
        custom(sd3, inv, sig, sd3["src"])
