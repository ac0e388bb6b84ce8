"""Input images the example workflows load (LoadImage names them), written into the host's input/ folder.

A user would load a photo; the harness provides images the embedded models know: a shapes-world image
(harness/shapes/data.py), a red circle, and a scenes-world one (harness/scenes/data.py, the examples that rank
methods), "a large red circle and a small blue square on a striped background"."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXAMPLE_IMAGES = {
    "invedit_example.png": dict(colour=0, shape=0, seed=7),  # a red circle
    # a large red circle and a small blue square on a striped background (normal style)
    "invedit_scene.png": dict(world="scenes", seed=500749, count=2, style=0, texture=0),
}
SCENE_IMAGE = "invedit_scene.png"


def scene(seed: int, **fixed):
    """The scenes-world Scene an image spec names (harness/scenes/data.py make_scenes)."""
    from harness.scenes import data
    return data.make_scenes(1, seed, **fixed)


def example_image(seed: int, world: str = "shapes", **spec):
    import numpy as np
    from PIL import Image
    if world == "scenes":
        from harness.scenes import data
        img = data.render(scene(seed, **spec))[0]
    else:
        from harness.shapes import data
        img = data.make_batch(1, seed, **spec).images[0]
    return Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def write(input_dir: Path) -> None:
    input_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in EXAMPLE_IMAGES.items():
        example_image(**spec).save(input_dir / name)


if __name__ == "__main__":
    write(Path(sys.argv[1]))
