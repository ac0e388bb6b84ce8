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
