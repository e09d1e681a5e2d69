"""Which model family a folder holds (detection and one-line errors; no model code).

Three families train through ``cola-mm train`` and export a folder:

====================  ==============================================
family                folder
====================  ==============================================
``cola_mm``           ``pipeline.json``, ``text_vae/``, ``dit/`` …
``ar``                ``ar/`` (LlamaForCausalLM), ``tokenizer/``
``masked_diffusion``  ``mdm/``, ``tokenizer/``
``ar_captioner``      ``ar_captioner/`` (prefix + ``lm/``), ``image_vae/``, ``tokenizer/``
====================  ==============================================

Loading a folder as the wrong family, or with a tokenizer of another vocabulary, is a one-line
:class:`~cola_mm.core.components.CheckpointError` naming both.
:func:`cola_mm.evaluation.generators.load_text_generator` loads any of them for generation.
"""

from __future__ import annotations

import os
from pathlib import Path

from cola_mm.core.components import CheckpointError

DESCRIPTIONS = {
    "cola_mm": "a Cola-MM pipeline (pipeline.json, text_vae/, dit/)",
    "ar": "an AR model (ar/, stage ar)",
    "masked_diffusion": "a masked diffusion model (mdm/, stage masked-diffusion)",
    "ar_captioner": "an AR captioner (ar_captioner/, stage ar-captioner)",
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
    if (folder / "ar_captioner" / "config.json").is_file():
        return "ar_captioner"
    return None


def expect_family(folder: str | os.PathLike, family: str) -> None:
    """Nothing when ``folder`` is not of another known family; else a one-line error naming both."""
    found = detect_family(folder)
    if found is not None and found != family:
        raise CheckpointError(f"{folder} holds {DESCRIPTIONS[found]}, not {DESCRIPTIONS[family]}: "
                              f"load it as {found}")


def check_tokenizer(vocab_size, mask_token_id: int | None, tokenizer, model_where: str, tok_where: str) -> None:
    """A one-line :class:`CheckpointError` when the tokenizer is not the one the model was trained with."""
    if len(tokenizer) != vocab_size:
        raise CheckpointError(f"the tokenizer {tok_where} has {len(tokenizer)} tokens but the model {model_where} "
                              f"was trained on a vocabulary of {vocab_size}: use the tokenizer it was trained with")
    if mask_token_id is not None and tokenizer.mask_token_id != mask_token_id:
        raise CheckpointError(f"the tokenizer {tok_where} has <mask> id {tokenizer.mask_token_id} but the model "
                              f"{model_where} was trained with {mask_token_id}")
