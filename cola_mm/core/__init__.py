"""The ground floor every other package builds on: typed configs (:mod:`.config`), component
save/load (:mod:`.components`), transformer layers (:mod:`.layers`), the unified latent
sequence (:mod:`.sequence`) and image I/O (:mod:`.images`). Nothing here imports from above."""
