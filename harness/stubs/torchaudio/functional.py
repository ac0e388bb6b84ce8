"""torchaudio stand-in submodule (raises on use)."""
from . import _Unavailable


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(f"torchaudio.functional.{name}")
