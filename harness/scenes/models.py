"""The scenes world's networks: the multi-level SD1.5-detectable U-Net and the SD3-detectable MMDiT (both trained
narrow, widened at set-up). Pure torch + ComfyUI's own model code.

**Why "narrow".** ComfyUI detects SD1.5 by ``model_channels`` 320 and ``context_dim`` 768 and reads everything else
from the weights; a 320-channel U-Net with two downsamplings is ~50 M parameters, too big to train on two CPU cores
and to commit. The world's U-Net uses ACTIVE of each 320 channels (every hidden width scaled by ACTIVE / 320) and
zeros in the rest: GroupNorm's groups of 10 (20 in the skip concatenations) are whole groups of active or of zero
channels, attention heads (40 wide) are whole heads, GEGLU's value and gate halves keep their own active parts, and
LayerNorm over 320 channels is trained with the statistics the zero channels give it (``PaddedLayerNorm``). So the
network trained at width ACTIVE (``build_narrow_unet``) and the 320-wide SD1.5 U-Net that ComfyUI loads
(``widen_unet``: zero rows and columns, zero GroupNorm/LayerNorm affine on the zero channels) compute the same
function (tests/host/test_scenes_world.py checks it through ComfyUI). ComfyUI runs all 320 channels: a zero channel
costs time at inference, not storage.
"""
from __future__ import annotations

import sys

import torch

from ..paths import COMFY

WIDE = 320     # SD1.5's model_channels
ACTIVE = 120   # the channels that carry the network (a multiple of 40: whole heads, and of 20: whole groups)
HEAD = 40      # SD1.5's head width (8 heads of 40)

# What ComfyUI's SD1.5 detection reads back from the widened weights (tests check): three levels (16, 8, 4 latent
# pixels at 128 px), one res block each, cross-attention at the two upper levels and in the middle block, whose
# output at 4×4 after two downsamplings is the bottleneck (h-space) as in SD1.5.
UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": WIDE,
    "num_res_blocks": [1, 1, 1], "channel_mult": [1, 1, 1], "transformer_depth": [1, 1, 0],
    "transformer_depth_output": [1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1, "context_dim": 768,
    "num_heads": 8, "num_head_channels": -1, "use_spatial_transformer": True, "use_linear_in_transformer": False,
    "legacy": False, "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
}


def _comfy():
    if str(COMFY) not in sys.path:
        sys.path.insert(0, str(COMFY))
    if "comfy.model_management" not in sys.modules:
        from comfy.cli_args import args
        args.cpu = True


def narrow_ops(active: int = ACTIVE, wide: int = WIDE):
    """ComfyUI's operations with GroupNorm and LayerNorm as the wide network (width ``wide``) sees its ``active``
    channels."""
    _comfy()
    import comfy.ops
    base = comfy.ops.disable_weight_init
    groups = active * 32 // wide  # every SD1.5 GroupNorm has 32 groups; a narrow one keeps the wide group width

    class GroupNorm(base.GroupNorm):
        def __init__(self, num_groups, num_channels, *args, **kwargs):
            assert num_groups == 32, num_groups
            super().__init__(groups, num_channels, *args, **kwargs)

        def forward(self, x):
            return torch.nn.functional.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    class LayerNorm(base.LayerNorm):
        """LayerNorm over the wide width n·wide/active of which only these n channels are non-zero."""

        def forward(self, x):
            n = x.shape[-1]
            full = n * wide // active
            xf = x.float()  # in float32 under autocast too, as torch's layer_norm
            mean = xf.sum(-1, keepdim=True) / full
            var = ((xf - mean).pow(2).sum(-1, keepdim=True) + (full - n) * mean.pow(2)) / full
            y = (xf - mean) * torch.rsqrt(var + self.eps)
            y = y * self.weight + self.bias if self.weight is not None else y
            return y.to(x.dtype)

    class Ops(base):
        pass
    Ops.GroupNorm = GroupNorm
    Ops.LayerNorm = LayerNorm
    return Ops


def build_narrow_unet(active: int = ACTIVE):
    """The U-Net of UNET_CONFIG at width ``active`` (heads of 40), with the wide network's 320-dim timestep
    sinusoid; float32, PyTorch's default init."""
    _comfy()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    cfg = dict(UNET_CONFIG, model_channels=active, num_heads=-1, num_head_channels=HEAD)
    unet = UNetModel(**cfg, dtype=torch.float32, device="cpu", operations=narrow_ops(active))
    unet.time_embed[0] = torch.nn.Linear(WIDE, 4 * active)
    unet.model_channels = WIDE   # forward() builds the timestep sinusoid at this width
    from ..shapes.train import default_init
    default_init(unet)
    return unet


def _index(n: int, wide: int, active: int, width: int = WIDE, chunks: bool = False) -> torch.Tensor | None:
    """Where a narrow dimension of size n sits in the wide one (the network's width ``width``): None if unchanged;
    a prefix for widths k·active (k 1, 4); two halves for the U-Net's concatenations (k 2: [h, skip]; k 8: GEGLU's
    [value, gate]). ``chunks``: every k·active as k chunks, each at the start of its k-th of the wide width (the
    MMDiT's [q, k, v], adaLN's [shift, scale, gate, …] and its MLP's hidden width alike)."""
    if n == wide:
        return None
    k = n // active
    assert n == k * active and wide == k * width, (n, wide)
    if chunks and k > 1:
        return torch.cat([j * width + torch.arange(active) for j in range(k)])
    if k in (2, 8):
        h, H = n // 2, wide // 2
        return torch.cat([torch.arange(h), H + torch.arange(h)])
    return torch.arange(n)


def widen_unet(sd: dict, wide_shapes: dict, active: int = ACTIVE, width: int = WIDE, chunks: bool = False) -> dict:
    """The narrow state dict placed into zero tensors of the wide shapes (``wide_shapes``: key → shape of the
    320-wide U-Net's state dict, same keys; ``width`` / ``chunks``: the same for another network, ``_index``)."""
    out = {}
    for key, v in sd.items():
        shape = tuple(wide_shapes[key])
        w = v.new_zeros(shape)
        idx = [_index(n, N, active, width, chunks) for n, N in zip(v.shape, shape)]
        sub = w
        # place along each changed dim in turn (index_copy on a view built dim by dim)
        src = v
        for d, ix in enumerate(idx):
            if ix is None:
                continue
            full = list(src.shape)
            full[d] = shape[d]
            tmp = src.new_zeros(full)
            tmp.index_copy_(d, ix, src)
            src = tmp
        sub.copy_(src)
        out[key] = w
    return out


def wide_unet_shapes() -> dict:
    """key → shape of ComfyUI's 320-wide SD1.5 U-Net of UNET_CONFIG (built on the meta device: no memory)."""
    _comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    with torch.device("meta"):
        unet = UNetModel(**UNET_CONFIG, dtype=torch.float32, device="meta",
                         operations=comfy.ops.disable_weight_init)
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# MMDiT: SD3 detection ties hidden 64·depth, heads and joint blocks to depth (harness/tiny_models.sd3_dit_config),
# so more blocks means a wider network. The world's DiT is SD3's layout of depth DIT_DEPTH (hidden 384, 6 heads of
# 64, 6 joint blocks) trained narrow: DIT_ACTIVE of the 384 channels (4 whole heads), zeros in the rest, as the
# U-Net. The first DiT (depth 4, hidden 256, all of it active: 9.4 M parameters) drew blobs, one object too many or
# too few, after 16 000 steps (docs/scenes_world.md); six blocks of 256 are 14.1 M parameters (27 MiB in fp16),
# where depth 5 at its full 320 would be 18.2 M and take the committed weights over the 60 MiB.
DIT_DEPTH, DIT_ACTIVE, DIT_POS = 6, 256, 16  # a 16×16 latent is 8×8 patches, the table holds 16×16 (256 px)


def build_narrow_dit(depth: int = DIT_DEPTH, active: int = DIT_ACTIVE):
    """The MMDiT of ``depth`` joint blocks at width ``active`` (heads of 64) whose LayerNorms see the wide width
    64·depth (``narrow_ops``), narrow on CLIP-L (context and pooled 768); float32, adaLN-Zero init, the 2-d sin-cos
    position table at width ``active``."""
    _comfy()
    from ..shapes.train import build_dit
    return build_dit(narrow=True, depth=active // 64, num_blocks=depth,
                     operations=narrow_ops(active, 64 * depth))


def wide_dit_shapes(depth: int = DIT_DEPTH) -> dict:
    """key → shape of ComfyUI's MMDiT of SD3's layout at ``depth`` (narrow on CLIP-L; meta device: no memory)."""
    _comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    from ..tiny_models import sd3_dit_config
    with torch.device("meta"):
        dit = OpenAISignatureMMDITWrapper(**sd3_dit_config(depth=depth, pos=DIT_POS, narrow=True), dtype=torch.float32,
                                          device="meta", operations=comfy.ops.disable_weight_init)
    return {k: tuple(v.shape) for k, v in dit.state_dict().items()}


def widen_dit(sd: dict, depth: int = DIT_DEPTH, active: int = DIT_ACTIVE) -> dict:
    """The narrow DiT's weights in SD3's layout of ``depth`` (still narrow on CLIP-L: tiny_models.widen_dit adds
    the CLIP-G / T5 columns): each width-``active`` dimension placed as ``_index``'s chunks, zeros elsewhere."""
    blocks = len({k.split(".")[1] for k in sd if k.startswith("joint_blocks.")})
    width = sd["x_embedder.proj.weight"].shape[0]
    if (blocks, width) != (depth, active):
        raise ValueError(f"these DiT weights have {blocks} joint blocks of width {width}, the scenes world's layout is "
                         f"{depth} of {active} (harness/scenes/models.py); train them anew with "
                         f"`python -m harness.scenes.train dit --fresh`")
    return widen_unet(sd, wide_dit_shapes(depth), active, 64 * depth, chunks=True)
