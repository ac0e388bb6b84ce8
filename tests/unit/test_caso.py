"""optim/caso.py on tiny stand-ins (spec caso.md §8): guidance and window, the class losses, the Tweedie estimate with
a perfect denoiser, the training loop (loss falls and the target class's probability rises for every class, γ lowers
the latent error, determinism, NaN refused) and the official Linear(1, D) parametrisation's equivalence."""
import math

import pytest
import torch

from invedit.optim import caso

F64 = torch.float64


def test_guidance_is_linear_in_the_scale_and_the_window_is_inclusive():
    u, c = torch.randn(2, 4, 8, 8, dtype=F64), torch.randn(2, 4, 8, 8, dtype=F64)
    assert torch.equal(caso.guided(u, c, 0.0), u) and torch.equal(caso.guided(u, c, 1.0), c)
    d = caso.guided(u, c, 3.0) - u
    torch.testing.assert_close(caso.guided(u, c, -3.0) - u, -d)  # λ < 0 reverses the edit, exactly opposite
    assert caso.in_window(1.0, 5.0, 0.5) and caso.in_window(5.0, 5.0, 0.5) and caso.in_window(0.5, 0.5, 5.0)
    assert not caso.in_window(6.0, 5.0, 0.5) and not caso.in_window(0.4, 5.0, 0.5)


def test_class_losses_and_their_errors():
    one = torch.tensor([[0.0], [2.0]])
    assert float(caso.class_loss(one, 1)) == pytest.approx(((0.5 - 1) ** 2 + (torch.sigmoid(torch.tensor(2.0)) - 1) ** 2) / 2)
    k = torch.tensor([[2.0, 0.0, 0.0]])
    assert float(caso.class_loss(k, 0)) == pytest.approx(float(torch.nn.functional.cross_entropy(k, torch.tensor([0]))))
    assert float(caso.class_loss(k, 0, "mse_prob")) == pytest.approx(float((k.softmax(1)[0, 0] - 1) ** 2))
    with pytest.raises(ValueError, match="not one of the classifier's 3 classes"):
        caso.class_loss(k, 3)
    with pytest.raises(ValueError, match="binary"):
        caso.class_loss(one, 2)
    with pytest.raises(ValueError, match="loss must be one of"):
        caso.class_loss(k, 0, "hinge")


class Toy:
    """encode(e) = e; D(x, ∅) = x/(1+σ²)·… a shrink; D(x, c) adds the embedding's first 3 dims as a colour shift;
    decode = identity on 3 channels; F = a fixed linear map of the mean colour to K logits. Float64 (or ``dtype``)."""

    def __init__(self, k=3, d=8, seed=0, dtype=F64):
        g = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.w = (torch.randn(k, 3, generator=g, dtype=F64) * 2).to(dtype)
        self.k, self.d = k, d
        self.calls = 0

    def encode(self, e):
        return e

    def denoise(self, x, cond):
        self.calls += cond is not None
        out = 0.5 * x
        if cond is not None:
            out = out + cond.mean(0)[:3].view(1, 3, 1, 1)
        return out

    def decode(self, z):
        return z

    def classify(self, img):
        return img.mean((2, 3)) @ self.w.T

    def latents(self, n=6, seed=1):
        return (torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=F64) * 0.3).to(self.dtype)


def train(toy, cfg, init=None):
    init = torch.zeros(toy.k, 1, toy.d, dtype=F64) if init is None else init
    return caso.train_embeddings(init, toy.latents(), 0.8, toy.encode, toy.denoise, toy.decode, toy.classify, cfg)


def test_a_perfect_denoiser_gives_back_the_clean_latent_at_any_scale():
    z0 = torch.randn(2, 4, 8, 8, dtype=F64)
    sigma = 0.836
    x = z0 + sigma * torch.randn_like(z0)
    perfect = z0  # D(x, ·) of a denoiser that knows z0
    for lam in (0.0, 3.0, -10.0):
        assert torch.equal(caso.guided(perfect, perfect, lam), z0)
    # ComfyUI's x_σ - σ ε equals diffusers' (z_t - sqrt(1-ᾱ) ε)/sqrt(ᾱ) with z_t = sqrt(ᾱ)·x_σ
    eps = (x - z0) / sigma
    abar = 1 / (1 + sigma ** 2)
    z_t = abar ** 0.5 * x
    torch.testing.assert_close((z_t - (1 - abar) ** 0.5 * eps) / abar ** 0.5, x - sigma * eps, rtol=0, atol=1e-12)


def test_training_lowers_the_loss_and_raises_every_class_probability():
    toy = Toy()
    before = toy.w.clone()
    res = train(toy, caso.TrainConfig(steps=90, batch_size=2, scale=3.0, lr=0.05, weight_decay=0.0, seed=0))
    assert res.embeddings.shape == (3, 1, 8)
    first = sum(res.losses[:10]) / 10
    last = sum(res.losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    z = toy.latents()
    for a in range(3):  # each class's embedding now makes F label the guided estimate as that class
        x = z + 0.8 * torch.randn(z.shape, generator=torch.Generator().manual_seed(a), dtype=F64)
        u = toy.denoise(x, None)
        p0 = toy.classify(toy.decode(u)).softmax(1)[:, a].mean()
        p = toy.classify(toy.decode(caso.guided(u, toy.denoise(x, res.embeddings[a]), 3.0))).softmax(1)[:, a].mean()
        assert p > p0 and p > 0.8, (a, float(p0), float(p))
    assert torch.equal(toy.w, before)  # the classifier never moves
    assert set(res.classes) == {0, 1, 2} and len(res.hits) == 90


def test_gamma_lowers_the_latent_error():
    def latent_error(gamma):
        toy = Toy()
        res = train(toy, caso.TrainConfig(steps=60, scale=3.0, lr=0.05, weight_decay=0.0, gamma=gamma, seed=0))
        z = toy.latents()
        x = z + 0.8 * torch.randn(z.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
        u = toy.denoise(x, None)
        return float(sum(torch.nn.functional.mse_loss(caso.guided(u, toy.denoise(x, res.embeddings[a]), 3.0), z)
                         for a in range(3)))
    assert latent_error(50.0) < latent_error(0.0)


def test_training_is_deterministic_for_a_seed():
    cfg = caso.TrainConfig(steps=20, scale=3.0, lr=0.05, seed=4)
    a, b = train(Toy(), cfg), train(Toy(), cfg)
    assert a.losses == b.losses and torch.equal(a.embeddings, b.embeddings)
    c = train(Toy(), caso.TrainConfig(steps=20, scale=3.0, lr=0.05, seed=5))
    assert not torch.equal(a.embeddings, c.embeddings)


def test_a_nan_loss_stops_training_with_a_clear_error_and_bad_shapes_are_refused():
    toy = Toy()
    with pytest.raises(caso.CASOError, match="lower the learning rate"):
        caso.train_embeddings(torch.zeros(3, 1, 8, dtype=F64), toy.latents(), 0.8, toy.encode,
                              lambda x, c: x * math.nan, toy.decode, toy.classify, caso.TrainConfig(steps=3))
    with pytest.raises(ValueError, match=r"\[K, n_tokens, D\]"):
        caso.train_embeddings(torch.zeros(3, 8), toy.latents(), 0.8, toy.encode, toy.denoise, toy.decode,
                              toy.classify, caso.TrainConfig(steps=1))


def test_the_official_two_linear_parametrisation_moves_like_a_direct_vector():
    """e = W·1 + b under AdamW(lr, wd) == a direct vector under AdamW(2·lr, wd/2) (identical gradients)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(8, generator=g, dtype=F64)
    w = torch.nn.Parameter(torch.rand(8, generator=g, dtype=F64) * 2 - 1)
    b = torch.nn.Parameter(torch.rand(8, generator=g, dtype=F64) * 2 - 1)
    e = torch.nn.Parameter((w + b).detach().clone())
    lr, wd = caso.repo_equivalent(1e-2, 1e-2)
    opt_repo = torch.optim.AdamW([w, b], lr=1e-2, weight_decay=1e-2)
    opt_ours = torch.optim.AdamW([e], lr=lr, weight_decay=wd)
    for _ in range(20):
        for params, opt, value in (([w, b], opt_repo, lambda: w + b), ([e], opt_ours, lambda: e)):
            opt.zero_grad()
            ((value() - target) ** 4).sum().backward()
            opt.step()
    torch.testing.assert_close((w + b).detach(), e.detach(), rtol=1e-10, atol=1e-12)


def test_a_class_embedding_file_round_trips_and_is_what_the_stock_loader_reads(tmp_path):
    """One file per class; ComfyUI's load_embed takes the tensor under the text encoder's key ('clip_l', and
    'clip_g' for SDXL's second encoder) from a safetensors file: those keys hold the class's tokens."""
    import json
    from safetensors.torch import load_file

    from invedit import artifacts
    from invedit.artifacts import caso as caso_file
    g = torch.Generator().manual_seed(0)
    e = caso.ClassEmbedding("blue", 2, {"clip_l": torch.randn(1, 768, generator=g),
                                        "clip_g": torch.randn(1, 1280, generator=g)},
                            {"class_names": json.dumps(["red", "green", "blue", "yellow"]), "attribute": "colour"})
    path = artifacts.save(tmp_path / "caso_blue.safetensors", "caso", *caso_file.to_tensors(e))
    stock = load_file(str(path))
    assert torch.equal(stock["clip_l"], e.tokens["clip_l"]) and torch.equal(stock["clip_g"], e.tokens["clip_g"])
    back = caso_file.from_tensors(*artifacts.load(path, "caso", "test"))
    assert back.name == "blue" and back.index == 2 and back.meta["attribute"] == "colour"
    assert all(torch.equal(back.tokens[k], e.tokens[k]) for k in e.tokens)
    bad = caso.ClassEmbedding("blue", 7, e.tokens, dict(e.meta))
    artifacts.save(tmp_path / "bad.safetensors", "caso", *caso_file.to_tensors(bad))
    with pytest.raises(artifacts.ArtifactError, match="class_index 7"):
        artifacts.load(tmp_path / "bad.safetensors", "caso", "test")
    from safetensors.torch import save_file
    tensors, meta = caso_file.to_tensors(e)
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(1, 1280)}, str(tmp_path / "odd.safetensors"),
              metadata=dict(meta, format=caso_file.FORMAT))
    with pytest.raises(artifacts.ArtifactError, match="one n_tokens"):
        artifacts.load(tmp_path / "odd.safetensors", "caso", "test")
    save_file({"clip_l": torch.randn(2, 768)}, str(tmp_path / "rows.safetensors"), metadata=dict(meta, format=caso_file.FORMAT))
    with pytest.raises(artifacts.ArtifactError, match="its metadata says n_tokens 1"):
        artifacts.load(tmp_path / "rows.safetensors", "caso", "test")
    save_file({"clip_l": torch.randn(1, 64)}, str(tmp_path / "narrow.safetensors"), metadata=dict(meta, format=caso_file.FORMAT))
    with pytest.raises(artifacts.ArtifactError, match="widths"):
        artifacts.load(tmp_path / "narrow.safetensors", "caso", "test")
    assert caso_file.fingerprint(torch.ones(3, 4)) != caso_file.fingerprint(torch.zeros(3, 4))


def test_a_linear_probe_separates_separable_features_whatever_their_scales():
    """Three Gaussian clusters in 8-d whose dimensions differ in scale by 10^4 (as a tower's embedding directions
    may): the standardised fit separates them all, and the head folded back to raw features gives the same logits
    as the standardised one (W = W̃ / s, b = b̃ − W·μ)."""
    from invedit.losses.classifiers import fit_linear_probe
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 3
    y = torch.arange(60) % 3
    scales = torch.logspace(-2, 2, 8)
    f = (centres[y] + torch.randn(60, 8, generator=g) * 0.3) * scales
    w, b, acc = fit_linear_probe(f, y.tolist(), 3, steps=200)
    assert acc == 1.0 and w.shape == (3, 8) and b.shape == (3,)
    assert torch.equal((f @ w.T + b).argmax(1), y)
    _, _, plain = fit_linear_probe(f / scales * 1e-4, y.tolist(), 3, steps=200)  # same clusters, other units
    assert plain == 1.0


def test_checkpointing_recomputes_the_same_gradients_and_bf16_and_augmentation_still_learn():
    """Gradient checkpointing changes what is kept, not what is computed: the same losses and embeddings as without
    (CPU: the recomputed forward runs the same kernels on the same inputs). bf16 autocast (the models' calls; the
    embedding and AdamW stay fp32) and the classifier's flip/crop augmentation still lower the loss."""
    cfg = dict(steps=20, scale=3.0, lr=0.05, seed=4)
    plain = train(Toy(), caso.TrainConfig(**cfg))
    ckpt = train(Toy(), caso.TrainConfig(**cfg, checkpointing=True))
    assert plain.losses == ckpt.losses and torch.equal(plain.embeddings, ckpt.embeddings)
    for extra in ({"dtype": "bf16"}, {"classifier_aug": "flip_crop"}):
        toy = Toy(dtype=torch.float32)
        res = train(toy, caso.TrainConfig(**dict(cfg, steps=90, weight_decay=0.0), **extra))
        assert sum(res.losses[-10:]) < 0.7 * sum(res.losses[:10]), (extra, res.losses[:10], res.losses[-10:])
        assert res.embeddings.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype must be one of"):
        train(Toy(), caso.TrainConfig(steps=1, dtype="fp8"))


def ddim_uniform_timesteps(steps, n=1000):
    """ComfyUI's ddim_uniform grid for an SD model: t = 1, 1 + n//steps, … below n, sampled from the top."""
    return list(range(1, n, max(n // steps, 1)))[::-1]


def test_window_fractions_are_steps_of_the_grid_and_both_ends_belong_to_it():
    """Issue 24, item 2: a fraction names step round(f·T) of the T-step grid (0.3 → t 301 at 50, the training
    level's map), so 0.3 … 0 guides the 16 steps t 301 … 1, [0.8, 0.9] and [0, 0.1] 6 each, window_start =
    window_end exactly one (the old round(f·999) gave t 300: 15, 5, 5 and 0 steps)."""
    def guided(start, end, steps=50):
        t0, t1 = caso.window_timesteps(start, end, steps)
        return [t for t in ddim_uniform_timesteps(steps) if t1 <= t <= t0]
    assert caso.grid_timestep(0.3, 50) == 301 and caso.grid_timestep(0.4, 50) == 401
    on = guided(0.3, 0.0)
    assert len(on) == 16 and on[0] == 301 and on[-1] == 1
    assert len(guided(0.9, 0.8)) == 6 and len(guided(0.1, 0.0)) == 6
    for f in (0.0, 0.1, 0.3, 0.42, 0.98):
        assert len(guided(f, f)) == 1
    assert len(guided(1.0, 0.0)) == 50 and caso.grid_timestep(1.0, 50) == 999  # the top: every step
    assert len(guided(0.3, 0.0, 30)) == 10 and len(guided(0.3, 0.3, 30)) == 1   # any grid: its own steps
    with pytest.raises(ValueError, match=r"window_start 0.2 is below window_end 0.5.*swap them"):
        caso.window_timesteps(0.2, 0.5, 50)


def test_a_class_not_drawn_in_a_step_does_not_move():
    """Issue 24, item 1: every class is its own AdamW parameter with gradients set to None, as the official
    trainer's separate Linear(1, D) modules: after one step only the drawn class has moved (the old shared tensor
    decayed every class every step), bit for bit."""
    toy = Toy()
    init = torch.randn(3, 1, toy.d, generator=torch.Generator().manual_seed(0), dtype=F64)
    res = train(toy, caso.TrainConfig(steps=1, scale=3.0, lr=0.05, weight_decay=0.1, seed=0), init)
    a = res.classes[0]
    assert not torch.equal(res.embeddings[a], init[a])
    assert all(torch.equal(res.embeddings[b], init[b]) for b in range(3) if b != a)
    res = train(toy, caso.TrainConfig(steps=30, scale=3.0, lr=0.05, weight_decay=0.1, seed=0), init)
    assert set(res.classes) == {0, 1, 2}


def test_mirror_latents_stand_in_for_flipped_samples():
    """Issue 24, item 9: with ``mirrored`` (the latents of the mirror images) a sample drawn flipped takes its
    mirror's latent; given the flipped latents as the mirrors the run is the latent-flip run bit for bit, given
    other mirrors it is not, and without flips the mirrors are never used."""
    toy = Toy()
    z = toy.latents()
    cfg = caso.TrainConfig(steps=12, scale=3.0, lr=0.05, seed=3)

    def run(mirrored, config=cfg):
        return caso.train_embeddings(torch.zeros(3, 1, toy.d, dtype=F64), z, 0.8, toy.encode, toy.denoise,
                                     toy.decode, toy.classify, config, mirrored=mirrored)
    plain = run(None)
    assert torch.equal(run(z.flip(-1)).embeddings, plain.embeddings)
    other = z.flip(-1) + 0.3
    assert not torch.equal(run(other).embeddings, plain.embeddings)
    off = caso.TrainConfig(**{**cfg.__dict__, "hflip": False})
    assert torch.equal(run(other, off).embeddings, run(None, off).embeddings)
    with pytest.raises(ValueError, match="one mirror per image"):
        run(z[:2])
