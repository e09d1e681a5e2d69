"""The baselines Cola-MM is compared with, beside its own pipeline (issue 19): the LLaDA-style
masked diffusion LM (:mod:`.masked_diffusion`). The AR baseline is ``transformers.LlamaForCausalLM``
(stage ``ar``, :mod:`cola_mm.training.stages.ar`); the harness that matches sizes and training
FLOPs across families is :mod:`cola_mm.training.matching`."""
