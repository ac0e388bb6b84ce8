"""The "shapes world": a tiny trained diffusion world with known semantics (one coloured shape per image), the
embedded default model of the demo and the yardstick of every edit. See docs/shapes_world.md."""
