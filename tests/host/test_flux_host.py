"""Flux (random weights, never trained: hidden 3072 is fixed by ComfyUI's detection, so the smallest Flux has 394 M
parameters) through the stock UNETLoader + CLIPLoader + VAELoader: the DDIM inverter's shapes and settings, and the
EDICT and BDIA round trips with the flow Euler step, exact in the LATENT (issue 15, point 8; issue 28). One module-scoped file in a
temporary folder registered as a diffusion_models path."""
import pytest
import torch

from host_models import write_random_flux

OPTS = dict(mix_p=0.93, leapfrog=True, official_input_scaling=True)
STEPS = 3


@pytest.fixture(scope="module")
def flux(comfy, tmp_path_factory):
    import folder_paths
    import nodes
    folder = tmp_path_factory.mktemp("flux")
    n = write_random_flux(folder / "flux_random.safetensors")
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    with torch.inference_mode():
        model = nodes.UNETLoader().load_unet("flux_random.safetensors", "default")[0]
        clip = nodes.CLIPLoader().load_clip("shapes_clip_l.safetensors", "stable_diffusion")[0]
        vae = nodes.VAELoader().load_vae("shapes_taesd16.safetensors")[0]
        pos = nodes.CLIPTextEncode().encode(clip, "a red circle")[0]
    yield {"model": model, "vae": vae, "pos": pos, "params": n}
    folder_paths.folder_names_and_paths["diffusion_models"][0].remove(str(folder))


def source_latent(comfy, flux, example_image_name):
    import nodes
    with torch.inference_mode():
        img = nodes.LoadImage().load_image(example_image_name)[0]
        return {"samples": flux["vae"].encode(img[..., :3])}


def sigmas(comfy, flux, denoise):
    import nodes
    return nodes.NODE_CLASS_MAPPINGS["BasicScheduler"]().execute(flux["model"], "simple", STEPS, denoise)[0]


def test_the_stock_loader_detects_flux(flux):
    import comfy.model_sampling
    m = flux["model"]
    assert type(m.model.model_config).__name__ == "Flux" and flux["params"] > 390e6  # 393.7 M
    assert isinstance(m.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    # the q / k RMSNorm scales loaded as ones on either host (.scale on 0.3.75, .weight on 0.33; zeros: uniform attention)
    norms = [p for n, p in m.model.diffusion_model.named_parameters() if "_norm." in n]
    assert len(norms) == 4 and all(torch.equal(p.float(), torch.ones_like(p.float())) for p in norms)


def test_ddim_inverter_on_flux_gives_a_16_channel_noise_latent_with_its_settings(comfy, flux, example_image_name):
    import nodes
    src = source_latent(comfy, flux, example_image_name)
    sig = sigmas(comfy, flux, 0.5)  # 3 of 6 steps (at 0.8, int(3 / 0.8) = 3 steps would start at σ = 1)
    with torch.inference_mode():
        out = nodes.NODE_CLASS_MAPPINGS["InvEditDDIMInvert"].execute(
            model=flux["model"], positive=flux["pos"], negative=flux["pos"], latent=src, sigmas=sig, cfg=1.0)[0]
    x = out["samples"]
    assert x.shape == src["samples"].shape == (1, 16, 8, 8) and torch.isfinite(x).all()
    assert float((x - src["samples"]).abs().max()) > 1e-3
    info = out["invedit_inversion"]
    assert info["model_family"] == "Flux" and info["method"] == "ddim" and len(info["sigmas"]) == STEPS + 1
    with torch.inference_mode(), pytest.raises(ValueError, match="reaches σ = 1"):
        nodes.NODE_CLASS_MAPPINGS["InvEditDDIMInvert"].execute(
            model=flux["model"], positive=flux["pos"], negative=flux["pos"], latent=src,
            sigmas=sigmas(comfy, flux, 1.0), cfg=1.0)


def test_edict_round_trip_on_flux_is_exact(comfy, flux, example_image_name):
    """Invert to σ = 1 and regenerate: the float32 LATENT comes back bit-equal, the pair carries 'Flux'."""
    import nodes
    C = nodes.NODE_CLASS_MAPPINGS
    src = source_latent(comfy, flux, example_image_name)
    with torch.inference_mode():
        sig = C["InvEditEDICTSigmas"].execute(flux["model"], STEPS, "official_980_0", 1.0)[0]
        pair = C["InvEditEDICTInvert"].execute(model=flux["model"], positive=flux["pos"], negative=flux["pos"],
                                               latent=src, sigmas=sig, cfg=1.0, state_dtype="float64", **OPTS)[0]
        x, y = C["InvEditEDICTRegenerate"].execute(model=flux["model"], positive=flux["pos"], negative=flux["pos"],
                                                   pair=pair, cfg=1.0, **OPTS).args
    assert float(sig[0]) == 1.0 and pair["invedit_inversion"]["model_family"] == "Flux"
    assert float((pair["samples"] - src["samples"]).abs().max()) > 0.1
    assert torch.equal(x["samples"], src["samples"]) and torch.equal(y["samples"], src["samples"])


def test_bdia_round_trip_on_flux_is_exact(comfy, flux, example_image_name):
    """BDIA (issue 28) with the flow Euler step: invert to σ = 1 and regenerate, bit-equal, one call a step."""
    import nodes
    C = nodes.NODE_CLASS_MAPPINGS
    src = source_latent(comfy, flux, example_image_name)
    with torch.inference_mode():
        sig = C["InvEditEDICTSigmas"].execute(flux["model"], STEPS, "official_980_0", 1.0)[0]
        pair = C["InvEditBDIAInvert"].execute(model=flux["model"], positive=flux["pos"], negative=flux["pos"],
                                              latent=src, sigmas=sig, cfg=1.0, gamma=0.5, state_dtype="float64")[0]
        x = C["InvEditBDIARegenerate"].execute(model=flux["model"], positive=flux["pos"], negative=flux["pos"],
                                               pair=pair, cfg=1.0, gamma=0.5)[0]
    assert pair["invedit_inversion"]["model_family"] == "Flux" and pair["invedit_inversion"]["method"] == "bdia"
    assert float((pair["samples"] - src["samples"]).abs().max()) > 0.1
    assert torch.equal(x["samples"], src["samples"])


def test_flow_solver_samplers_run_on_flux(comfy, flux, example_image_name):
    """RF-Solver and FireFlow (issue 28) through the stock SamplerCustom on Flux: invert part-way and sample back."""
    import nodes
    C = nodes.NODE_CLASS_MAPPINGS
    src = source_latent(comfy, flux, example_image_name)
    sig = sigmas(comfy, flux, 0.5)
    for node in ("InvEditSamplerRFSolver", "InvEditSamplerFireFlow"):
        with torch.inference_mode():
            inv, fwd = (C[node].execute(d)[0] for d in ("invert", "sample"))
            noise = C["SamplerCustom"].execute(model=flux["model"], add_noise=False, noise_seed=0, cfg=1.0,
                                               positive=flux["pos"], negative=flux["pos"], sampler=inv, sigmas=sig,
                                               latent_image=src)[0]
            back = C["SamplerCustom"].execute(model=flux["model"], add_noise=False, noise_seed=0, cfg=1.0,
                                              positive=flux["pos"], negative=flux["pos"], sampler=fwd, sigmas=sig,
                                              latent_image=noise)[0]
        assert noise["samples"].shape == src["samples"].shape == (1, 16, 8, 8)
        assert float((noise["samples"] - src["samples"]).abs().max()) > 1e-3 and torch.isfinite(back["samples"]).all()


def test_flowedit_guider_runs_on_flux(comfy, flux, example_image_name):
    """FlowEdit (issue 28) on Flux through the GUIDER's sample: a 16-channel edit; the same prompt and CFG for both
    sides leave the latent (to float rounding)."""
    import comfy.samplers
    import nodes
    C = nodes.NODE_CLASS_MAPPINGS
    src = source_latent(comfy, flux, example_image_name)["samples"]
    with torch.inference_mode():
        sig = C["BasicScheduler"].execute(flux["model"], "simple", STEPS, 1.0)[0]
        clip = nodes.CLIPLoader().load_clip("shapes_clip_l.safetensors", "stable_diffusion")[0]
        tgt = nodes.CLIPTextEncode().encode(clip, "a blue circle")[0]
        euler = comfy.samplers.sampler_object("euler")
        outs = []
        for target in (tgt, flux["pos"]):
            g = C["InvEditFlowEditGuider"].execute(flux["model"], flux["pos"], flux["pos"], target, flux["pos"], 1.5,
                                                   1.5, STEPS, 0, 1, 0)[0]
            outs.append(g.sample(torch.zeros_like(src), src, euler, sig, disable_pbar=True, seed=0))
    assert outs[0].shape == src.shape == (1, 16, 8, 8) and torch.isfinite(outs[0]).all()
    assert float((outs[0] - src).abs().max()) > 1e-4
    assert float((outs[1] - src).abs().max()) <= 1e-4 * float(src.abs().max())


def test_ems_edit_on_flux_gives_a_16_channel_latent_and_refuses_mixed_encoders(comfy, flux, example_image_name):
    """EMS / CSDS through the same code path on Flux (guidance kept from the conditioning): shapes and errors."""
    import nodes
    C = nodes.NODE_CLASS_MAPPINGS
    clip = nodes.CLIPLoader().load_clip("shapes_clip_l.safetensors", "stable_diffusion")[0]
    src = source_latent(comfy, flux, example_image_name)
    manip = dict(edit_tokens=True, edit_pooled=True, token_part="all", length_mismatch="error")
    with torch.inference_mode():
        c_s, c_t, c_a, c_n = C["InvEditEMSEncodeEditPrompts"].execute(clip, "a red circle", "a blue circle", "blue",
                                                                      "").args
        c = C["InvEditEMSTextManipulate"].execute(c_s, c_t, 1.0, **manip).args[0]
        out = C["InvEditEMSEditSampler"].execute(
            model=flux["model"], positive=c, negative=c_n, attribute=c_a, latent_image=src, seed=0, steps=STEPS,
            strength=0.75, strength_mode="comfy_denoise", cfg=1.0, sampler_name="euler", scheduler="simple",
            iterations=1, lr_start=0.1, lr_end=0.01, lr_schedule="geometric", lambda_=0.5, csds_cfg=1.0,
            direction="toward_attribute", grad_mode="delta", step_space="auto")
    assert out.args[0]["samples"].shape == (1, 16, 8, 8) and torch.isfinite(out.args[0]["samples"]).all()
    assert "CSDS 1 iterations" in out.ui.as_dict()["text"][0]
    long = [[torch.cat([c_t[0][0], c_t[0][0]], 1), dict(c_t[0][1])]]  # 154 tokens against 77
    with torch.inference_mode(), pytest.raises(ValueError, match="the source has 77 tokens and the target 154"):
        C["InvEditEMSTextManipulate"].execute(c_s, long, 1.0, **manip)
