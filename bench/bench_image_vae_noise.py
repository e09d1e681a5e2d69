"""How robust is the image VAE decoder to errors in the latents the prior generates?

The prior never reproduces a latent exactly, and on the shapes benchmark a small object (13 px
of a 64 px canvas) is a few latent cells: a slightly wrong latent can decode to a blob of the
wrong shape or colour. For held-out one-object shapes scenes the posterior mean is mapped to
prior space (the VAE's stored shift/scale, where the prior works), Gaussian noise of standard
deviation σ is added, the result is decoded, and the probe classifier (``cola-mm probe train``)
judges the image (:func:`cola_mm.data.shapes.judge_image`: "all" = exactly one object, with
shape, colour, size and cell right), reported apart for small and large objects.

    python bench/bench_image_vae_noise.py --ckpt checkpoints/demo runs/vae_image_noise/model \\
        --json bench/results/image_vae_noise.json --plot bench/results/image_vae_noise.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cola_mm.core.images import tensor_to_image  # noqa: E402
from cola_mm.data.pairs import pixels_from_image  # noqa: E402
from cola_mm.data.shapes import judge_image, one_object  # noqa: E402
from cola_mm.evaluation.images import read_samples  # noqa: E402
from cola_mm.evaluation.probe import Probe  # noqa: E402
from cola_mm.vae_image.model import ImageVAE  # noqa: E402

SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75)


@torch.no_grad()
def prior_tokens(vae: ImageVAE, x: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """Posterior means in prior space (what the prior generates), encoded once per checkpoint."""
    return torch.cat([vae.to_tokens(vae.encode(x[i:i + batch])[0]) for i in range(0, len(x), batch)])


@torch.no_grad()
def accuracy_under_noise(vae: ImageVAE, probe: Probe, tokens: torch.Tensor, objects: list[dict], sigma: float,
                         seed: int, batch: int = 100) -> dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    right: dict[str, list[bool]] = {}
    for i in range(0, len(tokens), batch):
        chunk = tokens[i:i + batch]
        noisy = chunk + sigma * torch.randn(chunk.shape, generator=gen)
        images = [tensor_to_image(img) for img in vae.decode(vae.from_tokens(noisy)).float()]
        for obj, pred in zip(objects[i:i + batch], probe.predict(images)):
            verdict = judge_image(pred, {"objects": [obj], "relation": None})  # count, size too
            for attr in ("all", "shape", "color"):
                right.setdefault(f"{obj['size']}_{attr}", []).append(verdict[attr])
    return {k: sum(v) / len(v) for k, v in sorted(right.items())}


def plot(results: dict[str, dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for ckpt, r in results.items():
        for size, style in (("small", "-o"), ("large", "--s")):
            ax.plot(r["sigmas"], [100 * a[f"{size}_all"] for a in r["accuracy"]], style, label=f"{ckpt}: {size}")
    ax.set_xlabel("σ of the noise added to the latent (prior space)")
    ax.set_ylabel("decoded image judged all right (%)")
    ax.set_title("image VAE decoder under latent noise (shapes test, 1 object)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", required=True, help="folders with an image VAE (image_vae/ or itself)")
    parser.add_argument("--data", default="datasets/shapes/test", help="held-out shapes shards")
    parser.add_argument("--probe", default="runs/probe", help="probe folder (cola-mm probe train)")
    parser.add_argument("--n", type=int, default=300, help="one-object scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None, help="PNG of all-right accuracy vs σ")
    args = parser.parse_args()

    if not Path(args.probe).is_dir():
        raise SystemExit(f"error: no probe at {args.probe} (train one: cola-mm probe train --data datasets "
                         f"--out {args.probe})")
    probe = Probe.from_pretrained(args.probe).eval()
    samples = read_samples(args.data, args.n, keep=one_object)
    objects = [s["json"]["objects"][0] for s in samples]
    results = {}
    for ckpt in args.ckpt:
        vae = ImageVAE.from_pretrained(ckpt).float().eval()  # a pipeline folder or the image_vae folder
        x = torch.stack([pixels_from_image(s["image"], vae.config.image_size) for s in samples])
        tokens = prior_tokens(vae, x)
        accuracy = [accuracy_under_noise(vae, probe, tokens, objects, s, args.seed)
                    for s in tqdm(SIGMAS, desc=ckpt, unit="σ")]
        results[ckpt] = {"sigmas": list(SIGMAS), "accuracy": accuracy}
        print(f"{ckpt}  (all right: small / large, %)")
        for s, a in zip(SIGMAS, accuracy):
            print(f"  σ {s:<5} {100 * a['small_all']:6.1f} / {100 * a['large_all']:6.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"n": len(samples), "results": results}, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
