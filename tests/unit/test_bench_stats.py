"""The benches' statistics (bench/common.py): per-round ratios of arms timed back to back, the order reversed every
other round, min / median / max over the rounds, a target judged on the median; the summary table of `python -m
bench`."""
import importlib
import json

import pytest
from bench import common


class Clock:
    """A fake perf_counter: each call of an arm advances it by the arm's cost, plus ``first_penalty`` for whichever
    arm runs first in its round (a cache or frequency effect that the order must share between the arms)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def arms(clock, costs: dict, log: list, first_penalty: float = 0.0):
    state = {"in_round": 0}

    def make(name):
        def run():
            log.append(name)
            clock.now += costs[name] + (first_penalty if state["in_round"] % len(costs) == 0 else 0.0)
            state["in_round"] += 1
        return run
    return {k: make(k) for k in costs}


def test_spread_is_min_median_max():
    assert common.spread([3.0, 1.0, 2.0, 10.0, 0.5]) == (0.5, 2.0, 10.0)
    assert common.spread([1.0, 2.0]) == (1.0, 1.5, 2.0)
    with pytest.raises(ValueError):
        common.spread([])


def test_round_order_reverses_every_other_round():
    assert common.round_order(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert common.round_order(["a", "b", "c"], 1) == ["c", "b", "a"]
    assert common.round_order({"a": 1, "b": 2}, 2) == ["a", "b"]


def test_interleaved_times_each_round_back_to_back_in_alternating_order():
    clock, log = Clock(), []
    runs = arms(clock, {"a": 2.0, "b": 1.0}, log)
    times = common.interleaved(runs, rounds=4, steps=2, clock=clock)
    assert log == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]  # the warm-up, then ABBA…
    assert times == {"a": [1.0] * 4, "b": [0.5] * 4}  # seconds per step
    per = common.interleaved(runs, rounds=1, steps={"a": 4, "b": 1}, clock=clock, warmup=False)
    assert per == {"a": [0.5], "b": [1.0]}


def test_alternation_shares_a_penalty_on_the_first_arm_between_both_sides():
    clock, log = Clock(), []
    runs = arms(clock, {"a": 1.0, "b": 1.0}, log, first_penalty=0.5)
    times = common.interleaved(runs, rounds=8, steps=1, clock=clock, warmup=False)
    r = common.per_round(times["a"], times["b"])
    assert r == [1.5, 1 / 1.5] * 4  # without the alternation every round would read 1.5
    assert common.spread(r)[1] == pytest.approx((1.5 + 1 / 1.5) / 2)


def test_per_round_pairs_the_rounds_and_refuses_unequal_lengths():
    assert common.per_round([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError):
        common.per_round([1.0], [1.0, 2.0])


def test_a_target_is_judged_on_the_median_not_on_one_round():
    noisy = common.Ratio("x", [0.9, 1.3, 1.0, 1.02, 0.7, 1.04, 1.2], target=1.05)
    assert (noisy.min, noisy.median, noisy.max) == (0.7, 1.02, 1.3) and noisy.verdict == "PASS"
    slow = common.Ratio("x", [1.0, 1.06, 1.07, 1.2, 0.9, 1.1, 1.08], target=1.05)
    assert slow.median == 1.07 and slow.verdict == "FAIL"
    assert common.Ratio("x", [2.0]).verdict == "-"
    d = noisy.as_dict()
    assert d["median"] == 1.02 and d["verdict"] == "PASS" and d["values"] == noisy.values


def test_the_parser_defaults_to_seven_rounds_and_warns_below(capsys):
    ap = common.parser("doc", steps=4, cfg=1.0)
    assert ap.parse_args([]).rounds == common.MIN_ROUNDS == 7
    assert "warning" not in capsys.readouterr().err
    assert ap.parse_args(["--rounds", "3"]).rounds == 3
    assert "--rounds 3 < 7" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ap.parse_args(["--rounds", "0"])


def test_a_report_prints_its_ratios_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common, "RUNS", [])
    monkeypatch.setattr(common, "machine", lambda: {"cpu": "Test CPU", "cores": 2, "cores_usable": 2,
                                                    "torch": "x", "threads": 2})
    args = common.parser("doc", steps=4, cfg=1.0).parse_args(["--json", str(tmp_path / "r.json")])
    rep = common.Report("ddim", args)
    rep.time_table("times", {"a": [1.0, 3.0, 2.0], "b": [1.0, 1.0, 1.0]}, base="b")
    rep.ratio("a / b", [1.0, 3.0, 2.0], 1.05)
    rep.finish("Ratios")
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| a / b"))
    assert [c.strip() for c in row.strip("|").split("|")] == ["a / b", "3", "1.000", "2.000", "3.000", "<= 1.05",
                                                             "FAIL"]
    assert common.RUNS == [rep]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["host"]["comfyui"] == common.host_version() and doc["machine"]["cpu"] == "Test CPU"
    run = doc["runs"][0]
    assert run["bench"] == "ddim" and run["settings"]["rounds"] == 7 and "json" not in run["settings"]
    assert run["times"]["a"] == [1.0, 3.0, 2.0] and run["ratios"][0]["median"] == 2.0


def test_python_m_bench_summary_has_the_host_the_machine_and_every_ratio():
    main = importlib.import_module("bench.__main__")
    rep = common.Report("edict (unet)")
    rep.ratio("EDICT / DDIM, sampling", [2.0, 2.1, 1.98], 2.05)
    rep.ratio("SD3 / U-Net", [0.3, 0.4, 0.35])
    text = main.summary([rep], "0.3.75", {"cpu": "Test CPU", "cores": 2, "cores_usable": 2, "torch": "2.x",
                                          "threads": 2}, {"edict": 12.0})
    assert "ComfyUI 0.3.75" in text and "Test CPU, 2 cores" in text and "12 s in all" in text
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if "| edict (unet)" in line]
    assert rows == [["edict (unet)", "EDICT / DDIM, sampling", "3", "1.980", "2.000", "2.100", "<= 2.05", "PASS"],
                    ["edict (unet)", "SD3 / U-Net", "3", "0.300", "0.350", "0.400", "-", "-"]]
