"""Where set-up puts things (harness/setup_host.py writes them; everything else reads them from here).

Two test hosts, chosen by the environment variable ``COMFY_HOST``:
  - ``0.3.75`` (the default): ComfyUI 0.3.75 from a PyPI wheel, in .venv and .host/ (needs nothing beside the clone);
  - ``0.33``: ComfyUI 0.33.0 from ``../shared/hosts/comfyui-0.33.0.tar.gz``, in .venv-0.33 and .host-0.33/, with its
    own pinned requirements (harness/requirements-host-0.33.txt).
``COMFY_FRONTEND`` picks the frontend the server serves: empty (the default) for the one the host pins (1.32.9 on
0.3.75, 1.49.6 on 0.33), or a version set-up downloaded into .frontends/<version>/ (``1.58.1``), passed to ComfyUI as
``--front-end-root``.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_HOSTS = ROOT.parent / "shared" / "hosts"

HOSTS = {
    # name: (ComfyUI version, venv folder, host folder, frontend the host pins)
    "0.3.75": ("0.3.75", ".venv", ".host", "1.32.9"),
    "0.33": ("0.33.0", ".venv-0.33", ".host-0.33", "1.49.6"),
}
FRONTENDS = {"1.58.1": "a newer frontend than either host pins (PyPI, October 2026)"}

HOST_NAME = os.environ.get("COMFY_HOST", "").strip() or "0.3.75"
if HOST_NAME not in HOSTS:
    raise SystemExit(f"COMFY_HOST={HOST_NAME!r}: the test hosts are {', '.join(HOSTS)}")
COMFY_VERSION, _venv, _host, PINNED_FRONTEND = HOSTS[HOST_NAME]

HOST = ROOT / _host
VENV = ROOT / _venv
COMFY = HOST / "ComfyUI"
BASE = HOST / "base"
FRONTEND_DIR = ROOT / ".frontends"
PACK_LINK_NAME = "comfyui-invedit"
EXAMPLES = ROOT / "example_workflows"

FRONTEND = os.environ.get("COMFY_FRONTEND", "").strip() or None
if FRONTEND == PINNED_FRONTEND:
    FRONTEND = None
if FRONTEND is not None and FRONTEND not in FRONTENDS:
    raise SystemExit(f"COMFY_FRONTEND={FRONTEND!r}: leave it empty for the host's own ({PINNED_FRONTEND}) or pick "
                     f"one of {', '.join(FRONTENDS)}")


def frontend_version() -> str:
    """The frontend version the server serves (the host's pin unless ``COMFY_FRONTEND`` names another)."""
    return FRONTEND or PINNED_FRONTEND


def frontend_root() -> "Path | None":
    """The ``--front-end-root`` for ``COMFY_FRONTEND`` (None: the host's own package)."""
    if FRONTEND is None:
        return None
    return FRONTEND_DIR / FRONTEND / "comfyui_frontend_package" / "static"
