"""The scenes world's generator, edit suite, judge plumbing and PIE-Bench metrics (pure torch; issue 27)."""
import math

import pytest
import torch

from harness.scenes import data, judges, pie, suite
from harness.scenes.train import negative_caption


def test_same_seed_same_scenes_and_images():
    a, b = data.make_scenes(16, 7), data.make_scenes(16, 7)
    assert a.captions == b.captions
    assert torch.equal(data.render(a), data.render(b))
    assert data.make_scenes(16, 8).captions != a.captions


def test_objects_fit_do_not_touch_and_are_named_left_to_right():
    s = data.make_scenes(300, 3)
    assert set(s.count.tolist()) == {1, 2, 3}
    for i in range(len(s)):
        objs = s.objects(i)
        xs = [o["cx"] for o in objs]
        assert xs == sorted(xs)
        for j, o in enumerate(objs):
            rr = float(data.reach(torch.tensor(data.SHAPES.index(o["shape"])), torch.tensor(o["radius"])))
            others = [(p["cx"], p["cy"], float(data.reach(torch.tensor(data.SHAPES.index(p["shape"])),
                                                          torch.tensor(p["radius"]))))
                      for k, p in enumerate(objs) if k != j]
            assert data.fits(o["cx"], o["cy"], rr, others), (i, data.caption(s, i))
        words = data.caption(s, i).split(" on a ")[0]
        assert [w for w in words.replace(",", "").split() if w in data.COLOURS] == [o["colour"] for o in objs]


def test_captions_name_every_attribute():
    s = data.make_scenes(64, 4, count=2, style=2, texture=1)
    c = s.captions[0]
    assert c.startswith("a ") and " and a " in c and c.endswith("on a checked background, at night")
    assert data.make_scenes(1, 4, count=1, style=0).captions[0].endswith("background")


def test_render_is_in_range_and_objects_show():
    s = data.make_scenes(32, 5)
    x = data.render(s)
    assert x.shape == (32, 3, 128, 128) and float(x.min()) >= 0 and float(x.max()) <= 1
    masks = data.object_masks(s)
    assert torch.allclose(masks.flatten(2).sum(2).gt(0).float(), s.present.float())


def test_resample_keeps_the_caption_and_redraws_the_rest():
    s = data.make_scenes(64, 9)
    r = data.resample(s, torch.Generator().manual_seed(0))
    assert r.captions == s.captions
    assert not torch.equal(r.cx, s.cx) and not torch.equal(r.colourway, s.colourway)


@pytest.mark.parametrize("kind", suite.EDIT_TYPES)
def test_suite_cases_change_only_inside_their_mask(kind):
    cases = suite.cases("tune", 3, kinds=(kind,))
    for c in cases:
        diff = (c.source_image - c.target_image).abs().amax(0)
        assert float(diff[~c.mask].max()) == 0.0 if (~c.mask).any() else True
        assert float(diff[c.mask].max()) > 0.05, c.target_prompt
        assert c.source_prompt != c.target_prompt
    if kind == "add":
        assert all(int(c.target.count) == int(c.source.count) + 1 for c in cases)
    if kind == "remove":
        assert all(int(c.target.count) == int(c.source.count) - 1 for c in cases)


def test_suite_splits_are_fixed_and_disjoint():
    tune = suite.cases("tune", 2)
    assert [c.target_prompt for c in tune] == [c.target_prompt for c in suite.cases("tune", 2)]
    assert torch.equal(tune[0].source_image, suite.cases("tune", 2)[0].source_image)
    test = suite.cases("test", 2)
    for a in tune:  # no test image is a tune image
        assert all(not torch.equal(a.source_image, b.source_image) for b in test)


def test_negative_caption_changes_exactly_one_word():
    s = data.make_scenes(40, 11)
    g = torch.Generator().manual_seed(1)
    for i in range(len(s)):
        a, b = s.captions[i].split(" background"), negative_caption(s, i, g).split(" background")
        head_a, head_b = a[0].split(), b[0].split()
        assert len(head_a) == len(head_b)
        assert sum(x != y for x, y in zip(head_a, head_b)) + (a[1] != b[1]) == 1


def test_judge_targets_and_reading_of_a_perfect_judge():
    s = data.make_scenes(6, 12)
    t = judges.targets(s)
    for i in range(len(s)):
        lab = judges._components(t["object"][i] > 0.5)
        assert len(lab.unique()) - 1 == int(s.count[i])

    class Oracle(torch.nn.Module):  # answers with the generator's own labels
        def forward(self, x):
            out = {"object": (t["object"] * 20 - 10)}
            for name, classes in judges.HEADS.items():
                lab = t[name].clamp(min=0)
                out[name] = torch.nn.functional.one_hot(lab, len(classes)).permute(0, 3, 1, 2).float() * 10
            for name, classes in judges.GLOBAL.items():
                out[name] = torch.nn.functional.one_hot(t[name], len(classes)).float() * 10
            return out
    seen = judges.read(Oracle(), data.render(s))
    for i in range(len(s)):
        r = judges.compare(seen[i], judges.expected(s, i))
        assert r["all"] == 1.0, (data.caption(s, i), seen[i])
        wrong = judges.expected(s, (i + 1) % len(s))
        assert judges.compare(seen[i], wrong)["all"] < 1.0 or s.captions[i] == s.captions[(i + 1) % len(s)]


def test_toy_clip_tokenizer_keeps_every_world_word_whole(tmp_path):
    from transformers import CLIPTokenizer
    from harness.shapes.models import write_tokenizer
    write_tokenizer(tmp_path, judges.WORDS, judges.CLIP_TOKENS)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for w in judges.WORDS:
        assert tok.tokenize(w) == [w + "</w>"]


def test_shapes_tokenizer_is_unchanged_by_the_scenes_words():
    from harness.shapes.models import toy_tokenizer_files
    vocab, merges = toy_tokenizer_files()
    assert len(vocab) == 156 and len(merges) == 70 and vocab["<|endoftext|>"] == 155


@pytest.fixture(scope="module")
def meter():
    from transformers import CLIPModel
    torch.manual_seed(0)

    class Tok:  # a stand-in tokenizer: ids from characters (the metrics only need a fixed mapping)
        def __call__(self, texts, **kw):
            ids = torch.tensor([[min(ord(ch), 60) for ch in t[:judges.CLIP_TOKENS].ljust(judges.CLIP_TOKENS)]
                                for t in texts])
            return type("T", (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return pie.Meter(judges.SceneJudge().eval(), CLIPModel(judges.toy_clip_config()).eval(), Tok())


def test_pie_metrics_of_an_unchanged_image_and_of_the_whole_image_mask(meter):
    cases = suite.cases("tune", 1)
    src = torch.stack([c.source_image for c in cases])
    mask = torch.stack([c.mask for c in cases])
    r = meter.measure(src, src, mask, [c.target_prompt for c in cases])
    style = [i for i, c in enumerate(cases) if c.kind == "style"][0]
    for i in range(len(cases)):
        assert r["structure"][i] == 0.0
        if i == style:
            assert all(math.isnan(r[k][i]) for k in ("bg_psnr", "bg_mse", "bg_ssim", "bg_featdist"))
        else:
            assert r["bg_mse"][i] == 0.0 and r["bg_featdist"][i] == 0.0 and r["bg_ssim"][i] == pytest.approx(1.0)


def test_pie_background_metrics_see_only_outside_the_mask(meter):
    c = suite.cases("tune", 1, kinds=("colour",))[0]
    src, tgt = c.source_image[None], c.target_image[None]
    inside = meter.measure(src, tgt, c.mask[None], [c.target_prompt])
    assert inside["bg_mse"][0] == 0.0 and inside["structure"][0] > 0.0
    noisy = (src + 0.05 * torch.randn_like(src)).clamp(0, 1)
    outside = meter.measure(src, noisy, c.mask[None], [c.target_prompt])
    assert outside["bg_mse"][0] > 1e-4 and outside["bg_psnr"][0] < 40 and outside["bg_ssim"][0] < 0.99


def test_ssim_and_psnr_match_their_definitions():
    a = torch.rand(2, 3, 32, 32)
    assert torch.allclose(pie.ssim(a, a), torch.ones(2))
    b = a + 0.1
    assert torch.allclose(pie.psnr(a, b), torch.full((2,), 20.0), atol=1e-4)
