"""The benchmark scripts run against the assembled files (tiny settings; their figures are not judged here)."""
from bench import bench_ddim, eval_shapes


def test_bench_ddim_prints_its_ratio_table(comfy, capsys):
    bench_ddim.main(["--size", "64", "--steps", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "ratio invert / KSampler" in out and "target <= 1.05" in out


def test_eval_shapes_reports_every_measure(comfy):
    r = eval_shapes.evaluate(seeds=1, steps=4, cfg=5.0, heldout=32)
    assert set(eval_shapes.TARGETS) <= set(r)
    assert all(0.0 <= r[k] <= 1.0 for k in eval_shapes.TARGETS if not k.endswith("_db"))
    assert r["vae_psnr_db"] > 20
