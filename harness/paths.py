"""Where set-up puts things (harness/setup_host.py writes them; everything else reads them from here)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / ".host"
VENV = ROOT / ".venv"
COMFY = HOST / "ComfyUI"
BASE = HOST / "base"
PACK_LINK_NAME = "comfyui-invedit"
EXAMPLES = ROOT / "example_workflows"
