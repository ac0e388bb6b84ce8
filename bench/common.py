"""What the speed benchmarks share: arguments, the shapes-world model through the host, interleaved timing."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import host  # noqa: E402
from harness.tiny_models import FILES, SD3_FILES  # noqa: E402

WORLDS = {"unet": (FILES["checkpoints"], "shapes-world SD1.5 UNet"),
          "sd3": (SD3_FILES["checkpoints"], "shapes-world SD3 MMDiT (flow)")}


def parser(doc: str, steps: int, cfg: float, rounds: int = 3, size: int = 256,
           worlds: bool = False) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=size, help="image side in pixels (latent = size/8)")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--cfg", type=float, default=cfg)
    ap.add_argument("--rounds", type=int, default=rounds)
    if worlds:
        ap.add_argument("--world", choices=list(WORLDS), default="unet",
                        help="the U-Net shapes world (SD1.5) or the SD3 one (a flow-matching MMDiT)")
    return ap


def shapes_world(world: str = "unet"):
    """Boot the host (progress bars off) and load a shapes-world checkpoint (``WORLDS``): (model, clip, vae,
    encode(text))."""
    host.boot()
    import comfy.utils
    import nodes
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(WORLDS[world][0])
    return model, clip, vae, lambda text: nodes.CLIPTextEncode().encode(clip, text)[0]


def interleaved(runs: dict, rounds: int, steps: int) -> dict:
    """Median seconds per step of each callable, after one warm-up call each, the runs interleaved round by round."""
    for fn in runs.values():
        fn()
    times: dict = {k: [] for k in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def print_times(title: str, med: dict, base: str | None = None) -> None:
    print(f"\n{title}")
    print(f"| {'what':<34} | {'s/step':>8} |" + (f" {'/ base':>8} |" if base else ""))
    print(f"|{'-' * 36}|{'-' * 10}|" + ("-" * 10 + "|" if base else ""))
    for k, v in med.items():
        print(f"| {k:<34} | {v:8.4f} |" + (f" {v / med[base]:8.3f} |" if base else ""))


class LiveBytes:
    """saved_tensors_hooks that track the bytes of saved tensors alive at once (their peak). ``distinct``: each
    storage counted once however many saved tensors view it, and the storages in ``exclude`` (the models' weights)
    not at all, so that the figure is the activations autograd keeps."""

    def __init__(self, distinct: bool = False, exclude: frozenset = frozenset()):
        self.live = self.peak = 0
        self.distinct, self.exclude = distinct, exclude
        self.refs: dict = {}  # distinct: storage pointer -> [saved tensors holding it, its bytes]

    def add(self, key, n: int) -> None:
        if key is not None:
            entry = self.refs.setdefault(key, [0, n])
            entry[0] += 1
            n = n if entry[0] == 1 else 0
        self.live += n
        self.peak = max(self.peak, self.live)

    def drop(self, key, n: int) -> None:
        if key is not None:
            entry = self.refs[key]
            entry[0] -= 1
            if entry[0]:
                return
            del self.refs[key]
        self.live -= n

    def pack(self, t):
        if not self.distinct:
            return _Held(t, self, None, t.numel() * t.element_size())
        key = t.untyped_storage().data_ptr()
        return _Held(t, None if key in self.exclude else self, key, t.untyped_storage().nbytes())

    @staticmethod
    def unpack(h):
        return h.t


class _Held:
    """A saved tensor, counted in its owner's live bytes while autograd holds it."""

    def __init__(self, t, owner, key, n: int):
        self.t, self.owner, self.key, self.n = t, owner, key, n
        if owner is not None:
            owner.add(key, n)

    def __del__(self):
        if self.owner is not None:
            self.owner.drop(self.key, self.n)
