"""Stand-in for torchaudio in the pack's ComfyUI 0.33 test environment (no CPU build for this torch): imports,
raises on use. Nothing the pack tests touches audio."""
__version__ = "0.0.0+stub"


class _Unavailable:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, item):
        return _Unavailable(f"{self._name}.{item}")

    def __call__(self, *a, **k):
        raise RuntimeError(f"torchaudio stand-in: {self._name} is not available in this test environment")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(f"torchaudio.{name}")
