"""The pack's own socket types (io.Custom). Renamed types keep working in saved workflows: links are matched by the
node definitions at run time, not by the type string saved with the link."""
from __future__ import annotations

from comfy_api.latest import io

HSpaceDirection = io.Custom("INVEDIT_HSPACE_DIRECTION")  # hooks.directions: Direction / ImplicitDirection / Composite
PixelLoss = io.Custom("INVEDIT_PIXEL_LOSS")  # losses.pixel: loss(images01, generator) -> scalar (was INVEDIT_DOODL_LOSS)
LossHistory = io.Custom("INVEDIT_LOSS_HISTORY")  # samplers.steps.LossHistory: an optimiser's loss per step
ValueEmbed = io.Custom("INVEDIT_VALUE_EMBED")  # optim.stylediffusion.ValueEmbedding: an image's inversion
ImageClassifier = io.Custom("INVEDIT_CLASSIFIER")  # losses.classifiers.ImageClassifier: logits of [0, 1] images
CASOEmbedding = io.Custom("INVEDIT_CASO_EMBEDDING")  # list of optim.caso.ClassEmbedding
