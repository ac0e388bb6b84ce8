"""The scenes world's training stages resume across sessions (issue 27): from their saved state, or, when a new
checkout lacks it, from their committed weights file (harness/scenes/train.py ``_resume``)."""
import pytest
import torch

from harness import tiny_models
from harness.scenes import train


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "STATE", tmp_path / "state")
    return tmp_path


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def _commit(where, net, **meta):
    from harness.shapes.train import save
    return save(net.state_dict(), "w.safetensors", {"stage": "x", "seconds": 30, **meta}, folder=where)


def test_goes_on_from_the_committed_weights_when_the_state_is_gone(where):
    done = _net(1)
    path = _commit(where, done, steps_done=700, steps=1000)
    net, g = _net(2), torch.Generator().manual_seed(5)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    step, seconds, st = train._resume("x", False, net, opt, g, path)
    assert (step, seconds) == (700, 30.0)
    for a, b in zip(net.state_dict().values(), done.state_dict().values()):
        assert torch.equal(a, b.half().float())  # the committed file is fp16
    assert g.initial_seed() == 5 * 1000 + 700  # reseeded by the step: not the first chunk's data again
    train.rewarm(opt, 700, st)  # a fresh optimiser's learning rate ramps up again
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    train.rewarm(opt, 900, st)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # full ramp reached (×1): unchanged
    assert not tiny_models.finished(path)  # a mid-run file is not installed as the world's model


def test_the_saved_state_wins_unless_older_than_the_file(where):
    path = _commit(where, _net(1), steps_done=700, steps=1000)
    net = _net(3)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(5)
    for state_step, expect in ((900, 900), (500, 700)):
        train._snapshot("x", net, opt, g, state_step, 12.0)
        step, _, st = train._resume("x", False, _net(4), torch.optim.Adam(_net(4).parameters()), g, path)
        assert step == expect
        assert ("from_file" in st) == (expect == 700)
    step, _, st = train._resume("x", True, _net(4), opt, g, path)  # --fresh: neither
    assert (step, st) == (0, None)
    assert not (train.STATE / "x.pt").exists()


def test_a_file_of_another_stage_or_layout_is_refused(where):
    path = _commit(where, _net(1), steps_done=700, steps=1000)
    assert train._resume("y", False, _net(2), None, torch.Generator(), path)[0] == 0  # another stage's file
    wide = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2), torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="w.safetensors lacks"):
        train._resume("x", False, wide, None, torch.Generator(), path)


def test_finished_files(where):
    assert tiny_models.finished(_commit(where, _net(1), steps_done=1000, steps=1000))
    assert tiny_models.finished(_commit(where, _net(1), steps=800))  # one-shot stages (classifiers): no steps_done
    assert not tiny_models.finished(where / "missing.safetensors")


def test_a_finished_stage_trains_on_in_a_further_cosine_cycle(where, monkeypatch):
    from harness.scenes import text
    from harness.shapes import train as base
    monkeypatch.setattr(train, "WEIGHTS", where)
    monkeypatch.setattr(train, "latent_pool", lambda minutes=0: torch.randn(2, 16, 3))
    monkeypatch.setattr(text, "caption_set", lambda: (None, None, torch.zeros(16, dtype=torch.long)))
    calls = []
    real = base.cosine_lr
    monkeypatch.setattr(base, "cosine_lr", lambda opt, step, total, lr, warmup: (
        calls.append((step, total, lr)), real(opt, step, total, lr, warmup)))

    def stage(**kw):
        calls.clear()
        train._generator_stage("x", _net(1), 20, 4, 1e-2, 0.0, 0.9, 10, 0, False,
                               lambda m, z0, c, g: m(z0).pow(2).mean(), "x.safetensors", {}, seed=3, warmup=5,
                               bf16=False, **kw)
        return calls[:]

    first = stage()
    assert first[0] == (0, 20, 1e-2) and first[-1] == (19, 20, 1e-2)
    assert stage() == []                                   # done: nothing more without extend_to
    more = stage(extend_to=30)
    assert more[0] == (0, 10, 5e-3) and more[-1] == (9, 10, 5e-3)  # a new cycle from step 20, peak lr / 2
    meta = train.file_meta(where / "x.safetensors")
    assert (meta["steps_done"], meta["steps"]) == ("30", "30")
    assert meta["cycles"] == "[[0, 20, 0.01], [20, 30, 0.005]]"
    (train.STATE / "x.pt").unlink()                        # a new checkout: from the file, cycles and steps kept
    assert stage() == []
    assert stage(extend_to=25) == []                       # not beyond the last step: ignored
    (train.STATE / "x.pt").unlink(missing_ok=True)
    again = stage(extend_to=40, extend_lr=2e-3)
    assert again[0] == (0, 10, 2e-3)
    assert train.file_meta(where / "x.safetensors")["cycles"] == "[[0, 20, 0.01], [20, 30, 0.005], [30, 40, 0.002]]"
