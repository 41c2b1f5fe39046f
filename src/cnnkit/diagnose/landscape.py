"""The loss landscape around a trained model (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

The loss is evaluated at w + α·d₁ (1-D) and w + α·d₁ + β·d₂ (2-D) for random directions d₁, d₂ that are
filter-normalised: every filter of every weight tensor (dim ≥ 2: conv kernels, linear rows) gets a Gaussian
direction rescaled to that filter's norm, ‖d_f‖ = ‖w_f‖, so the plot is comparable across layers and nets
whatever their scale. Biases and BN parameters (dim ≤ 1) are zero in the direction, the paper's "ignore BN".
Points are evaluated in eval mode (BN running statistics, no dropout) on the same few training batches.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from cnnkit.errors import CnnkitError

MIN_STEPS = 3  # the smallest grid with the trained weights in the middle


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """One random direction, a tensor per parameter of `model`: for weights (dim ≥ 2) a Gaussian rescaled
    filter by filter (dim 0) to the weights' filter norms; zeros for biases and BN parameters (dim ≤ 1)."""
    direction = []
    for p in model.parameters():
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device, p.dtype)
        w_norm = p.detach().flatten(1).norm(dim=1)  # (filters,)
        d_norm = d.flatten(1).norm(dim=1)  # (filters,)
        d.mul_((w_norm / (d_norm + 1e-10)).view(-1, *([1] * (p.dim() - 1))))
        direction.append(d)
    return direction


@torch.no_grad()
def mean_loss(task, batches: list) -> float:  # task: a cnnkit Task
    """The data loss (no penalty) over `batches`, weighted by batch size, in eval mode."""
    task.model.eval()
    total, count = 0.0, 0
    for batch in batches:
        total += float(task.validation_step(batch).loss) * len(batch)
        count += len(batch)
    return total / count


@torch.no_grad()
def _move_to(params: list[torch.Tensor], origin: list[torch.Tensor], dirs: list[list[torch.Tensor]],
             coords: tuple[float, ...]) -> None:
    """params ← origin + Σ coords[k] · dirs[k]."""
    for i, p in enumerate(params):
        value = origin[i].clone()
        for c, d in zip(coords, dirs):
            if c:
                value.add_(d[i], alpha=c)
        p.copy_(value)


def _affordable_steps(steps: int, dims: int, per_point: float, seconds: float) -> int:
    """The largest odd resolution ≤ `steps` (at least MIN_STEPS) whose steps**dims points fit in `seconds`."""
    s = steps
    while s > MIN_STEPS and per_point * s**dims > seconds:
        s -= 2
    return s


def _check_surface_args(steps: int, span: float, dims: int, budget_s: float) -> None:
    """Raise CnnkitError unless loss_surface's grid (steps, span, dims) and time budget are usable."""
    if int(steps) != steps or steps < MIN_STEPS:
        raise CnnkitError(f"the landscape needs steps ≥ {MIN_STEPS}, got {steps}")
    if not span > 0:
        raise CnnkitError(f"the landscape span must be positive, got {span}")
    if dims not in (1, 2):
        raise CnnkitError(f"the landscape has 1 or 2 dimensions, got {dims}")
    if not budget_s > 0:
        raise CnnkitError(f"the time budget must be positive seconds, got {budget_s}")


def _seconds_per_point(task, batches: list, params: list, origin: list, dirs: list, span: float,
                       dims: int) -> float:
    """A grid point's cost, moving the weights + evaluating: the mean of two (α = ±span, β = 0), timed after the
    warm-up evaluation; the weights are left at the second point."""
    tick = time.perf_counter()
    for sign in (1.0, -1.0):
        _move_to(params, origin, dirs, (sign * span,) + (0.0,) * (dims - 1))
        mean_loss(task, batches)
    return (time.perf_counter() - tick) / 2


def loss_surface(task, batches: list, steps: int = 21, span: float = 1.0, dims: int = 2,
                 budget_s: float = 60.0, seed: int = 0) -> dict:
    """The loss of `task.model` on `batches` along filter-normalised directions; the weights (and the model's
    train/eval mode) are restored after.

    The cost of one point is measured on two points (after one warm-up evaluation); when `steps**dims` points
    would exceed `budget_s`, the resolution is lowered up front (kept odd, so α = 0 lies on the grid) and
    `note` says so. Returns alphas (steps,), loss_1d (steps,), grid (steps × steps, rows β, columns α; None
    for dims=1), centre_loss (the trained weights) and the timings. For dims=2 the 1-D curve is the β = 0 row.
    Every grid point is evaluated, the centre too: it equals centre_loss. Should the points still run past
    the budget (a busy machine), the rest are skipped, None, and `note` says how many; rows are evaluated from
    β = 0 outwards, and the β = 0 row (the 1-D curve, with the centre) is always complete.
    """
    _check_surface_args(steps, span, dims, budget_s)
    requested = int(steps) + (1 - int(steps) % 2)  # odd: the trained weights are a grid point
    params = list(task.model.parameters())
    origin = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(seed)
    dirs = [filter_normalized_direction(task.model, generator) for _ in range(dims)]
    was_training = task.model.training
    start = time.perf_counter()
    try:
        centre = mean_loss(task, batches)  # also the warm-up
        per_point = _seconds_per_point(task, batches, params, origin, dirs, span, dims)
        left = budget_s - (time.perf_counter() - start)
        s = _affordable_steps(requested, dims, per_point, left)
        notes = []
        if s < requested:
            notes.append(f"grid reduced from {requested} to {s} steps per axis to fit the {budget_s:g} s budget "
                         f"({per_point * 1000:.1f} ms per point)")
            if per_point * s**dims > left:
                notes.append(f"even the minimum {s}-step grid exceeds it")
        alphas = span * np.arange(-(s // 2), s // 2 + 1) / (s // 2)  # (s,) symmetric, exactly 0 in the middle
        table = _evaluate_grid(lambda c: _point(task, batches, params, origin, dirs, c), alphas, dims,
                               deadline=start + budget_s)
        missing = sum(v is None for row in table for v in row) - (s * (s - 1) if dims == 1 else 0)
        if missing:
            notes.append(f"stopped at the budget: {missing} of {s ** dims} points not evaluated")
    finally:
        _move_to(params, origin, dirs, ())  # the trained weights, exactly
        task.model.train(was_training)
    return {"steps_requested": requested, "steps": s, "span": span, "dims": dims, "seed": seed,
            "alphas": alphas.tolist(), "loss_1d": table[s // 2], "grid": table if dims == 2 else None,
            "centre_loss": centre, "seconds_per_point": per_point, "eval_seconds": time.perf_counter() - start,
            "budget_s": budget_s, "reduced": s < requested, "note": "; ".join(notes) or None}


def _evaluate_grid(loss_at, alphas: np.ndarray, dims: int, deadline: float) -> list[list[float | None]]:
    """(s × s) losses, rows β, columns α (dims=1: only the β = 0 row is filled). Rows run from β = 0 outwards;
    after `deadline` (perf_counter seconds) the remaining points are skipped (None), but never on β = 0."""
    s, mid = len(alphas), len(alphas) // 2
    table: list[list[float | None]] = [[None] * s for _ in range(s)]
    rows = [mid] if dims == 1 else sorted(range(s), key=lambda i: abs(i - mid))
    for i in rows:
        for j in range(s):
            if i != mid and time.perf_counter() > deadline:
                return table
            table[i][j] = loss_at((alphas[j],) if dims == 1 else (alphas[j], alphas[i]))
    return table


def _point(task, batches: list, params, origin, dirs, coords: tuple[float, ...]) -> float:
    _move_to(params, origin, dirs, coords)
    return mean_loss(task, batches)


# ---------------------------------------------------------------- plots

def _finite_or_nan(values) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(a), a, np.nan)


def plot_landscape(result: dict, out_dir: Path) -> dict[str, Path]:
    """landscape_1d.png (loss against α) and, for dims=2, landscape_2d.png (contours over α, β)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    alphas, line = np.asarray(result["alphas"]), _finite_or_nan(result["loss_1d"])
    fig, ax = plt.subplots(figsize=(5.5, 4), constrained_layout=True)
    ax.plot(alphas, line, "-o", markersize=3)
    ax.plot([0.0], [result["centre_loss"]], "*", color="tab:red", markersize=12, label="trained weights")
    ax.set(xlabel="α (filter-normalised direction)", ylabel="training loss",
           title=f"1-D loss landscape ({result['steps']} points)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = {"landscape_1d": out_dir / "landscape_1d.png"}
    fig.savefig(paths["landscape_1d"], dpi=100)
    plt.close(fig)
    if result["grid"] is not None:
        z = _finite_or_nan(result["grid"])  # (β, α)
        fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
        lo, hi = np.nanmin(z), np.nanmax(z)
        levels = np.geomspace(lo, hi, 16) if lo > 0 and hi > lo else 16
        filled = ax.contourf(alphas, alphas, z, levels=levels, cmap="viridis", alpha=0.85)
        lines = ax.contour(alphas, alphas, z, levels=levels, colors="k", linewidths=0.5)
        ax.clabel(lines, fontsize=6, fmt="%.2g")
        fig.colorbar(filled, ax=ax, label="training loss")
        ax.plot([0.0], [0.0], "*", color="tab:red", markersize=12)
        ax.set(xlabel="α (direction 1)", ylabel="β (direction 2)", aspect="equal",
               title=f"2-D loss landscape ({result['steps']}×{result['steps']})")
        paths["landscape_2d"] = out_dir / "landscape_2d.png"
        fig.savefig(paths["landscape_2d"], dpi=100)
        plt.close(fig)
    return paths


# ---------------------------------------------------------------- a run

def fixed_batches(run: Path, batches: int, seed: int, device: torch.device | None = None):
    """(task, list of Batches): RUN's model in its task, and `batches` batches of RUN's training split drawn once
    (seeded), preprocessed without augmentation and kept in memory so every point sees the same images."""
    from cnnkit.config import config_from_dict
    from cnnkit.data.builtin import open_source
    from cnnkit.data.loader import run_loader
    from cnnkit.data.sources import problem_source
    from cnnkit.data.split import indices_from_record
    from cnnkit.engine.distributed import init_distributed, resolve_device
    from cnnkit.runs.folder import load_model, run_file

    if int(batches) != batches or batches < 1:
        raise CnnkitError(f"the landscape needs at least one batch, got {batches}")
    model, card = load_model(run)
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()))
    record = json.loads(run_file(run, "split.json").read_text())
    _, source = problem_source(card.problem, open_source(cfg.data.source, cfg.data.max_bad_fraction))
    train = indices_from_record(source, record, "train")
    size = min(len(train), batches * cfg.train.batch_size)
    pick = np.sort(np.random.default_rng(seed).choice(train, size=size, replace=False))
    device = device or resolve_device(cfg.train.device, init_distributed())
    with warnings.catch_warnings():  # a mismatched loss was reported when the run trained
        warnings.simplefilter("ignore", UserWarning)
        task = card.make_task(model.to(device), cfg.train.loss)
    loaded = [b.to(device) for b in run_loader(source, pick, card, cfg, train=False)]
    return task, loaded


def _json_safe(values):
    if isinstance(values, list):
        return [_json_safe(v) for v in values]
    return values if values is None or math.isfinite(values) else None


def loss_landscape(run: str | Path, out_dir: str | Path | None = None, steps: int = 21, span: float = 1.0,
                   dims: int = 2, batches: int = 4, budget_s: float = 60.0, seed: int = 0,
                   precision: str = "auto") -> dict:
    """Li et al.'s 1-D and 2-D loss landscape of RUN's model on `batches` fixed training batches (see
    `loss_surface`), plotted to OUT_DIR (default RUN/plots)/landscape_1d.png and landscape_2d.png, the numbers
    saved beside them as landscape.json. The passes run in `precision` (cnnkit.engine.precision: autocast and
    channels_last; the losses from fp32 outputs), the batch norms unfolded: the directions perturb the
    network's own weights. Non-finite losses (a diverged point) are null in the result and blank in the plots."""
    from cnnkit.engine.precision import Precision

    start = time.perf_counter()
    run = Path(run)
    task, loaded = fixed_batches(run, batches, seed)
    mode = Precision.resolve(precision, next(task.model.parameters()).device)
    mode.prepare(task.model)
    for batch in loaded:
        batch.images = mode.input(batch.images)
    with mode.autocast():
        result = loss_surface(task, loaded, steps=steps, span=span, dims=dims, budget_s=budget_s, seed=seed)
    result["precision"] = mode.name
    paths = plot_landscape(result, Path(out_dir) if out_dir else run / "plots")
    result.update(loss_1d=_json_safe(result["loss_1d"]), grid=_json_safe(result["grid"]) if result["grid"] else None)
    result = {"run": str(run), "batches": len(loaded), "images": sum(len(b) for b in loaded), **result,
              "plots": {k: str(v) for k, v in paths.items()}}
    (next(iter(paths.values())).parent / "landscape.json").write_text(json.dumps(result) + "\n")
    return {**result, "seconds": time.perf_counter() - start}


def format_landscape(result: dict) -> str:
    """Two lines: the losses along the 1-D curve and the grid's size and time; the note when it was reduced."""
    line = [v for v in result["loss_1d"] if v is not None]
    s = result["steps"]
    shape = f"{s}×{s} grid" if result["dims"] == 2 else f"{s} points"
    text = (f"loss landscape  centre loss {result['centre_loss']:.4f}  1-D min {min(line):.4f}  max {max(line):.4f} "
            f"(α in ±{result['span']:g})\n{shape} on {result['images']} training images in "
            f"{result['eval_seconds']:.1f} s ({result['seconds_per_point'] * 1000:.0f} ms per point)")
    return text + (f"\nnote: {result['note']}" if result["note"] else "")
