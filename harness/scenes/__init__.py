"""The "scenes world": a trained diffusion world of one to three objects on textured backgrounds, the yardstick of
the PIE-Bench-style scorecard (issue 27). See docs/scenes_world.md."""
