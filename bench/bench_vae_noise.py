"""How robust is the Text VAE decoder to errors in the latents the prior generates?

The prior never reproduces a latent exactly; the decoder must still read the right tokens from
a nearby point. For held-out text (windows of ``--seq-len`` tokens, and the captions of the
shapes test split) the posterior mean is mapped to prior space (unit scale), Gaussian noise of
standard deviation σ is added, and the decoder's token accuracy is measured, for a range of σ.
Reference: the posterior's own standard deviation in prior space (what training showed the
decoder), printed beside.

    python bench/bench_vae_noise.py --ckpt checkpoints/demo --json bench/results/vae_noise.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cola_mm.data.loader import iter_texts, list_shards  # noqa: E402
from cola_mm.evaluation.text_vae import load_text_vae  # noqa: E402

SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


@torch.no_grad()
def accuracy_under_noise(vae, batches: list[torch.Tensor], sigma: float, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    correct = total = 0
    for ids, valid in batches:
        mean, _ = vae.encode(ids)
        u = vae.to_prior(mean)
        u = u + sigma * torch.randn(u.shape, generator=gen)
        pred = vae.decode(vae.from_prior(u)).argmax(-1)
        correct += int(((pred == ids) & valid).sum())
        total += int(valid.sum())
    return correct / max(total, 1)


def batches_of(rows: list[list[int]], pad: int, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        n = max(map(len, chunk))
        ids = torch.full((len(chunk), n), pad, dtype=torch.long)
        valid = torch.zeros(len(chunk), n, dtype=torch.bool)
        for j, r in enumerate(chunk):
            ids[j, :len(r)] = torch.tensor(r)
            valid[j, :len(r)] = True
        out.append((ids, valid))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="pipeline or model folder with text_vae/ and tokenizer/")
    parser.add_argument("--text", default="datasets/text/val", help="held-out text shards")
    parser.add_argument("--captions", default="datasets/shapes/test", help="shards whose txt are captions")
    parser.add_argument("--n", type=int, default=64, help="windows / captions per set")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    vae, tok = load_text_vae(args.ckpt)
    sets = {}
    windows, captions = [], []
    for text in iter_texts(list_shards(args.text)):
        ids = [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)
        windows += [ids[i:i + args.seq_len] for i in range(0, len(ids) - args.seq_len + 1, args.seq_len)]
        if len(windows) >= args.n:
            break
    sets["text windows"] = batches_of(windows[:args.n], tok.pad_token_id)
    for text in iter_texts(list_shards(args.captions)):
        captions.append([tok.bos_token_id, *tok.encode(text, add_special_tokens=False), tok.eos_token_id])
        if len(captions) >= args.n:
            break
    sets["captions"] = batches_of(captions, tok.pad_token_id)

    with torch.no_grad():
        ids, _ = sets["text windows"][0]
        _, logvar = vae.encode(ids)
        posterior_std = float((0.5 * logvar).exp().mean() * vae.config.latent_scale)
    result = {"ckpt": args.ckpt, "posterior_std_prior_space": round(posterior_std, 4), "sigmas": list(SIGMAS)}
    for name, batches in sets.items():
        result[name] = [round(accuracy_under_noise(vae, batches, s, args.seed), 4)
                        for s in tqdm(SIGMAS, desc=name, unit="σ")]
    print(f"posterior std (prior space): {posterior_std:.4f}")
    print("σ          " + " ".join(f"{s:>6}" for s in SIGMAS))
    for name in sets:
        print(f"{name:<10} " + " ".join(f"{a:>6.3f}" for a in result[name]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
