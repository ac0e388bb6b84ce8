"""Input images the example workflows load (LoadImage names them), written into the host's input/ folder.

A user would load a photo; the harness provides a shapes-world image (harness/shapes/data.py), which the
embedded model knows: a red circle."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXAMPLE_IMAGES = {"invedit_example.png": dict(colour=0, shape=0, seed=7)}  # a red circle


def example_image(colour: int, shape: int, seed: int):
    import numpy as np
    from PIL import Image
    from harness.shapes import data

    img = data.make_batch(1, seed, colour=colour, shape=shape).images[0]
    return Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def write(input_dir: Path) -> None:
    input_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in EXAMPLE_IMAGES.items():
        example_image(**spec).save(input_dir / name)


if __name__ == "__main__":
    write(Path(sys.argv[1]))
