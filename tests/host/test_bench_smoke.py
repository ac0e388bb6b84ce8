"""The benchmark scripts run against the assembled files (tiny settings; their figures are not judged here)."""
import os

import pytest
from bench import (bench_asyrp, bench_bdia, bench_caso, bench_csds, bench_ddim, bench_doodl, bench_edict, bench_flow,
                   bench_stylediffusion, eval_shapes, realscale)


def ratio_row(out: str, what: str) -> list:
    """The cells of a ratio table's row: what, rounds, min, median, max, target, verdict."""
    line = next(line for line in out.splitlines() if line.startswith(f"| {what} "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == 7 and float(cells[2]) <= float(cells[3]) <= float(cells[4]), cells
    assert cells[6] == "-" if cells[5] == "-" else cells[6] in ("PASS", "FAIL"), cells
    return cells


def test_bench_ddim_prints_its_ratio_table(comfy, capsys, tmp_path):
    import json
    rep = bench_ddim.main(["--size", "64", "--steps", "2", "--rounds", "2", "--json", str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    cells = ratio_row(out, "invert / KSampler")
    assert cells[1] == "2" and cells[5] == "<= 1.05" and cells[6] == rep.ratios[0].verdict
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["host"]["comfyui"] and doc["machine"]["cores"] >= 1
    assert len(doc["runs"][0]["times"]["InvEditDDIMInvert"]) == 2 and doc["runs"][0]["ratios"][0]["target"] == 1.05


def test_python_m_bench_gathers_the_ratios_with_the_host_and_machine(comfy, capsys, tmp_path):
    import importlib
    import json
    main = importlib.import_module("bench.__main__")
    assert main.main(["--only", "ddim,flow", "--rounds", "2", "--bench-args", "--size 64 --steps 2",
                      "--json", str(tmp_path / "all.json"), "--md", str(tmp_path / "all.md")]) == 0
    out = capsys.readouterr().out
    table = (tmp_path / "all.md").read_text()
    assert table in out and "host ComfyUI 0.3" in table and " cores" in table
    assert "| ddim " in table and "| invert / KSampler " in table and "| flow " in table
    doc = json.loads((tmp_path / "all.json").read_text())
    assert [r["bench"] for r in doc["runs"]] == ["ddim", "flow"] and set(doc["wall_s"]) == {"ddim", "flow"}
    assert doc["host"]["comfyui"].startswith("0.3") and doc["failed"] == []


def test_bench_caso_prints_its_ratio_table(comfy, capsys):
    bench_caso.main(["--steps", "4", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "CASO training step" in out and "MiB plain" in out
    assert ratio_row(out, "training step / gradient floor + text encoder")[5] == "<= 1.25"


def test_bench_edict_prints_its_ratio_table(comfy, capsys):
    for world in ("unet", "sd3"):
        bench_edict.main(["--size", "64", "--steps", "2", "--rounds", "1", "--world", world])
        out = capsys.readouterr().out
        assert ratio_row(out, "EDICT / DDIM, sampling")[5] == ratio_row(out, "EDICT / DDIM, inversion")[5] == "<= 2.05"
        assert "EDICT (float64 state)" in out
        assert ("SD3 MMDiT" in out) == (world == "sd3")


def test_bench_bdia_prints_its_ratio_table(comfy, capsys):
    for world in ("unet", "sd3"):
        bench_bdia.main(["--size", "64", "--steps", "3", "--rounds", "1", "--world", world])
        out = capsys.readouterr().out
        assert ratio_row(out, "BDIA / DDIM, sampling")[5] == ratio_row(out, "BDIA / DDIM, inversion")[5] == "<= 1.05"
        assert ratio_row(out, "EDICT / DDIM, sampling (beside)")[5] == "-"
        assert "BDIA (float64 state)" in out and ("SD3 MMDiT" in out) == (world == "sd3")


def test_bench_csds_prints_its_ratio_table(comfy, capsys):
    bench_csds.main(["--size", "64", "--steps", "4", "--rounds", "1"])
    out = capsys.readouterr().out
    assert ratio_row(out, "CSDS iteration / sampler step")[5] == "<= 2.1"


def test_bench_flow_prints_the_dit_vs_unet_ratio(comfy, capsys):
    bench_flow.main(["--steps", "2", "--rounds", "1"])
    assert ratio_row(capsys.readouterr().out, "SD3 world / U-Net world, per image")[5:] == ["-", "-"]


def test_bench_asyrp_prints_its_ratio_table(comfy, capsys):
    bench_asyrp.main(["--size", "64", "--steps", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    assert ratio_row(out, "Asyrp step, shared encoder / plain step")[5] == "<= 1.5"
    assert ratio_row(out, "Asyrp step, two full passes / plain step")[5] == "-"
    floor = ratio_row(out, "floor (E + 2D) / (E + D) of this U-Net")  # both halves timed: strictly between 1 and 2
    assert 1.0 < float(floor[3]) < 2.0 and floor[5] == "-"


def test_bench_stylediffusion_prints_its_tables(comfy, capsys):
    bench_stylediffusion.main(["--steps", "3", "--rounds", "1", "--sweep", "2", "--official", "3"])
    out = capsys.readouterr().out
    assert "StyleDiffusion, official (K 3, official init)" in out and "null-text (10 a step)" in out
    assert "/ base" in out and "inner iteration (StyleDiffusion)" in out
    assert ratio_row(out, "P2Plus edit step / plain 2-row CFG step")[5] == "<= 1.2"
    assert ratio_row(out, "inner iteration / U-Net forward + backward")[5] == "-"


def test_eval_shapes_reports_every_measure(comfy, capsys):
    r = eval_shapes.evaluate(seeds=1, steps=4, cfg=5.0, heldout=32)
    r.update(eval_shapes.edict_vs_ddim(2, steps=6))
    eval_shapes.print_edict_tables(r, 2)
    assert "Prompt-swap edit" in capsys.readouterr().out
    assert r["recon"]["edict", 3.0]["latent_mse"] <= 1e-12 < r["recon"]["ddim", 3.0]["latent_mse"]
    assert set(eval_shapes.TARGETS) <= set(r)
    assert all(0.0 <= r[k] <= 1.0 for k in eval_shapes.TARGETS if not k.endswith("_db"))
    assert r["vae_psnr_db"] > 20


def test_eval_shapes_reports_the_hspace_scores(comfy, capsys, monkeypatch):
    for k, v in dict(strengths=(0.0, 5.0), sweep=(-1.0, 1.0), trained_strengths=(0.0, 1.0), steps=6).items():
        monkeypatch.setitem(eval_shapes.HSPACE, k, v)
    r = eval_shapes.hspace_red_to_blue(seeds=1, train_images=1)
    eval_shapes.print_hspace_tables(r)
    out = capsys.readouterr().out
    assert "shape kept" in out and "unconditional samples" in out and "trained with the toy CLIP" in out
    assert set(r["prompts"]) == set(eval_shapes.HSPACE["strengths"]) and set(r["sweep"]) == set(eval_shapes.HSPACE["sweep"])
    assert r["prompts"][0.0]["shape_kept"] == 1.0 and all(0 <= v["p_blue"] <= 1 for v in r["sweep"].values())


@pytest.mark.parametrize("world", ["unet", "sd3"])
def test_bench_doodl_prints_its_tables(comfy, capsys, monkeypatch, world):
    monkeypatch.setattr(bench_doodl, "STEP_COUNTS", (2, 4))
    bench_doodl.main(["--size", "64", "--steps", "2", "--rounds", "1", "--world", world, "--iterations", "2"])
    out = capsys.readouterr().out
    assert "per iteration (t(2) − t(1)) / 1" in out
    assert "target <= 1.1 for reversible T=4 / T=2" in out and "DOODL iteration (reversible)" in out and "| naive" in out
    assert ratio_row(out, "DOODL iteration / EDICT generation")[5] == "<= 4"
    assert ratio_row(out, "memory reversible T=4 / T=2")[1] == "1"


def test_eval_shapes_reports_doodl_vs_guidance(comfy, capsys, monkeypatch):
    monkeypatch.setitem(eval_shapes.DOODL, "steps", 3)
    monkeypatch.setitem(eval_shapes.DOODL, "iterations", 1)
    r = eval_shapes.doodl_vs_guidance(seeds=1)
    eval_shapes.print_doodl_table(r)
    assert "DOODL vs one-step guidance vs plain" in capsys.readouterr().out
    assert set(r["doodl"]) == {"plain EDICT", "one-step guidance", "DOODL", "plain EDICT, best of 3"}
    assert r["doodl"]["DOODL"]["evals"] == 2 * 2 * 3 + 1 * 2 * 3 and all(0 <= v["blue"] <= 1 for v in r["doodl"].values())


@pytest.mark.slow
def test_scorecard_scores_every_method_on_the_same_images(comfy, tmp_path):
    """One row per method and task, each judged on the same image(s); the counters see what each method spends.
    Slow (about 90 s on 2 cores): `make test-slow`, and every `make bench` runs the scorecard in full."""
    import math
    from bench import scorecard
    text, out, rows = scorecard.run(n_images=1, seeds=1, out=tmp_path, quick=True)
    def short(r):
        return r.task, r.method.split(",")[0].split(" (")[0]
    by = {short(r): r for r in rows if not r.method.endswith("(SD3)")}
    sd3 = {short(r): r for r in rows if r.method.endswith("(SD3)")}
    assert set(sd3) == {("edit", "DDIM prompt swap"), ("edit", "EDICT prompt swap"), ("edit", "DOODL classifier"),
                        ("edit", "EMS text only"), ("edit", "EMS + CSDS"), ("edit", "BDIA prompt swap"),
                        ("edit", "RF-Solver prompt swap"), ("edit", "FireFlow prompt swap"), ("edit", "FlowEdit"),
                        *((t, m) for t in ("generate", "rare") for m in ("plain EDICT", "DOODL classifier"))}
    assert sd3["edit", "EDICT prompt swap"].recon_psnr[0] > sd3["edit", "DDIM prompt swap"].recon_psnr[0]
    edit = {m for t, m in by if t == "edit"}
    assert {"DDIM prompt swap", "EDICT prompt swap", "BDIA prompt swap", "h-space", "DOODL classifier", "DOODL CLIP",
            "one-step guidance", "DDIM + P2P", "null-text + P2P", "StyleDiffusion + P2Plus", "CASO class alone",
            "CASO class in a prompt", "EMS text only", "EMS + CSDS"} <= edit
    assert any(m.startswith("SDEdit") for m in edit)
    assert {m for t, m in by if t == "generate"} == {m for t, m in by if t == "rare"} == {
        "plain EDICT", "one-step guidance", "DOODL classifier"}
    for r in rows:
        assert len(r.verdicts) == len(r.clip_colour) == 1 and r.evals[0] > 0, r.method
        grads = r.method.startswith(("DOODL", "one-step", "null-text", "StyleDiffusion"))
        assert (r.backward[0] > 0) == grads, (r.method, r.backward)
    # the same inversion settings: EDICT reconstructs better than DDIM; a plain sample judged against itself is exact
    edict, ddim = by["edit", "EDICT prompt swap"], by["edit", "DDIM prompt swap"]
    assert edict.recon_psnr[0] > ddim.recon_psnr[0]
    assert by["edit", "BDIA prompt swap"].recon_psnr[0] == pytest.approx(edict.recon_psnr[0], abs=0.05)  # both exact
    assert all(len(by["edit", m].recon_psnr) == 1 for m in ("DDIM + P2P", "null-text + P2P", "StyleDiffusion + P2Plus"))
    plain = next(r for r in rows if (r.task, r.method) == ("generate", "plain EDICT")).verdicts[0]
    assert plain.shift_px == 0 and plain.background_psnr_db >= 100 and math.isfinite(plain.p_colour)
    assert (out / "edit_grid.png").stat().st_size > 0 and "| edit | EDICT prompt swap |" in text
    assert "CASO own class" in text and "CASO reverse edit" in text
    assert "EMS degree sweep (SD3 world" in text and "SDE (U-Net world" in text
    import folder_paths  # the CASO row's file for the stock encoder is gone again
    assert not [f for r in folder_paths.get_folder_paths("embeddings") for f in os.listdir(r)
                if f.startswith(scorecard.CASO_PREFIX)]


@pytest.mark.slow
def test_realscale_builds_a_full_size_sd15_and_prints_its_table(comfy, capsys, tmp_path):
    """Slow (about 80 s on 2 cores, most of it building the 860 M-parameter U-Net): `make test-slow`."""
    import json
    r = realscale.main(["--models", "sd15", "--methods", "sampling,vae,csds", "--size", "64", "--steps", "2",
                        "--out", str(tmp_path)])
    out = capsys.readouterr().out
    m = r["models"]["sd15"]
    assert 859e6 < m["params"] < 861e6  # SD1.5's U-Net: 859.5 M
    rows = {row["what"]: row for row in m["rows"]}
    for what in ("DDIM inversion step", "EDICT sampler step", "Asyrp step, shared encoder"):
        assert rows[what]["to"] == "stock euler step" and rows[what]["ratio"] > 0.5 and what in out
    assert rows["EDICT sampler step"]["ratio"] > 1.5  # two model evaluations a step, whatever the machine
    assert "VAE decode" in rows and any(k.startswith("CSDS iteration") for k in rows)
    assert all(row["memory"].get("rss_peak_gib", 0) > 3 for row in m["rows"])  # the CPU's memory column
    assert json.loads((tmp_path / "realscale.json").read_text())["models"]["sd15"]["rows"] == json.loads(
        json.dumps(m["rows"]))
    assert "| EDICT sampler step" in (tmp_path / "realscale.md").read_text()


@pytest.mark.slow
def test_realscale_every_method_on_full_size_sd15(comfy, tmp_path):
    """Every method on the full-size SD1.5 (64², 2 steps; ~4 minutes on 2 cores): DOODL's reversible backward holds
    the same activations at T = 10 as at T = 2, and CASO's gradient checkpointing keeps fewer than its plain step."""
    r = realscale.main(["--models", "sd15", "--size", "64", "--steps", "2"])
    rows = {row["what"]: row for row in r["models"]["sd15"]["rows"]}
    assert rows["DOODL memory, T = 10 (64²)"]["ratio"] <= 1.1
    plain = rows["CASO training step, fp32 (batch 1)"]["memory"]["saved_peak_mib"]
    assert rows["CASO training step, fp32, checkpointing (batch 1)"]["memory"].get("saved_peak_mib", 0) < plain / 10
    assert rows["StyleDiffusion inner iteration"]["seconds"] > 0


def test_live_bytes_counts_each_storage_once_and_leaves_the_weights_out():
    import torch
    from bench.common import LiveBytes
    w = torch.randn(256, 256, requires_grad=True)
    frozen = torch.randn(256, 256)
    counter = LiveBytes(distinct=True, exclude=frozenset({frozen.untyped_storage().data_ptr()}))
    x = torch.randn(8, 256, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        y = (x @ frozen) @ w   # saves x, frozen (excluded), x @ frozen and w
        z = (x * x).sum()      # saves x twice more: the same storage
    expected = 2 * 8 * 256 * 4 + 256 * 256 * 4  # x, x @ frozen, w
    assert counter.peak == expected
    (y.sum() + z).backward()
    del y, z
    assert counter.live == 0
    naive = LiveBytes()
    with torch.autograd.graph.saved_tensors_hooks(naive.pack, naive.unpack):
        z = (x * x).sum()
    assert naive.peak == 2 * 8 * 256 * 4  # the plain mode counts every saved tensor
