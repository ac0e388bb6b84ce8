"""The shapes world's procedural data (harness/shapes/data.py) and the toy CLIP's tokenizer files."""
import math

import torch

from harness.shapes import data, models


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = data.make_batch(16, 5), data.make_batch(16, 5), data.make_batch(16, 6)
    assert torch.equal(a.images, b.images) and torch.equal(a.colour, b.colour)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (16, 3, 64, 64) and 0 <= a.images.min() and a.images.max() <= 1


def test_labels_and_captions():
    b = data.make_dataset(600, 3)
    assert set(b.colour.tolist()) == set(range(4)) and set(b.shape.tolist()) == set(range(3))
    assert (b.radius >= data.R_MIN).all() and (b.radius <= data.R_MAX).all()
    m = b.radius * 1.2 + 1
    assert (b.cx >= m).all() and (b.cx <= 64 - m).all() and (b.cy >= m).all() and (b.cy <= 64 - m).all()
    assert b.captions[0] == f"a {data.COLOURS[int(b.colour[0])]} {data.SHAPES[int(b.shape[0])]}"
    assert len(set(data.CAPTIONS)) == 12


def test_object_has_its_colour_and_area():
    for ci in range(4):
        for si in range(3):
            b = data.make_batch(1, 11, colour=ci, shape=si)
            mask = data.shape_mask(b.shape, b.radius, b.cx, b.cy)[0]
            inside = b.images[0][:, mask > 0.99].mean(1)
            assert (inside - data.RGB[ci]).abs().max() < 0.03
            area, circle = float(mask.sum()), math.pi * float(b.radius) ** 2
            expected = {0: 1.0, 1: 1.0, 2: 0.6}[si]  # square = circle's area; triangle ≈ 0.6 of it
            assert abs(area / circle - expected) < 0.06, (ci, si, area / circle)


def test_toy_tokenizer_keeps_every_word_whole(tmp_path):
    from transformers import CLIPTokenizer
    models.write_tokenizer(tmp_path)
    tok = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for w in models.TOY_WORDS:
        assert len(tok(w).input_ids) == 3, w  # <start> word <end>
    assert len(tok("zebra").input_ids) > 3  # unknown words spell out letter by letter
    ids = tok(data.CAPTIONS).input_ids
    assert len({tuple(i) for i in ids}) == 12


def test_shape_centroid_finds_the_drawn_shape():
    b = data.make_batch(8, 5)
    centre, area = data.shape_centroid(b.images)
    true = torch.stack([b.cx, b.cy], 1) - 0.5  # render's pixel centres sit at integer + 0.5
    assert (centre - true).norm(dim=1).max() < 1.5
    assert (area > 0.5 * torch.pi * b.radius ** 2).all()


def test_the_background_psnr_ignores_the_object_and_sees_the_background():
    from harness.shapes import judges
    b = data.make_batch(2, 5, colour=0, shape=0)
    recoloured = b.images.clone()
    m = data.shape_mask(b.shape, b.radius, b.cx, b.cy)[:, None]
    recoloured = recoloured * (1 - m) + data.RGB[2].view(1, 3, 1, 1) * m  # a new object colour, same background
    bg = judges.background_mask(b.images, b)
    assert float(judges.masked_psnr(recoloured, b.images, bg).min()) > 60  # identical outside the object
    assert float(judges.masked_psnr(recoloured, b.images, torch.ones_like(bg)).max()) < 25  # the object counts here
    shifted = torch.roll(b.images, 6, dims=3)
    assert float(judges.masked_psnr(shifted, b.images, bg).max()) < 40  # a moved scene changes the background
    assert torch.equal(judges.background_mask(b.images), judges.background_mask(b.images)) and \
        float((judges.background_mask(b.images, b) - judges.background_mask(b.images)).abs().mean()) < 0.05
