"""What the speed benchmarks share: arguments, the shapes-world model through the host, interleaved timing and the
report.

Every ratio is computed per round: its arms run back to back inside the round, in an order reversed every other
round (``round_order``), so that a drift over the run falls on both sides; ``--rounds`` (default and minimum for a
measurement: ``MIN_ROUNDS`` = 7) rounds give one value each, and the bench prints min / median / max of every ratio
with its target judged on the median (``Report``)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import host  # noqa: E402
from harness.tiny_models import FILES, SD3_FILES  # noqa: E402

WORLDS = {"unet": (FILES["checkpoints"], "shapes-world SD1.5 UNet"),
          "sd3": (SD3_FILES["checkpoints"], "shapes-world SD3 MMDiT (flow)")}

MIN_ROUNDS = 7  # timings on a 2-core machine vary ±20 % run to run: fewer rounds cannot resolve a 5 % target
RUNS: list = []  # every Report a bench finished in this process (``python -m bench`` collects its table from them)


class BenchParser(argparse.ArgumentParser):
    """The benches' argument parser: refuses ``--rounds`` below 1 and warns below ``MIN_ROUNDS``."""

    def parse_args(self, args=None, namespace=None):
        a = super().parse_args(args, namespace)
        if getattr(a, "rounds", MIN_ROUNDS) < 1:
            self.error("--rounds must be at least 1")
        if getattr(a, "rounds", MIN_ROUNDS) < MIN_ROUNDS:
            print(f"warning: --rounds {a.rounds} < {MIN_ROUNDS}: the ratios' spread is too wide to judge a target "
                  f"(a smoke run, not a measurement)", file=sys.stderr)
        return a


def parser(doc: str, steps: int, cfg: float, rounds: int = MIN_ROUNDS, size: int = 256,
           worlds: bool = False) -> argparse.ArgumentParser:
    ap = BenchParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=size, help="image side in pixels (latent = size/8)")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--cfg", type=float, default=cfg)
    ap.add_argument("--rounds", type=int, default=rounds,
                    help=f"interleaved timing rounds, each giving one value of every ratio (>= {MIN_ROUNDS} to judge "
                         f"a target on the median)")
    ap.add_argument("--json", metavar="PATH", help="also write the settings, times and ratios (with the host's "
                                                   "ComfyUI version and the machine) as JSON to PATH")
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


def step_inputs(model, encode, size: int, steps: int, flow: bool) -> dict:
    """What the per-step ratio benches (EDICT, BDIA vs DDIM) feed every arm: the prompts, a seeded image latent and
    noise of ``size`` px, an empty latent and the SIGMAS (a flow model: the simple schedule of steps + 1 without its
    first level, since a flow DDIM inversion handed to a stock sampler stops below σ = 1; else 'normal')."""
    import torch
    C = host.node_class
    g = torch.Generator().manual_seed(0)
    side, ch = size // 8, model.model.latent_format.latent_channels
    noise_like = torch.randn(1, ch, side, side, generator=g) * (1 if flow else 4)
    noise = torch.randn(1, ch, side, side, generator=g)
    sigmas = (C("BasicScheduler").execute(model, "simple", steps + 1, 1.0)[0][1:] if flow else
              C("BasicScheduler").execute(model, "normal", steps, 1.0)[0])
    return {"pos": encode("a red circle"), "neg": encode(""), "latent": {"samples": noise_like}, "noise": noise,
            "empty": torch.zeros_like(noise), "sigmas": sigmas}


# -- statistics ---------------------------------------------------------------------------------------------------

def spread(values) -> tuple:
    """(min, median, max) of a list of per-round values."""
    v = list(values)
    if not v:
        raise ValueError("no values")
    return min(v), statistics.median(v), max(v)


def round_order(names, i: int) -> list:
    """The order of round ``i``: as given in even rounds, reversed in odd ones, so that a drift over the run (or a
    penalty on whichever runs first) falls on each side of every ratio in turn."""
    names = list(names)
    return names if i % 2 == 0 else names[::-1]


def interleaved(runs: dict, rounds: int, steps: int | dict = 1, clock=time.perf_counter,
                warmup: bool = True) -> dict:
    """{name: [seconds per step of each round]}: every callable once as a warm-up, then ``rounds`` rounds in which
    each runs once, back to back, in ``round_order``. ``steps``: one divisor for all, or {name: divisor}."""
    if warmup:
        for fn in runs.values():
            fn()
    per = steps if isinstance(steps, dict) else {k: steps for k in runs}
    times: dict = {k: [] for k in runs}
    for i in range(rounds):
        for name in round_order(runs, i):
            t = clock()
            runs[name]()
            times[name].append((clock() - t) / per[name])
    return times


def per_round(num: list, den: list) -> list:
    """The ratio of two arms round by round (both timed in the same round)."""
    if len(num) != len(den):
        raise ValueError(f"{len(num)} rounds against {len(den)}")
    return [a / b for a, b in zip(num, den)]


def medians(times: dict) -> dict:
    return {k: statistics.median(v) for k, v in times.items()}


# -- what ran, where ---------------------------------------------------------------------------------------------

def host_version() -> str:
    """The ComfyUI version of the host the benches run on (its comfyui_version.py)."""
    from harness.paths import COMFY
    m = re.search(r"""__version__\s*=\s*["']([^"']+)""", (COMFY / "comfyui_version.py").read_text()) \
        if (COMFY / "comfyui_version.py").exists() else None
    return m.group(1) if m else "unknown"


def machine() -> dict:
    """The CPU model, its cores, torch's version and threads, and the GPU if one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    info = {"cpu": cpu, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def describe_machine(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), torch {m['torch']}, {m['threads']} "
            f"threads" + (f", {m['gpu']}" if m.get("gpu") else ""))


# -- the report --------------------------------------------------------------------------------------------------

@dataclass
class Ratio:
    """One ratio, a value per round; its target (an upper bound) is judged on the median."""
    what: str
    values: list
    target: float | None = None
    note: str = ""

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "-"
        return "PASS" if self.median <= self.target else "FAIL"

    def as_dict(self) -> dict:
        return {"what": self.what, "values": list(self.values), "min": self.min, "median": self.median,
                "max": self.max, "target": self.target, "verdict": self.verdict, "note": self.note}


def ratio_rows(ratios, bench: bool = False) -> list:
    """The ratio table's lines: min / median / max over the rounds, the target and the verdict on the median."""
    lead = [f"{'bench':<22}"] if bench else []
    head = " | ".join(lead + [f"{'ratio':<44}", f"{'rounds':>6}", f"{'min':>7}", f"{'median':>7}", f"{'max':>7}",
                              f"{'target':>8}", f"{'verdict':<7}"])
    lines = [f"| {head} |", "|" + "|".join("-" * (len(c) + 2) for c in head.split(" | ")) + "|"]
    for b, r in ratios:
        cells = ([f"{b:<22}"] if bench else []) + [
            f"{r.what:<44}", f"{len(r.values):>6}", f"{r.min:7.3f}", f"{r.median:7.3f}", f"{r.max:7.3f}",
            f"{'<= ' + format(r.target, 'g') if r.target is not None else '-':>8}", f"{r.verdict:<7}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


class Report:
    """What one bench run measured: its settings, the arms' per-round times and the per-round ratios. ``finish``
    prints the ratio table (and the targets' verdicts, judged on the median), writes ``--json`` and adds the run to
    ``RUNS``."""

    def __init__(self, bench: str, args=None, **settings):
        self.bench = bench
        self.settings = {k: v for k, v in vars(args).items() if k != "json"} if args is not None else {}
        self.settings.update(settings)
        self.json = getattr(args, "json", None)
        self.rounds = getattr(args, "rounds", None)
        self.times: dict = {}
        self.ratios: list = []
        self.start = time.perf_counter()
        self.wall_s = None

    def time_table(self, title: str, times: dict, unit: str = "s/step", base: str | None = None) -> None:
        """Print the arms' seconds (min / median / max over the rounds) and keep them for the JSON."""
        self.times.update({k: list(v) for k, v in times.items()})
        print(f"\n{title}")
        w = max(10, len(unit) + 4)
        print(f"| {'what':<40} | {unit + ' min':>{w}} | {'median':>8} | {'max':>8} |"
              + (f" {'/ base':>7} |" if base else ""))
        print(f"|{'-' * 42}|{'-' * (w + 2)}|{'-' * 10}|{'-' * 10}|" + ("-" * 9 + "|" if base else ""))
        mid = medians(times)
        for k, v in times.items():
            lo, m, hi = spread(v)
            print(f"| {k:<40} | {lo:{w}.4f} | {m:8.4f} | {hi:8.4f} |" + (f" {m / mid[base]:7.3f} |" if base else ""))

    def ratio(self, what: str, values, target: float | None = None, note: str = "") -> Ratio:
        r = Ratio(what, list(values), target, note)
        self.ratios.append(r)
        return r

    def print_ratios(self, title: str = "") -> None:
        n = self.rounds if self.rounds is not None else max((len(r.values) for r in self.ratios), default=0)
        print(f"\n{title or 'Ratios'} — one value per round, {n} interleaved rounds (order reversed every other "
              f"round); a target is judged on the median")
        for line in ratio_rows([(self.bench, r) for r in self.ratios]):
            print(line)
        for r in self.ratios:
            if r.note:
                print(f"  {r.what}: {r.note}")
        if self.rounds is not None and self.rounds < MIN_ROUNDS:
            print(f"  (only {self.rounds} rounds: fewer than {MIN_ROUNDS}, the verdicts are not a measurement)")

    def as_dict(self) -> dict:
        return {"bench": self.bench, "settings": self.settings, "wall_s": self.wall_s, "times": self.times,
                "ratios": [r.as_dict() for r in self.ratios]}

    def finish(self, title: str = "") -> "Report":
        if self.ratios:
            self.print_ratios(title)
        self.wall_s = time.perf_counter() - self.start
        RUNS.append(self)
        if self.json:
            write_json(self.json, [self])
        return self


def document(reports) -> dict:
    """The JSON of some bench runs, with the host's ComfyUI version and the machine."""
    return {"host": {"comfyui": host_version()}, "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "runs": [r.as_dict() for r in reports]}


def write_json(path, reports, **extra) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**document(reports), **extra}, indent=1) + "\n")


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
