"""Training: the run config (:mod:`.config`), the generic loop (:mod:`.loop`), the contract a
stage follows (:mod:`.stage`), the stages themselves (:mod:`.stages`) and step checkpoints
(:mod:`.checkpoint`)."""
