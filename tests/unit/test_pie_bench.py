"""bench/pie.py's pure parts: what each edit asks for, success by the judge's verdict, the tuning candidates and
the tables (the runs themselves are the bench's, on the trained scenes world)."""
import math

import pytest

from bench import pie
from harness.scenes import data, judges, suite


@pytest.fixture(scope="module")
def cases():
    return {k: suite.cases("tune", 3, kinds=(k,)) for k in suite.EDIT_TYPES}


def test_new_words_are_the_prompt_difference(cases):
    for c in cases["colour"]:
        a, b = pie.new_words(c)
        assert a in data.COLOURS and b in data.COLOURS and a != b
        assert a in c.source_prompt.split() and b in c.target_prompt.split()
    for c in cases["add"]:
        a, b = pie.new_words(c)
        assert a == "" and c.target_prompt.count(b) > c.source_prompt.count(b)
    for c in cases["remove"]:
        a, b = pie.new_words(c)
        assert b == "" and c.source_prompt.count(a) > c.target_prompt.count(a)
    for c in cases["style"]:
        assert pie.new_words(c)[1] in ("pastel", "at night")


def test_p2p_mode_replaces_one_for_one_and_refines_otherwise(cases):
    assert all(pie.p2p_mode(c) == "replace" for k in ("colour", "shape", "size", "texture") for c in cases[k])
    assert all(pie.p2p_mode(c) == "refine" for k in ("add", "remove", "style") for c in cases[k])


def test_success_reads_the_edited_attribute_only(cases):
    for kind, cs in cases.items():
        for c in cs:
            right = judges.expected(c.target, 0)
            assert pie.success(c, right) == 1.0, kind
            assert judges.compare(right, judges.expected(c.target, 0))["all"] == 1.0
            unedited = judges.expected(c.source, 0)
            assert pie.success(c, unedited) == 0.0, (kind, c.source_prompt, c.target_prompt)


def test_success_of_an_object_edit_needs_the_right_count(cases):
    c = cases["colour"][0]
    seen = judges.expected(c.target, 0)
    seen.objects = seen.objects[:-1]
    assert pie.success(c, seen) == 0.0


def test_tuning_candidates_change_one_setting_at_a_time():
    m = pie.method_by_name("DDIM prompt swap")
    cands = pie.candidates(m)
    assert cands[0] == m.settings
    for s in cands[1:]:
        changed = [(d, k) for d in s for k in s[d] if s[d][k] != m.settings.get(d, {}).get(k)]
        assert len(changed) == 1
    assert len(cands) == 1 + sum(len(v) for v in m.grid.values()) - sum(
        1 for d, vs in m.grid.items() for v in vs if m.settings[d.split(".")[0]].get(d.split(".")[1]) == v)


def test_tables_print_every_type_and_dashes_for_the_whole_image_mask():
    recs = [{"kind": k, "success": 1.0, "all_right": 0.0, "structure": 0.002, "bg_psnr": math.nan if k == "style"
             else 30.0, "bg_mse": 1e-4, "bg_ssim": 0.9, "bg_featdist": 0.01, "clip_whole": 20.0, "clip_edited": 10.0,
             "evals": 40, "bwd": 0, "seconds": 1.0} for k in suite.EDIT_TYPES]
    t = pie.summary_table({"a method": recs})
    assert all(k in t for k in suite.EDIT_TYPES) and "| 100 % | 0 % | 2.00 | 30.0 |" in t
    row = pie.type_table([("x", pie.summarise([recs[-1]]))])
    assert "| — |" in row


def test_a_cached_result_is_keyed_by_the_weights_that_made_it(monkeypatch):
    m = pie.method_by_name("DDIM prompt swap")
    monkeypatch.setitem(pie._DIGESTS, "unet", "first00000")
    k = pie._key("unet", m, m.settings, "test:colour:0:x")
    assert k == pie._key("unet", m, m.settings, "test:colour:0:x")
    monkeypatch.setitem(pie._DIGESTS, "unet", "retrained0")
    assert pie._key("unet", m, m.settings, "test:colour:0:x") != k
    assert pie.CACHE.relative_to(pie.ROOT).parts[:2] == ("docs", "bench")  # committed, so it outlives a session


def test_every_claim_compares_two_rows_of_the_scorecard():
    names = {m.name for m in pie.METHODS}
    for c in pie.CLAIMS:
        assert c.method in names and c.baseline in names and set(c.kinds) <= set(suite.EDIT_TYPES), c


def _recs(kind, success, structure, n=2):
    return [{"kind": kind, "success": success, "all_right": 0.0, "structure": structure, "bg_psnr": 25.0,
             "bg_mse": 1e-3, "bg_ssim": 0.9, "bg_featdist": 0.1, "clip_whole": 20.0, "clip_edited": 10.0,
             "evals": 40, "bwd": 0, "seconds": 1.0} for _ in range(n)]


def test_a_claim_reproduces_only_when_better_and_nothing_kept_is_lost():
    c = next(c for c in pie.CLAIMS if c.paper == "StyleDiffusion")
    base = _recs("colour", 1.0, 0.050)
    assert pie.claim_verdict(c, {c.method: _recs("colour", 1.0, 0.040), c.baseline: base})[2]
    assert not pie.claim_verdict(c, {c.method: _recs("colour", 1.0, 0.060), c.baseline: base})[2]   # worse structure
    assert not pie.claim_verdict(c, {c.method: _recs("colour", 0.5, 0.040), c.baseline: base})[2]   # success lost
    assert pie.claim_verdict(c, {c.method: _recs("colour", 0.95, 0.040), c.baseline: base})[2]      # within 0.1
    assert pie.claim_verdict(c, {c.baseline: base}) is None                                        # a row missing
    d = next(c for c in pie.CLAIMS if c.paper == "DOODL")
    rows = {d.method: _recs("style", 1.0, 0.1) + _recs("colour", 0.0, 0.1),  # colour is not a DOODL-classifier kind
            d.baseline: _recs("style", 0.5, 0.1)}
    assert pie.claim_verdict(d, rows)[0]["success"] == 1.0 and pie.claim_verdict(d, rows)[2]
    table = pie.claims_table(rows)
    assert "| DOODL |" in table and "success 100 % vs 50 %" in table and table.rstrip().endswith("**yes** |")
    assert "StyleDiffusion" not in table
