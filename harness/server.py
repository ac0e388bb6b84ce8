"""A real ComfyUI server on 127.0.0.1, started headless on the isolated base directory with the pack in
custom_nodes/, and a small HTTP client for it (stdlib only).

    with ComfyServer(output_dir=...) as srv:
        srv.object_info()
        pid = srv.queue(api_prompt)          # raises ServerError(400, body) on validation errors
        entry = srv.wait(pid, timeout=300)   # the /history entry; raises on execution errors
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .paths import BASE, COMFY, HOST, VENV, frontend_root


class ServerError(RuntimeError):
    def __init__(self, status: int, body):
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000] if not isinstance(body, str) else body[:2000]}")
        self.status = status
        self.body = body


class PromptFailed(RuntimeError):
    """A queued prompt that ended in an error or an interrupt: ``messages`` are its /history status messages of
    that kind (each a dict: node_id, node_type, exception_message, … for an error)."""

    def __init__(self, prompt_id: str, entry: dict):
        msgs = entry["status"].get("messages", [])
        self.entry = entry
        self.interrupted = any(m[0] == "execution_interrupted" for m in msgs)
        self.messages = [m[1] for m in msgs if m[0] in ("execution_error", "execution_interrupted")]
        super().__init__(f"prompt {prompt_id} {'was interrupted' if self.interrupted else 'failed'}: "
                         f"{json.dumps(self.messages)[:3000]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, port: int | None = None, output_dir: Path | None = None, log_path: Path | None = None,
                 extra_args: tuple[str, ...] = (), *, cpu: bool = True, python: Path | None = None,
                 comfy: Path | None = None, base: Path | None = None):
        """The test host of harness/paths.py on the CPU by default; ``cpu`` False, ``python``, ``comfy`` and ``base``
        start another ComfyUI tree with another interpreter on its default device (bench/gpu_check.py)."""
        self.cpu = cpu
        self.python = Path(python) if python else VENV / "bin" / "python"
        self.comfy = Path(comfy) if comfy else COMFY
        self.base = Path(base) if base else BASE
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = Path(output_dir) if output_dir else None
        # not under BASE/temp: ComfyUI empties temp/ at start and exit
        self.log_path = Path(log_path) if log_path else HOST / "logs" / f"server-{self.port}.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "ComfyServer":
        cmd = [str(self.python), "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
               "--base-directory", str(self.base), "--disable-api-nodes", *self.extra_args]
        fe = frontend_root()
        if fe is not None and "--front-end-root" not in self.extra_args:
            if not (fe / "index.html").exists():
                raise RuntimeError(f"COMFY_FRONTEND: {fe} is missing; run `python3 harness/setup_host.py`")
            cmd += ["--front-end-root", str(fe)]
        if self.output_dir:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            cmd += ["--output-directory", str(self.output_dir)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
        self.proc = subprocess.Popen(cmd, cwd=self.comfy, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                self.get("/object_info/KSampler", timeout=2)
                return self
            except (OSError, ServerError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body=None, timeout: float = 30.0):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ServerError(e.code, parsed) from None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def get(self, path: str, timeout: float = 30.0):
        return self._request("GET", path, timeout=timeout)

    def post(self, path: str, body, timeout: float = 30.0):
        return self._request("POST", path, body, timeout=timeout)

    def object_info(self) -> dict:
        return self.get("/object_info")

    def queue(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll /history until the prompt completes; return its entry; raise PromptFailed if it failed or was
        interrupted."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            entry = hist.get(prompt_id) if isinstance(hist, dict) else None
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                if entry["status"].get("status_str") != "success":
                    raise PromptFailed(prompt_id, entry)
                return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}; log:\n{self.log_tail()}")
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} not finished within {timeout} s")

    def view(self, image: dict) -> bytes:
        q = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        req = urllib.request.Request(f"{self.url}/view?{q}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()


def main() -> None:
    """`python -m harness.server [--port P]`: run the server in the foreground until Ctrl-C (manual checks)."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8188)
    a = ap.parse_args()
    with ComfyServer(port=a.port) as srv:
        print(f"ComfyUI at {srv.url} (log {srv.log_path}); Ctrl-C stops it", flush=True)
        try:
            while srv.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    sys.exit(0)


if __name__ == "__main__":
    main()
