"""CASO on the real host (issue 14, first part): a class embedding encoded by the pack equals the stock
CLIPTextEncode of ``embedding:<its file>`` bit for bit, and the text encoder is differentiable in it without
changing its values."""
import os

import pytest
import torch


@pytest.fixture(scope="module")
def w(load_world):
    return load_world("")


def saved(folder_paths, name, tensors):
    from safetensors.torch import save_file
    root = folder_paths.get_folder_paths("embeddings")[0]
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"{name}.safetensors")
    save_file(tensors, path)
    return path


def test_the_pack_encodes_a_class_as_the_stock_encoder_encodes_its_file(w):
    import folder_paths
    import nodes
    from harness import host
    ad = host.pack_module("adapters.caso")
    e = {"clip_l": torch.randn(1, 768, generator=torch.Generator().manual_seed(0))}
    path = saved(folder_paths, "test_caso_class", e)
    try:
        with torch.inference_mode():
            stock = nodes.CLIPTextEncode().encode(w["te"], "embedding:test_caso_class")[0]
            ours = ad.encode_class(w["te"], e, "test")
        assert torch.equal(stock[0][0], ours[0][0]) and stock[0][0].shape == (1, 77, 768)
        assert torch.equal(stock[0][1]["pooled_output"], ours[0][1]["pooled_output"])
        two = {"clip_l": torch.randn(2, 768, generator=torch.Generator().manual_seed(1))}  # two tokens a class
        saved(folder_paths, "test_caso_class", two)
        with torch.inference_mode():
            assert torch.equal(nodes.CLIPTextEncode().encode(w["te"], "embedding:test_caso_class")[0][0][0],
                               ad.encode_class(w["te"], two, "test")[0][0])
    finally:
        os.remove(path)
    with pytest.raises(ValueError, match="has a clip_l text encoder and the embedding has"):
        ad.encode_class(w["te"], {"clip_g": torch.zeros(1, 1280)}, "test")
    with pytest.raises(ValueError, match=r"takes \[n, 768\]"):
        ad.encode_class(w["te"], {"clip_l": torch.zeros(1, 64)}, "test")


def test_the_text_encoder_is_differentiable_in_the_embedding_with_the_same_values(w):
    from harness import host
    ad, clip_ad = host.pack_module("adapters.caso"), host.pack_module("adapters.clip")
    from comfy.clip_model import CLIPLayer
    e = torch.randn(1, 768, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        plain = ad.encode_class(w["te"], {"clip_l": e}, "test")[0][0]
    with torch.inference_mode(False), torch.enable_grad(), clip_ad.differentiable_text_encoder(w["te"]):
        p = torch.nn.Parameter(e.clone())
        cond = ad.class_cond_tensor(w["te"], {"clip_l": p}, "test")
        (cond ** 2).sum().backward()
    assert torch.equal(cond.detach(), plain)
    assert p.grad is not None and float(p.grad.abs().sum()) > 0
    layers = [m for m in w["te"].cond_stage_model.modules() if isinstance(m, CLIPLayer)]
    assert layers and all("forward" not in vars(m) for m in layers)  # the layers' own forward is back


def test_training_lowers_the_class_loss_and_leaves_every_model_unchanged(w):
    """40 steps on 16 shapes-world images with the colour classifier (4 classes, λ 10, the official step): the class
    loss falls, the classifier labels more of the guided estimates as their class, and the U-Net, VAE, text encoder
    and classifier weights are bit-identical afterwards."""
    from harness import host
    from harness.paths import BASE
    from harness.shapes import data
    ad, oc = host.pack_module("adapters.caso"), host.pack_module("optim.caso")
    cl, ac = host.pack_module("losses.classifiers"), host.pack_module("artifacts.classifier")
    with torch.inference_mode():
        lat = w["vae"].encode(data.make_batch(16, 77).images.permute(0, 2, 3, 1))
    with torch.inference_mode(False):
        net, classes = ac.load_classifier(BASE / "models/invedit_classifiers/shapes_colour.safetensors", "small_cnn",
                                          None, "test")
    clf = cl.ImageClassifier.network(net, classes)
    modules = {"unet": w["model"].get_model_object("diffusion_model"), "vae": w["vae"].first_stage_model,
               "text": w["te"].cond_stage_model, "classifier": net}
    before = {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in modules.items()}
    s = ad.CASOSettings(config=oc.TrainConfig(steps=40, batch_size=2, scale=10.0, seed=0))
    with torch.inference_mode():
        embs, res = ad.train(w["model"], w["te"], w["vae"], clf, lat, s, "test")
    assert [e.name for e in embs] == ["red", "green", "blue", "yellow"] and embs[0].tokens["clip_l"].shape == (1, 768)
    q = len(res.losses) // 4
    assert sum(res.losses[-q:]) < sum(res.losses[:q]), res.losses
    assert sum(res.hits[-q:]) >= sum(res.hits[:q])
    for k, m in modules.items():
        after = m.state_dict()
        assert all(torch.equal(before[k][n], after[n]) for n in before[k]), k
    assert all(p.grad is None for m in modules.values() for p in m.parameters())
    assert ad.training_timestep(0.4, 50) == 401 and ad.training_timestep(0.3, 50) == 301
