"""The baselines Cola-MM is compared with, trained by the same loop on the same shards
(issue 19): the LLaDA-style masked diffusion LM (:mod:`.masked_diffusion`), and the harness that
matches model sizes and training FLOPs across families (:mod:`.matching`). The AR baseline is
``transformers.LlamaForCausalLM`` (stage ``ar``, :mod:`cola_mm.training.stages.ar`)."""
