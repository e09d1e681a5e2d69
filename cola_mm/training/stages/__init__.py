"""The training stages, by the name a run config gives in ``stage:``.

Adding a stage: write a class that follows :class:`cola_mm.training.stage.Stage` in a module
here, and add it to :data:`STAGES`.
"""

from __future__ import annotations

from cola_mm.training.stages.ar import ARStage
from cola_mm.training.stages.ar_captioner import ARCaptionerStage
from cola_mm.training.stages.image_vae import ImageVAEStage
from cola_mm.training.stages.masked_diffusion import MaskedDiffusionStage
from cola_mm.training.stages.prior import JointStage
from cola_mm.training.stages.text_vae import TextVAEStage

STAGES: dict[str, type] = {cls.name: cls for cls in (TextVAEStage, ImageVAEStage, JointStage, ARStage, MaskedDiffusionStage,
                                                       ARCaptionerStage)}
