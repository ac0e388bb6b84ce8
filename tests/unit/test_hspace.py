"""h-space directions and patch (hooks/directions.py, hooks/hspace.py), the Asyrp step (samplers/asyrp.py) and the
direction file format (artifacts/hspace.py): pure torch."""
import json

import pytest
import torch

from invedit import artifacts
from invedit.hooks import directions, hspace, passes
from invedit.hooks.directions import Direction
from invedit.hooks.hspace import HSpacePatch
from invedit.samplers import asyrp


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def opts(block=("output", 0), sigma=5.0, kinds=(0, 1), pass_=None):
    o = {"block": block, "sigmas": torch.tensor([sigma]), "cond_or_uncond": list(kinds)}
    if pass_:
        o[passes.PASS_KEY] = pass_
    return o


# --- directions ------------------------------------------------------------------------------------------------------

def test_lookup_is_nearest_in_log_sigma_and_global_applies_everywhere():
    d = Direction(torch.arange(3.0).view(3, 1, 1, 1).expand(3, 2, 2, 2).clone(), torch.tensor([10.0, 1.0, 0.1]))
    assert float(d.at(12.0)[0, 0, 0]) == 0 and float(d.at(2.0)[0, 0, 0]) == 1 and float(d.at(0.05)[0, 0, 0]) == 2
    assert float(d.at(3.5)[0, 0, 0]) == 0  # log-nearest: |ln 3.5 − ln 10| < |ln 3.5 − ln 1|
    g = Direction(torch.ones(1, 2, 2, 2), torch.tensor([1.0]))
    assert torch.equal(g.at(1e3), g.at(1e-3))


def test_combine_is_linear_and_interpolation_hits_its_ends():
    a = Direction(rand(4, 8, 2, 2, seed=1), torch.tensor([8.0, 4.0, 2.0, 1.0]))
    b = Direction(rand(1, 8, 2, 2, seed=2), torch.tensor([1.0]))
    c = directions.combine([(a, 0.7), (b, -1.5)])
    for s in (9.0, 3.0, 1.0):
        torch.testing.assert_close(c.at(s), 0.7 * a.at(s) - 1.5 * b.at(s), rtol=0, atol=1e-6)
    for alpha, end in ((0.0, a), (1.0, b)):  # interpolation (1 − α)·a + α·b hits its ends
        torch.testing.assert_close(directions.combine([(a, 1 - alpha), (b, alpha)]).at(4.0), end.at(4.0), rtol=0, atol=1e-7)
    with pytest.raises(directions.HSpaceError, match="different channel counts"):
        directions.combine([(a, 1.0), (Direction(rand(1, 4, 2, 2), torch.tensor([1.0])), 1.0)])
    with pytest.raises(directions.HSpaceError, match="different shapes"):
        directions.combine([(a, 1.0), (Direction(rand(1, 8, 4, 4), torch.tensor([1.0])), 1.0)])


def test_spatial_policies():
    d = rand(8, 4, 4)
    assert directions.fit_spatial(d, (4, 4), "strict") is d
    assert directions.fit_spatial(d, (6, 3), "resize").shape == (8, 6, 3)
    cm = directions.fit_spatial(d, (6, 3), "channel_mean")
    assert cm.shape == (8, 1, 1) and torch.allclose(cm[:, 0, 0], d.mean((1, 2)))
    with pytest.raises(directions.HSpaceError, match=r"\(4, 4\) but h is \(6, 3\)"):
        directions.fit_spatial(d, (6, 3), "strict")


# --- the patch -------------------------------------------------------------------------------------------------------

def patch(strength=1.0, mode="asymmetric", apply_to="both", hi=10.0, lo=1.0, delta=None):
    d = Direction(rand(1, 8, 4, 4, seed=3) if delta is None else delta, torch.tensor([1.0]), {"family": "SD15"})
    return HSpacePatch(d, strength, hi, lo, mode, apply_to, "strict")


def test_patch_adds_strength_times_delta_only_at_output_block_0_and_only_on_the_edit_pass():
    h, hsp = rand(2, 8, 4, 4, seed=4), rand(2, 8, 4, 4, seed=5)
    p = patch(2.5)
    d = p.direction.delta[0]
    out, out_sp = p(h, hsp, opts(pass_="edit"))
    assert torch.equal(out, h + 2.5 * d) and out_sp is hsp
    for o in (opts(pass_="orig"), opts(), opts(block=("output", 1), pass_="edit"), opts(block=("middle", 0))):
        assert p(h, hsp, o)[0] is h
    sym = patch(2.5, mode="symmetric")
    assert torch.equal(sym(h, hsp, opts())[0], h + 2.5 * d)


def test_output_is_linear_in_strength():
    """The injected h is exactly h + s·Δh for every s (so P_edit − P_orig is linear in s for a decoder linear in h)."""
    h = rand(2, 8, 4, 4, seed=6)
    outs = {}
    for s in (0.0, 1.0, 3.0, -1.0):
        p = patch(s, mode="symmetric")
        outs[s] = p(h, h, opts())[0]
        assert torch.equal(outs[s], h if s == 0 else h + s * p.direction.delta[0])
    torch.testing.assert_close(outs[3.0] - h, 3 * (outs[1.0] - h), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[-1.0] - h, -(outs[1.0] - h), rtol=1e-5, atol=1e-5)


def test_window_is_inclusive_and_nothing_outside():
    p = patch(mode="symmetric", hi=10.0, lo=1.0)
    h = rand(2, 8, 4, 4, seed=7)
    for sigma, inside in ((10.0, True), (1.0, True), (5.0, True), (10.01, False), (0.99, False)):
        assert (p(h, h, opts(sigma=sigma))[0] is not h) == inside, sigma


def test_apply_to_selects_cond_or_uncond_chunks():
    h = torch.zeros(4, 8, 4, 4)  # two chunks of batch 2: cond_or_uncond [0, 1]
    for who, changed in (("cond", [True, True, False, False]), ("uncond", [False, False, True, True]),
                         ("both", [True] * 4)):
        out = patch(mode="symmetric", apply_to=who)(h, h, opts(kinds=(0, 1)))[0]
        assert [bool(out[i].abs().sum() > 0) for i in range(4)] == changed, who


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(directions.HSpaceError, match="8 channels but this model's h-space has 16"):
        patch(mode="symmetric")(rand(1, 16, 4, 4), rand(1, 16, 4, 4), opts())


# --- the Asyrp step --------------------------------------------------------------------------------------------------

def euler(x, sigma, sigma_next, p):
    """ComfyUI's sample_euler step (s_churn 0): d = (x − D)/σ; x + d·(σ' − σ)."""
    d = (x - p) / sigma
    return x + d * (sigma_next - sigma)


def test_asymmetric_step_without_a_shift_is_bit_identical_to_euler():
    x, p = rand(1, 4, 8, 8, seed=8) * 5, rand(1, 4, 8, 8, seed=9)
    s, sn = torch.tensor(4.2), torch.tensor(3.1)
    assert torch.equal(asyrp.asyrp_step(x, s, sn, p, p.clone()), euler(x, s, sn, p))
    assert torch.equal(asyrp.symmetric_step(x, s, sn, p), euler(x, s, sn, p))


def test_asymmetric_step_is_the_papers_equation_and_stronger_than_symmetric():
    """x' = P_edit + σ'(x − P_orig)/σ; a symmetric shift moves x' by only (1 − σ'/σ)(P_edit − P_orig)."""
    x, po, pe = rand(1, 4, 8, 8, seed=10) * 5, rand(1, 4, 8, 8, seed=11), rand(1, 4, 8, 8, seed=12)
    s, sn = torch.tensor(4.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    x, po, pe = x.double(), po.double(), pe.double()
    torch.testing.assert_close(asyrp.asyrp_step(x, s, sn, po, pe), pe + sn * (x - po) / s)
    sym = asyrp.symmetric_step(x, s, sn, pe) - asyrp.symmetric_step(x, s, sn, po)
    torch.testing.assert_close(sym, (1 - sn / s) * (pe - po))
    torch.testing.assert_close(asyrp.asyrp_step(x, s, sn, po, pe) - asyrp.symmetric_step(x, s, sn, po), pe - po)


def test_boost_step_is_ddim_eta1():
    s, sn = torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.2, dtype=torch.float64)
    down, up = asyrp.ancestral_sigmas(s, sn, 1.0)
    torch.testing.assert_close(down ** 2 + up ** 2, sn ** 2)
    torch.testing.assert_close(up, (sn ** 2 * (s ** 2 - sn ** 2) / s ** 2) ** 0.5)
    x, p, z = (rand(1, 4, 4, 4, seed=k).double() for k in (13, 14, 15))
    torch.testing.assert_close(asyrp.boost_step(x, s, sn, p, z), p + down * (x - p) / s + up * z)
    torch.testing.assert_close(asyrp.boost_step(x, s, sn, p, z, eta=0.0), euler(x, s, sn, p))


def test_sampler_loop_edits_only_in_the_window_and_boosts_below_sigma_boost():
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0])
    calls = []

    def denoise(x, s, edit):
        calls.append((float(s), edit))
        return x * 0.5, (x * 0.5 + 0.1 if edit else None)
    noise = []
    asyrp.asyrp_sample(denoise, torch.ones(1, 4, 2, 2), sigmas, lambda s: s >= 4.0, sigma_boost=1.5,
                       noise=lambda s, sn: noise.append(float(s)) or torch.zeros(1, 4, 2, 2))
    assert calls == [(8.0, True), (4.0, True), (2.0, False), (1.0, False), (0.5, False)]
    assert noise == [1.0]  # boost below σ 1.5, but never on the final step to 0


def test_where_t_boost_lies_above_t_edit_the_edit_steps_below_it_are_boosted_too():
    """Issue 24, item 6: the official generative loop (diffusion_latent.py save_image) sets η = 1 at every step with
    t < t_addnoise and shifts h at every step with t ≥ t_edit, so a step in both gets both: x' = P_edit +
    σ_down·d_orig + σ_up·z. The pack gave the edit step priority (no noise) before."""
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    x0 = rand(1, 4, 2, 2, seed=20).double() * 8
    z = rand(1, 4, 2, 2, seed=21).double()

    def denoise(x, s, edit):
        return x * 0.4, (x * 0.4 + 0.3 if edit else None)
    seen = []
    out = asyrp.asyrp_sample(denoise, x0, sigmas, lambda s: s >= 2.0, sigma_boost=5.0,
                             noise=lambda s, sn: seen.append(float(s)) or z)
    assert seen == [4.0, 2.0]  # the steps below σ_boost draw noise, edit steps included (none on the last, to 0)
    x = asyrp.asyrp_step(x0, sigmas[0], sigmas[1], x0 * 0.4, x0 * 0.4 + 0.3)  # σ 8 is above σ_boost: no noise
    for s, sn in ((4.0, 2.0), (2.0, 1.0)):
        down, up = asyrp.ancestral_sigmas(torch.tensor(s).double(), torch.tensor(sn).double(), 1.0)
        x = (x * 0.4 + 0.3) + down * (x - x * 0.4) / s + up * z
    x = asyrp.symmetric_step(x, torch.tensor(1.0).double(), torch.tensor(0.0).double(), x * 0.4)
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


# --- files -----------------------------------------------------------------------------------------------------------

def test_direction_files_round_trip(tmp_path):
    d, s = rand(3, 8, 4, 4, seed=16), torch.tensor([9.0, 3.0, 1.0], dtype=torch.float64)
    tensors, meta = directions.to_tensors(directions.Direction(d, s, {"family": "SD15", "kind": "prompts"}))
    p = artifacts.save(tmp_path / "red_to_blue.safetensors", "hspace", tensors, meta)
    loaded = directions.from_tensors(*artifacts.load(p, "hspace", "test"))
    d2, s2, meta = loaded.delta, loaded.sigmas, loaded.meta
    assert torch.equal(d2, d) and torch.equal(s2, s)
    assert meta["family"] == "SD15" and meta["format"] == artifacts.hspace.FORMAT and meta["channels"] == "8"
    assert json.loads(meta["h_hw"]) == [4, 4]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 200])
def test_unsafe_names_are_refused(name):
    with pytest.raises(artifacts.ArtifactError, match="unsafe file name"):
        artifacts.safe_file_name(name, "test")


def test_foreign_and_pickled_files_are_refused(tmp_path):
    from safetensors.torch import save_file
    (tmp_path / "x.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(artifacts.ArtifactError, match="pickled files are refused"):
        artifacts.load(tmp_path / "x.pt", "hspace", "test")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(artifacts.ArtifactError, match="not an h-space direction file"):
        artifacts.load(tmp_path / "lora.safetensors", "hspace", "test")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(artifacts.ArtifactError, match="cannot read junk.safetensors .*; replace it with a complete"):
        artifacts.load(tmp_path / "junk.safetensors", "hspace", "test")
    # a pickle renamed to .safetensors is told apart (by its first bytes, never unpickled)
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")
    torch.save({"delta_h": Payload()}, str(tmp_path / "renamed.safetensors"))
    with pytest.raises(artifacts.ArtifactError, match="renamed.safetensors is a pickle .*never loaded: convert it"):
        artifacts.load(tmp_path / "renamed.safetensors", "hspace", "test")
    assert not marker.exists()


def test_direction_files_written_by_version_0_1_still_load():
    """Files saved by the 0.1 layout (commit 7618b13's artifacts.py, tests/fixtures/v0_1/): a prompt direction of
    torch.randn(3, 8, 4, 4) from seed 11, and a trained f_t with Δt_train 25."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "fixtures" / "v0_1"
    d = directions.from_tensors(*artifacts.load(root / "direction_prompts.safetensors", "hspace", "test"))
    assert torch.equal(d.delta, torch.randn(3, 8, 4, 4, generator=torch.Generator().manual_seed(11)))
    assert d.sigmas.tolist() == [10.0, 2.0, 0.5] and d.meta["name"] == "v0.1 fixture"
    f = directions.from_tensors(*artifacts.load(root / "direction_trained.safetensors", "hspace", "test"))
    assert isinstance(f, directions.ImplicitDirection) and f.train_dt == 25.0
    h = rand(2, 8, 4, 4, seed=3)
    assert f.delta_for(h, directions.Where(1.0, 500.0)).abs().max() > 0
