"""The "scenes world": a trained diffusion world of one to three objects on textured backgrounds, the yardstick of
the PIE-Bench-style scorecard (issue 27). See docs/scenes_world.md."""

import os
from pathlib import Path

# Training state that is not committed (optimiser states, the caption cache, the latent pool): outside the work tree,
# which a new session's checkout lays anew, so that a machine kept for the next session keeps it too. A stage whose
# state is gone goes on from its committed weights (train._resume); the caches are rebuilt.
STATE = Path(os.environ.get("INVEDIT_SCENES_STATE") or Path.home() / ".cache" / "invedit-scenes")
