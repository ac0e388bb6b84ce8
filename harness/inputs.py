"""Input images the example workflows load (LoadImage names them), written into the host's input/ folder.

A user would load a photo; the harness provides a small procedural one with structure at several scales."""
from __future__ import annotations

import sys
from pathlib import Path

EXAMPLE_IMAGES = ("invedit_example.png",)


def example_image(size: int = 64):
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[:size, :size] / (size - 1)
    img = np.stack([0.25 + 0.5 * xx, 0.3 + 0.4 * yy, 0.6 - 0.3 * xx * yy], -1)   # soft background gradient
    disc = (xx - 0.42) ** 2 + (yy - 0.45) ** 2 < 0.09
    img[disc] = [0.86, 0.16, 0.14]                                                  # a red circle
    square = (abs(xx - 0.78) < 0.12) & (abs(yy - 0.75) < 0.12)
    img[square] = [0.15, 0.35, 0.85]                                                # a blue square
    return Image.fromarray((img * 255).round().astype(np.uint8))


def write(input_dir: Path) -> None:
    input_dir.mkdir(parents=True, exist_ok=True)
    example_image().save(input_dir / EXAMPLE_IMAGES[0])


if __name__ == "__main__":
    write(Path(sys.argv[1]))
