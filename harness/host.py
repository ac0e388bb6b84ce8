"""The real ComfyUI (the test host of harness/paths.py: 0.3.75, or 0.33.0 with COMFY_HOST=0.33), in this process:
boot it on the isolated base directory, load the pack as a custom node from custom_nodes/, and run API-format
prompts through ComfyUI's own validator and executor.

    from harness import host
    host.boot()                       # idempotent
    outputs = host.run_prompt(graph)  # {node_id: ui-output dict}; raises PromptError on validation/execution errors
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import uuid

from .paths import BASE, COMFY, PACK_LINK_NAME

_booted = False


class PromptError(RuntimeError):
    def __init__(self, message: str, details=None):
        super().__init__(message)
        self.details = details


class _ServerStub:
    """What PromptExecutor needs of a PromptServer (it keeps its own status_messages, which run_prompt reads)."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


class _QuietWithoutTorchaudio(logging.Filter):
    """Drops ComfyUI's warnings about torchaudio while it boots: no torchaudio build exists for the pinned torch
    2.13 CPU, so its audio extras (nodes_audio*.py; ACE, MMAudio) cannot load, and the pack uses none of them.
    Any other import failure, and the summary that follows it, still gets through."""

    GENERIC = ("WARNING: some comfy_extras/ nodes did not import correctly", "This issue might be caused",
               "Please do a: pip install")

    def __init__(self):
        super().__init__()
        self.dropped, self.other_failure = 0, False

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        audio = "torchaudio" in msg or msg.startswith("IMPORT FAILED: nodes_audio")
        if not audio and (msg.startswith("Cannot import") or msg.startswith("IMPORT FAILED")):
            self.other_failure = True
        generic = not self.other_failure and (msg.strip() == "" or msg.strip().startswith(self.GENERIC))
        if record.levelno == logging.WARNING and (audio or generic):
            self.dropped += 1
            return False
        return True


def boot() -> None:
    """Import ComfyUI on CPU with the base directory of set-up, and load custom nodes (the pack among them)."""
    global _booted
    if _booted:
        return
    if not (COMFY / "main.py").exists() or not (BASE / "custom_nodes" / PACK_LINK_NAME).exists():
        raise RuntimeError("The host is not set up: run `python3 harness/setup_host.py` (make test does).")
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
    # ComfyUI first: the repository root (the pack, on sys.path for tests) has a `nodes` package of its own
    while str(COMFY) in sys.path:
        sys.path.remove(str(COMFY))
    sys.path.insert(0, str(COMFY))
    if "nodes" in sys.modules and not hasattr(sys.modules["nodes"], "NODE_CLASS_MAPPINGS"):
        raise RuntimeError("the pack's nodes/ package was imported as top-level `nodes` before ComfyUI's")
    quiet = _QuietWithoutTorchaudio()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        _boot()
    finally:
        root.removeFilter(quiet)
    if quiet.dropped:
        logging.getLogger(__name__).info("ComfyUI's audio nodes are not loaded (no torchaudio for torch 2.13 CPU); "
                                         "the pack does not use them")
    _booted = True
    atexit.register(release)


def _boot() -> None:
    from comfy.cli_args import args
    # the CPU unless INVEDIT_DEVICE=cuda (bench/realscale.py --gpu, make gpu-check): ComfyUI's default device then.
    # In process, a newer host's dynamic VRAM (set up by its main.py) stays off; the server runs of make gpu-check
    # exercise it.
    args.cpu = os.environ.get("INVEDIT_DEVICE", "cpu") != "cuda"
    args.base_directory = str(BASE)
    args.disable_api_nodes = True
    import utils.extra_config  # noqa: F401  (before `nodes`, or `utils` resolves to comfy/utils.py)
    import folder_paths
    import nodes

    assert os.path.samefile(folder_paths.base_path, BASE), folder_paths.base_path
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    from . import pack_node_ids
    missing = [n for n in pack_node_ids() if n not in nodes.NODE_CLASS_MAPPINGS]
    if missing:
        raise RuntimeError(f"the pack did not load (missing {missing}); see the 'IMPORT FAILED' log above")


def release() -> None:
    """Unload every model and collect the cycles that hold them, while ComfyUI's modules are still intact: a
    ModelPatcher that lives until interpreter exit is deleted after its module's globals are gone, and its __del__
    then fails ('NoneType' object has no attribute 'ON_DETACH'). Registered at exit by ``boot``; callable earlier."""
    if not _booted:
        return
    import gc

    import comfy.model_management as mm
    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()


def pack_module(name: str):
    """The pack's module ``name`` (e.g. ``"losses.clip"``) as ComfyUI loaded it from custom_nodes/."""
    boot()
    found = next((m for k, m in sys.modules.items() if k.endswith(f"{PACK_LINK_NAME}.{name}")), None)
    if found is None:  # a module no node imports (yet): import it under the pack's package
        import importlib
        pack = next(k for k in sys.modules if k.endswith(PACK_LINK_NAME))
        found = importlib.import_module(f"{pack}.{name}")
    return found


def node_class(node_id: str):
    import nodes
    return nodes.NODE_CLASS_MAPPINGS[node_id]


def run_prompt(prompt: dict, prompt_id: str | None = None) -> dict:
    """Validate and execute an API-format prompt with the real executor; return the outputs' ui dicts."""
    boot()
    import execution

    prompt_id = prompt_id or uuid.uuid4().hex
    valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid[0]:
        raise PromptError(f"prompt invalid: {valid[1]}", valid[3])
    server = _ServerStub()
    # "ram_inactive": read by newer hosts (0.33); 0.3.75 ignores it
    executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    executor.execute(prompt, prompt_id, extra_data={}, execute_outputs=valid[2])
    if not executor.success:
        errors = [d for e, d in executor.status_messages if e == "execution_error"]
        msg = errors[0].get("exception_message", "?") if errors else "unknown"
        raise PromptError(f"execution failed: {msg}", errors)
    return executor.history_result["outputs"]


def graph():
    """A fresh GraphBuilder (API-format prompt builder)."""
    boot()
    from comfy_execution.graph_utils import GraphBuilder
    return GraphBuilder()
