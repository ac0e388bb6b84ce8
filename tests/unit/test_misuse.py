"""Issue 12's failures of the pure layers, each reproduced first: save names refused for the right reason, files that
do not overwrite, crafted direction files, non-finite strengths and weights, an asymmetric patch that no pass ever
reaches."""
import logging
import math

import pytest
import torch

from invedit import artifacts
from invedit.hooks import directions
from invedit.hooks.directions import Direction
from invedit.hooks.hspace import HSpacePatch


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name, reason", [("x" * 200, "too long"), ("方向", "non-ASCII"), ("évil", "non-ASCII"),
                                          ("../evil", "folder"), ("a/b", "folder"), ("", "empty"),
                                          (".hidden", "starts with")])
def test_a_refused_save_name_says_what_is_wrong(name, reason):
    with pytest.raises(artifacts.ArtifactError, match=reason):
        artifacts.safe_file_name(name, "test")


def test_saving_under_an_existing_name_keeps_the_first_file(tmp_path):
    first = artifacts.free_path(tmp_path, "my_direction.safetensors")
    assert first.name == "my_direction.safetensors"
    first.write_bytes(b"first")
    second = artifacts.free_path(tmp_path, "my_direction.safetensors")
    assert second.name == "my_direction_00001.safetensors"
    second.write_bytes(b"second")
    assert artifacts.free_path(tmp_path, "my_direction.safetensors").name == "my_direction_00002.safetensors"
    assert first.read_bytes() == b"first"


@pytest.mark.parametrize("sigmas", [[-1.0, 0.5], [0.5, 2.0], [2.0, 2.0], [math.nan, 1.0]])
def test_a_crafted_direction_file_with_bad_sigmas_is_refused(tmp_path, sigmas):
    from safetensors.torch import save_file
    t = {"delta_h": rand(2, 8, 4, 4), "sigmas": torch.tensor(sigmas, dtype=torch.float64)}
    save_file(t, str(tmp_path / "d.safetensors"), metadata={"format": artifacts.hspace.FORMAT, "kind": "prompts"})
    with pytest.raises(artifacts.ArtifactError, match="sigmas|NaN"):
        artifacts.load(tmp_path / "d.safetensors", "hspace", "test")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_strengths_and_weights_are_refused(bad):
    d = Direction(rand(1, 8, 4, 4), torch.tensor([1.0]))
    with pytest.raises(directions.HSpaceError, match="strength"):
        HSpacePatch(d, bad, 10.0, 0.1)
    with pytest.raises(directions.HSpaceError, match="weight"):
        directions.combine([(d, 1.0), (d, bad)])


def test_an_asymmetric_patch_that_no_pass_reaches_says_so_once(caplog):
    d = Direction(rand(1, 8, 4, 4), torch.tensor([1.0]))
    p = HSpacePatch(d, 2.0, 10.0, 0.1, "asymmetric")
    h = rand(2, 8, 4, 4, seed=1)
    o = {"block": ("output", 0), "sigmas": torch.tensor([2.0]), "cond_or_uncond": [0, 1]}
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert torch.equal(p(h, h, o)[0], h)  # unchanged: a stock sampler marks no edit pass
    warnings = [r for r in caplog.records if "Asyrp Sampler" in r.getMessage()]
    assert len(warnings) == 1 and "symmetric" in warnings[0].getMessage()


def test_the_packs_errors_show_as_invedit_types_not_as_the_install_path():
    """ComfyUI prints ``type(e).__module__ + '.' + __qualname__``; the pack's modules are named after the install
    path, so its errors carry the module name ``invedit``."""
    from invedit.losses.clip import CLIPLoadError
    from invedit.optim.hspace import TrainingError
    for cls in (artifacts.ArtifactError, directions.HSpaceError, CLIPLoadError, TrainingError):
        assert cls.__module__ == "invedit" and issubclass(cls, ValueError), cls
    with pytest.raises(directions.HSpaceError) as e:
        directions.combine([])
    assert f"{type(e.value).__module__}.{type(e.value).__qualname__}" == "invedit.HSpaceError"


def test_a_broken_classifier_file_gets_a_message_naming_the_file_and_the_mismatch(tmp_path):
    """Before: 'Error(s) in loading state_dict for SmallCNN:' and nothing after it; a raw SafetensorError without the
    file name for a truncated file; bad 'classes' metadata naming neither file nor key."""
    from safetensors.torch import save_file
    from invedit.losses.classifiers import SmallCNN
    good = SmallCNN(3, width=8).state_dict()
    wrong = dict(good, **{"net.0.weight": torch.zeros(5, 3, 3, 3)})
    del wrong["net.9.bias"]
    wrong["extra.weight"] = torch.zeros(1)
    save_file(wrong, str(tmp_path / "c.safetensors"), metadata={"classes": '["a", "b", "c"]', "width": "8"})
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.classifier.load_classifier(tmp_path / "c.safetensors", "small_cnn", None, "test")
    msg = str(e.value)
    assert "c.safetensors" in msg and "net.0.weight" in msg and "net.9.bias" in msg and "extra.weight" in msg
    save_file(good, str(tmp_path / "meta.safetensors"), metadata={"classes": "a, b, c"})
    with pytest.raises(artifacts.ArtifactError, match=r"meta.safetensors.*'classes'"):
        artifacts.classifier.load_classifier(tmp_path / "meta.safetensors", "small_cnn", None, "test")
    data = (tmp_path / "c.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(artifacts.ArtifactError, match="cannot read cut.safetensors"):
        artifacts.classifier.load_classifier(tmp_path / "cut.safetensors", "small_cnn", None, "test")


def test_a_clip_folder_with_a_truncated_weights_file_names_the_folder_and_the_file(tmp_path):
    import shutil
    from pathlib import Path
    from invedit.losses.clip import CLIPLoadError, LocalCLIP
    toy = Path(__file__).resolve().parents[2] / "harness" / "shapes" / "weights" / "toy_clip"
    folder = tmp_path / "broken-clip"
    shutil.copytree(toy, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CLIPLoadError, match=r"broken-clip.*model.safetensors"):
        LocalCLIP(folder)
