"""One door to generate text with a model folder of any family (:mod:`cola_mm.core.families`):
the text benches and ``cola-mm eval suite`` treat the prior and its baselines alike."""

from __future__ import annotations

import os
from pathlib import Path

from cola_mm.core.components import CheckpointError
from cola_mm.core.families import DESCRIPTIONS, detect_family


def load_text_generator(folder: str | os.PathLike):
    """An object with ``tokenizer``, ``family`` and the jobs it does: ``generate_text(prompt,
    max_new_tokens, steps, cfg_scale, seed)`` (a :class:`~cola_mm.pipeline.ColaPipeline`, an
    :class:`~cola_mm.evaluation.ar.ARGenerator`, a
    :class:`~cola_mm.baselines.masked_diffusion.MaskedDiffusionGenerator`), ``caption(images, …)``
    (the pipeline, an :class:`~cola_mm.baselines.ar_captioner.ARCaptioner`), ``generate_image``
    (the pipeline)."""
    family = detect_family(folder)
    if family is None:
        if not Path(folder).is_dir():
            raise CheckpointError(f"model folder not found: {folder}")
        raise CheckpointError(f"{folder} holds no model of a known family: expected "
                              f"{'; or '.join(DESCRIPTIONS.values())}")
    if family == "cola_mm":
        from cola_mm.pipeline import ColaPipeline

        return ColaPipeline.from_pretrained(folder)
    if family == "ar":
        from cola_mm.evaluation.ar import ARGenerator

        return ARGenerator.from_pretrained(folder)
    if family == "ar_captioner":  # captions only: caption(images, …), no generate_text
        from cola_mm.baselines.ar_captioner import ARCaptioner

        return ARCaptioner.from_pretrained(folder)
    from cola_mm.baselines.masked_diffusion import MaskedDiffusionGenerator

    return MaskedDiffusionGenerator.from_pretrained(folder)
