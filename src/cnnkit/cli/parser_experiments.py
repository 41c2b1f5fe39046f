"""The `cnnkit prune` parser (argparse only, no torch): magnitude pruning, or structured with --structured."""
from __future__ import annotations

import argparse


def _sparsities(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions such as 0.5,0.8,0.9, got {text!r}") from None


def _batch(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a batch size of 1 or more, got {text!r}")
    return int(text)


def prune_parser(sub) -> None:
    p = sub.add_parser("prune", help="pruning of a run's model: val accuracy against sparsity (magnitude: weights "
                                     "set to zero; --structured: whole filters removed, a smaller, faster model)")
    p.add_argument("run")
    p.add_argument("--sparsity", type=_sparsities, required=True, metavar="S1,S2,...",
                   help="fractions of the Conv/Linear weights set to zero, e.g. 0.5,0.8,0.9 (--structured: the "
                        "fraction of each prunable conv's filters removed, e.g. 0.25,0.5)")
    p.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="global: rank all weights together; layer: the same fraction in every layer")
    p.add_argument("--structured", action="store_true",
                   help="remove whole filters and rebuild a smaller model; the table adds parameters, FLOPs and "
                        "the measured CPU latency")
    p.add_argument("--criterion", choices=("l1", "bn"), default="l1",
                   help="--structured: which filters go: l1 (smallest L1 norm) or bn (smallest |BN γ|, network "
                        "slimming)")
    p.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="--structured: also prune each stage's residual width as one group (CIFAR ResNets; the "
                        "default where it applies); --no-residual: the blocks' inner convs only")
    p.add_argument("--latency-batch", type=_batch, default=1, metavar="N",
                   help="--structured: the batch of the timed CPU forward passes (default 1)")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                   help="epochs of training after pruning, with the run's config (pruned weights stay zero)")
    p.add_argument("--out", help="folder of the pruned models, one run folder s<percent> each (default RUN/pruned)")
    p.add_argument("--json", action="store_true")
