"""Which model family a folder holds, and a text generator for any of them.

Three families train through ``cola-mm train`` and export a folder that the text benches and
``cola-mm eval suite`` read alike:

=================  =========================================  ==================================
family             folder                                     generator
=================  =========================================  ==================================
``cola_mm``        ``pipeline.json``, ``text_vae/``, ``dit/``  :class:`cola_mm.pipeline.ColaPipeline`
``ar``             ``ar/`` (LlamaForCausalLM), ``tokenizer/``  :class:`cola_mm.evaluation.ar.ARGenerator`
``masked_diffusion`` ``mdm/``, ``tokenizer/``                 :class:`~cola_mm.baselines.masked_diffusion.MaskedDiffusionGenerator`
=================  =========================================  ==================================

Loading a folder as the wrong family is a one-line :class:`CheckpointError` naming both.
"""

from __future__ import annotations

import os
from pathlib import Path

from cola_mm.core.components import CheckpointError

DESCRIPTIONS = {
    "cola_mm": "a Cola-MM pipeline (pipeline.json, text_vae/, dit/)",
    "ar": "an AR model (ar/, stage ar)",
    "masked_diffusion": "a masked diffusion model (mdm/, stage masked-diffusion)",
}


def detect_family(folder: str | os.PathLike) -> str | None:
    """The family of a model folder (see the module table), or None."""
    folder = Path(folder)
    if (folder / "pipeline.json").is_file():
        return "cola_mm"
    if (folder / "ar" / "config.json").is_file():
        return "ar"
    if (folder / "mdm" / "config.json").is_file():
        return "masked_diffusion"
    return None


def expect_family(folder: str | os.PathLike, family: str) -> None:
    """Nothing when ``folder`` is not of another known family; else a one-line error naming both."""
    found = detect_family(folder)
    if found is not None and found != family:
        raise CheckpointError(f"{folder} holds {DESCRIPTIONS[found]}, not {DESCRIPTIONS[family]}: "
                              f"load it as {found}")


def load_text_generator(folder: str | os.PathLike):
    """An object with ``generate_text(prompt, max_new_tokens, steps, cfg_scale, seed)``,
    ``tokenizer`` and ``family``, for a folder of any family."""
    family = detect_family(folder)
    if family is None:
        if not Path(folder).is_dir():
            raise CheckpointError(f"model folder not found: {folder}")
        raise CheckpointError(f"{folder} holds no model of a known family: expected "
                              f"{'; or '.join(DESCRIPTIONS.values())}")
    if family == "cola_mm":
        from cola_mm.pipeline import ColaPipeline

        gen = ColaPipeline.from_pretrained(folder)
    elif family == "ar":
        from cola_mm.evaluation.ar import ARGenerator

        gen = ARGenerator.from_pretrained(folder)
    else:
        from cola_mm.baselines.masked_diffusion import MaskedDiffusionGenerator

        gen = MaskedDiffusionGenerator.from_pretrained(folder)
    return gen
