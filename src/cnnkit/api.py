"""The verbs shared by the CLI and Python users. Each looks up the recipe of the run's task (cnnkit.recipes)
and hands it to the one runner (cnnkit.recipes.runner); none of them branches on the task.

    result = cnnkit.train(cfg)                      # TrainResult: run_dir, history, val, verdict
    cnnkit.evaluate(result.run_dir, split="val")    # metrics and the bias/variance verdict
    cnnkit.test(result.run_dir)                     # the locked test split, each use recorded
    cnnkit.predict(result.run_dir, ["photo.jpg"])   # one dict per image (or per box)
"""
from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

import yaml

from cnnkit.config import Config, load_config
from cnnkit.data.images import is_image_file
from cnnkit.diagnose.verdict import run_verdict
from cnnkit.engine.precision import check_precision
from cnnkit.errors import CnnkitError
from cnnkit.export.runtime import is_onnx
from cnnkit.recipes import recipe_for, runner
from cnnkit.recipes.base import Recipe, TrainResult
from cnnkit.recipes.other_data import measure_other
from cnnkit.runs.folder import find_model_file, load_model, model_file, open_model, record_test_use, run_file

log = logging.getLogger("cnnkit")

__all__ = ["TrainResult", "train", "evaluate", "test", "predict", "embed", "demo_config", "augment_preview",
           "models_table", "inspect_model", "inspect_kernels", "inspect_feature_maps", "transfer_compare", "lr_find",
           "prune", "convert", "check_annotations", "report", "diagnose", "load_config", "bench", "export",
           "cross_validate", "audit", "sweep", "compare_runs"]


def _recipe_of(run: str | Path) -> Recipe:
    """The recipe of a run folder, from the task its config.yaml records."""
    cfg = yaml.safe_load(run_file(run, "config.yaml").read_text()) or {}
    task = cfg.get("task", "auto")
    if task == "auto" and find_model_file(run) is not None:
        return recipe_for(load_model(run)[1].problem)
    return recipe_for(task)  # auto without model.pt (a run killed before its end): the classifiers' recipe


def train(cfg: Config | None = None, *, resume: str | Path | None = None, **train_overrides) -> TrainResult:
    """Train as `cfg` says, for its task (classification, detection, instance or semantic segmentation); or,
    with `resume=RUN`, continue RUN from checkpoints/last.pt. The test split is written to split.json and never
    read here. An option the task does not read is refused in one line."""
    recipe = _recipe_of(resume) if resume is not None else recipe_for((cfg or Config()).task)
    return runner.train(recipe, cfg, resume=resume, **train_overrides)


def cross_validate(cfg: Config | None = None, *, folds: int, group_by: str | None = None, **train_overrides):
    """K-fold cross-validation of `cfg` for any task: the locked test split made as `train` makes it and kept
    out; the K folds (stratified for single-label classes; with `group_by`, a column of a CSV source, no group in
    two folds) partition train+val, fold i the val split of run OUT/fold<i>. Returns a FoldsResult (out, folds,
    metrics: mean and sample std of each val metric), also written to OUT/folds.json; see
    cnnkit.experiments.folds."""
    from cnnkit.experiments.folds import cross_validate as run_folds

    return run_folds(cfg, folds=folds, group_by=group_by, **train_overrides)


def evaluate(run: str | Path, *, split: str = "val", attack: str | None = None, eps: float = 0.1,
             target_error: float | None = None, verdict: bool = True, boundary_f1: bool = False,
             precision: str = "auto", data: str | Path | None = None) -> dict:
    """The loss and the metrics of RUN's task on its train or val split: accuracy, F1 ... for classes, COCO mAP
    for boxes and masks, mIoU, Dice ... for pixels. With `attack` ('fgsm' or 'pgd', classifiers), also the
    accuracy on adversarial images within `eps` (pixel units); with `boundary_f1` (segmentation), the boundary
    F1 score. With `verdict`, also "verdict": the bias/variance verdict (train against val, whichever split is
    asked; see cnnkit.diagnose.verdict), bias measured above `target_error` when given. The model runs with its
    batch norms folded, in `precision` (auto: bf16 + channels_last where the hardware has it; fp32 forces fp32),
    the metrics from fp32 outputs. The test split has its own verb. With `data` (a source string the run's recipe
    opens), all of that other labelled set instead, its classes mapped by name, refused if any of its images is in
    the run's training split, and its "shift" against the run's test (else val) metric: see
    cnnkit.recipes.other_data."""
    if split == "test":
        raise CnnkitError("the test split is locked: use `cnnkit test RUN` (it records each use)")
    recipe = _recipe_of(run)
    options = {k: v for k, v in (("attack", attack), ("boundary_f1", boundary_f1)) if v}
    if attack is not None:
        options["eps"] = eps
    options["precision"] = check_precision(precision)
    if data is not None:
        if split != "val" or target_error is not None:
            raise CnnkitError("--data evaluates all of the other set and has no verdict: leave out --split and "
                              "--target-error")
        return measure_other(recipe, run, str(data), **options)
    metrics = runner.measure(recipe, run, split, **options)
    if verdict:
        other = "train" if split == "val" else "val"
        try:
            pair = {split: metrics, other: runner.measure(recipe, run, other, precision=precision)}
        except CnnkitError as err:  # e.g. a run trained without a val split
            warnings.warn(f"no verdict: {err}", stacklevel=2)
            return metrics
        metrics["verdict"] = run_verdict(run, target_error, train_metrics=pair["train"],
                                         val_metrics=pair["val"]).as_dict()
    return metrics


def test(run: str | Path, *, precision: str = "auto") -> dict:
    """Evaluate the locked test split once development is over; every use is recorded in test_log.jsonl. The model
    runs in `precision`, as for `evaluate`."""
    metrics = runner.measure(_recipe_of(run), run, "test", precision=check_precision(precision))
    uses = record_test_use(Path(run), metrics)
    if uses:
        warnings.warn(
            f"the test set of {run} has been used {uses} time(s) before; a decision taken on it is no longer "
            "an unbiased estimate (never use the test set before all development is over)", stacklevel=2)
    return {**metrics, "previous_uses": uses}


def _expand_inputs(inputs: list[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q))
            if not found:
                raise CnnkitError(f"no image files in folder {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise CnnkitError(f"image not found: {p}")
    return paths



def predict(run: str | Path, inputs: list[str | Path], *, top_k: int = 5, batch_size: int = 64,
            threshold: float = 0.5, score_threshold: float | None = None, nms_iou: float | None = None,
            out: str | Path | None = None, precision: str = "auto", runtime: str | None = None,
            proposals: int | None = None) -> list[dict]:
    """Each image's prediction; needs only RUN/model.pt. Classes: the top-k {label, probability}; labels: every
    label's probability and those at or above `threshold`; values: {target: value}. A detector gives COCO-style
    results, one dict per box (`score_threshold` and `nms_iou` change its post-processing, `out` gets the
    images with boxes drawn, and with `proposals` the first that many region proposals of an R-CNN-line model,
    rcnn, spp_net or fast_rcnn, drawn thin and grey under them); a segmentation model each class's pixel share
    (`out` gets the masks and overlays). RUN may also name pretrained weights, e.g. efficientnet_lite0.imagenet.
    Unreadable images are skipped with a warning. An option that does not apply to the run's task is refused in
    one line. The images are decoded by worker processes a batch at a time and the model runs with its batch
    norms folded, in `precision` (auto: bf16 + channels_last where the hardware has it), the probabilities from
    fp32 outputs.
    RUN may also be an exported FILE.onnx (`export`): the network then runs on `runtime` (onnxruntime, fp32, by
    default; or openvino, in its own precision unless `precision` says) and the JSON is the same."""
    check_precision(precision)
    model, card = open_for_inference(run, precision, runtime)
    if is_onnx(run):
        precision = "fp32"  # the runtime has its precision; cnnkit's autocast and channels_last stay out of the way
    if proposals is not None:  # refused in one line, naming the models that have them, unless there are some to draw
        from cnnkit.recipes.detection import check_proposals

        check_proposals(model, card, proposals, out)
    recipe = recipe_for(card.problem)
    given = {"top_k": top_k, "batch_size": batch_size, "threshold": threshold, "score_threshold": score_threshold,
             "nms_iou": nms_iou, "out": out, "precision": precision, "proposals": proposals}
    defaults = inspect.signature(predict).parameters
    options = {k: v for k, v in given.items() if v != defaults[k].default}  # only what the caller set
    runner.check_options(recipe.predict, options, recipe)
    return recipe.predict(model, card, _expand_inputs(inputs), **options)


def open_for_inference(target: str | Path, precision: str = "auto", runtime: str | None = None) -> tuple:
    """(model, card) of a run folder, pretrained weights or an exported .onnx file; the file runs on `runtime`
    (onnxruntime by default, or openvino), which only a file takes."""
    from cnnkit.export.runtime import open_onnx

    if not is_onnx(target):
        if runtime not in (None, "torch"):
            raise CnnkitError(f"--runtime {runtime} runs an exported FILE.onnx; `cnnkit export {target}` first")
        return open_model(target)
    return open_onnx(target, runtime=runtime or "onnxruntime", precision=precision)


def export(run: str | Path, *, format: str = "onnx", int8: bool = False, out: str | Path | None = None) -> Path:
    """Write RUN's model to one file that needs nothing else to be used, and return its path: ONNX (batch
    norms folded, the model card in the metadata, dynamic batch and, where the network allows, image size),
    RUN/model.onnx by default; with `int8`, statically quantised by onnxruntime, calibrated on RUN's training
    images (RUN/model.int8.onnx). See cnnkit.export.onnx and docs/export.md."""
    from cnnkit.export import onnx as onnx_export

    formats = ("onnx",)
    if format not in formats:
        raise CnnkitError(f"unknown export format {format!r}; choose from {', '.join(formats)}")
    model, card = load_model(run)
    target = Path(out) if out is not None else onnx_export.default_path(run, int8)
    if target.suffix.lower() != ".onnx":
        raise CnnkitError(f"--out must end in .onnx, got {target.name}")
    if not int8 and card.problem not in onnx_export.OUTPUT_MEANING:  # detection, instance segmentation
        from cnnkit.export.onnx_detection import export_detector

        return export_detector(model, card, target)
    if not int8:
        return onnx_export.export_onnx(model, card, target)
    from cnnkit.export.quantize import quantize_run

    return quantize_run(run, model, card, target)


def embed(run: str | Path, inputs: list[str | Path], *, out: str | Path, batch_size: int = 64,
          layer: str | None = None, precision: str = "auto") -> Path:
    """Write each image's feature vector to `out` (.npy + .paths.txt, .npz or .parquet) and return its path:
    the input of the last linear layer, or module `layer`'s pooled output (see cnnkit.export.embed). RUN is a run
    folder or pretrained weights such as efficientnet_lite0.imagenet, as for `predict`."""
    from cnnkit.export import embed as embedding

    embedding.check_format(out)
    check_precision(precision)
    paths = _expand_inputs(inputs)
    model, card = open_model(run)
    if not recipe_for(card.problem).embeds:
        raise CnnkitError(f"embed takes a classifier's run or weights; {run} is a {card.problem} run (embed its "
                          "backbone's weights, e.g. efficientnet_lite0.imagenet, instead)")
    return embedding.embed(model, card, paths, out, batch_size=batch_size, layer=layer, precision=precision)


def demo_config(*, out: str | None = None) -> Config:
    """LeNet-5 on scikit-learn's digits (upsampled to 32×32), with a little rotation and shift."""
    return load_config(overrides={
        "data": {"source": "digits", "augment": "none", "augment_options": {"rotation": 10.0, "translate": 0.1}},
        "model": {"name": "lenet5"},
        "train": {"epochs": 30, "batch_size": 32, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
        "out": out,
    })


def augment_preview(source: str, out: str | Path, *, preset: str = "standard", n: int = 16, size: int | None = None,
                    seed: int = 0, task: str = "classify", **options) -> Path:
    """A grid PNG: each row one training image, then augmented copies of it (for segmentation, each picture
    beside its mask, so one sees the mask move with the image; for detection, task="detect" or "instance", each
    picture with its boxes and class names drawn where the augmentation moved them, instance masks blended in)."""
    return recipe_for(task).augment_preview(source, out, preset=preset, n=n, size=size, seed=seed, **options)


def models_table(*, task: str | None = None, bench: bool = False, budget_s: float = 90.0,
                 threads: int | None = None, names: list[str] | None = None) -> list[dict]:
    """The zoo as rows {"name", "task", "paper", "input_size", "num_classes", "params", "depth", "size_mb",
    "gflops"}; `bench` adds "latency_ms_b1" and "latency_ms_b32" (CPU ms per image) within `budget_s`. `names`:
    only these models (zoo names, named weights, 'tv/...', 'timm/...' or 'spec:...' networks)."""
    from cnnkit.diagnose.zoo import models_table as table

    return table(task=task, bench=bench, budget_s=budget_s, threads=threads, names=names)


def bench(model: str | Path, *, input: str | tuple | None = None, batch_size: int = 32, steps: int = 10,
          device: str = "auto", threads: int | None = None, remeasure: bool = False) -> dict:
    """Training and inference images/s of MODEL (a zoo name, named weights or a run folder) at fp32 and at
    `auto`, on synthetic batches of `input` (CxHxW, default the model's own size), `steps` timed steps each, with
    `threads` CPU threads (None: torch's); the MFU against this machine's measured GEMM and convolution peak
    (cached; `remeasure` measures it again) and where a training step's time goes (torch.profiler). See
    cnnkit.experiments.bench for the keys."""
    from cnnkit.experiments.bench import bench as measure

    return measure(model, input_size=input, batch_size=batch_size, steps=steps, device=device, threads=threads,
                   remeasure=remeasure)


def inspect_model(target, *, input_size=None, **options) -> dict:
    """Per-layer shapes, parameters, FLOPs and receptive fields of a model name, run folder or module;
    see cnnkit.diagnose.inspect.inspect_model for the keys."""
    from cnnkit.diagnose.inspect import inspect_model as anatomy

    return anatomy(target, input_size, **options)


def inspect_kernels(target: str | Path, *, out: str | Path | None = None) -> Path:
    """The first conv layer's kernels of a run (or a model name: random weights) as a PNG grid."""
    from cnnkit.diagnose.pictures import save_kernels

    return save_kernels(target, out)


def inspect_feature_maps(target: str | Path, image: str | Path, *, layer: str, out: str | Path | None = None) -> Path:
    """The feature maps of module `layer` for one image, preprocessed as the run's model card says, as a PNG."""
    from cnnkit.diagnose.pictures import save_feature_maps

    return save_feature_maps(target, image, layer, out)


def transfer_compare(cfg: Config, *, strategies: list[str] | str | None = None, out: str | Path | None = None):
    """Train `cfg` once per transfer strategy (default: cnnkit.experiments.compare.DEFAULT_STRATEGIES, with the
    "scratch" baseline) on the same split and budget, into OUT/<strategy>; returns a CompareResult whose
    rows hold val accuracy, training time and trainable parameters, also written to OUT/compare.{json,csv,png}."""
    from cnnkit.experiments.compare import compare_strategies

    return compare_strategies(cfg, strategies, out)


def lr_find(cfg: Config, *, steps: int = 100, out: str | Path | None = None, **options):
    """The learning-rate range test on the training split of `cfg` (Smith 2017); see cnnkit.engine.lr_find.
    Returns an LRFindResult (lrs, smoothed losses, suggestion); writes the plot to `out` when given."""
    from cnnkit.experiments.lr_find import lr_find_for_config

    return lr_find_for_config(cfg, steps=steps, out=out, **options)


def prune(run: str | Path, sparsities: list[float], *, scope: str = "global", finetune_epochs: int = 0,
          out: str | Path | None = None, structured: bool = False, criterion: str = "l1",
          latency_batch: int = 1, residual: bool | None = None) -> list[dict]:
    """Magnitude pruning of RUN's model (L1, unstructured, the Conv/Linear weights; see cnnkit.models.prune): for
    each sparsity, RUN's model is pruned (`scope` "global" ranks all weights together, "layer" prunes each layer
    by the same fraction), fine-tuned `finetune_epochs` epochs on RUN's train split with RUN's config (pruned
    weights stay zero), saved as the run folder OUT/s<percent> (OUT defaults to RUN/pruned; `evaluate` and
    `predict` read it) and evaluated on the val split, never on test. Rows {"sparsity_target", "sparsity"
    (measured), "val_accuracy", "val_loss", "val_accuracy_before_ft", "run"}, also written to OUT/prune.json.

    `structured=True` removes whole filters instead (cnnkit.models.structured; classification runs of ResNets and
    plain conv stacks): the fraction `sparsity` of each prunable conv's filters with the lowest `criterion` ("l1":
    the filter's L1 norm, "bn": |γ| of its BatchNorm), the model rebuilt smaller (the kept widths in the card's
    `pruned`), fine-tuned, saved and measured. Rows, the unpruned model first: {"sparsity_target", "params",
    "flops", "latency_ms" (median CPU forward pass at `latency_batch`, timed in this process), "speedup",
    "val_accuracy", "val_loss", "val_accuracy_before_ft", "run"}. In CIFAR ResNets (resnet20..110) each stage's
    residual width is pruned too, as one dependency group (cnnkit.models.structured_groups), unless
    `residual=False`; `residual=True` on another architecture is refused (None: wherever it applies)."""
    if residual is not None and not structured:
        raise CnnkitError("residual= (--residual/--no-residual) applies to structured pruning only; add "
                          "structured=True (--structured)")
    if structured:
        from cnnkit.experiments.structured import structured_prune_run

        return structured_prune_run(run, sparsities, criterion=criterion, finetune_epochs=finetune_epochs, out=out,
                                    latency_batch=latency_batch, residual=residual)
    from cnnkit.experiments.prune import prune_run

    return prune_run(run, sparsities, scope=scope, finetune_epochs=finetune_epochs, out=out)


def convert(src: str | Path, *, to: str, out: str | Path, images: str | Path | None = None,
            policy: dict | str | None = None) -> Path:
    """Detection annotations SRC (COCO .json, VOC / YOLO / Penn-Fudan folder, synthetic-shapes) → format `to`
    (coco | voc | yolo) at OUT, images included, after the checks of cnnkit.data.detection.annotations.validate
    (`policy`: 'outside=drop,...'). Returns the written .json file (COCO) or folder."""
    from cnnkit.data.detection.source import convert as convert_annotations

    return convert_annotations(src, to, out, images=images, policy=policy)


def check_annotations(src: str | Path, *, images: str | Path | None = None, policy: dict | str | None = None):
    """Read and check detection annotations SRC, writing nothing; returns the ValidationReport."""
    from cnnkit.data.detection.source import check_annotations as check

    return check(src, images=images, policy=policy)


def audit(target: str | Path, *, cfg: Config | None = None, out: str | Path | None = None, folds: int = 5,
          method: str = "auto", embedder: str | None = None, annotators: str | Path | None = None,
          seconds_per_item: float | None = None, overrides: dict | None = None) -> Path:
    """Audit a data source (a new seeded split from `cfg`, as train makes it) or a run folder (its own split and
    config, with `overrides` such as {'train': {'epochs': 2}} on top):
    label issues by confident learning on out-of-fold probabilities (`method` probe | scratch | auto), bad
    boxes or masks, near-duplicates and leaks across splits, image quality and outliers, class balance,
    annotator agreement (`annotators`: a CSV with one label column per annotator) and the annotation effort.
    Writes OUT/audit.json, OUT/relabel.csv and OUT/audit.html (OUT default audit-<name>) and returns OUT."""
    from cnnkit.audit.run import audit as run_audit

    return run_audit(target, cfg=cfg, out=out, folds=folds, method=method, embedder=embedder,
                     annotators=annotators, seconds_per_item=seconds_per_item, overrides=overrides)


def report(run: str | Path) -> Path:
    """Write RUN/report.html, one self-contained page (every picture inlined, no network), with the sections of
    the run's recipe, and return its path; see cnnkit.diagnose.report."""
    return runner.write_report(_recipe_of(run), run)


def diagnose(run: str | Path, *, data_curve: list[float] | None = None, landscape: bool = False,
             gradcam: bool = False, epochs: int | None = None, budget_s: float = 60.0,
             precision: str = "auto") -> dict:
    """Diagnostic plots of RUN, all under RUN/plots: always the learning curves (redrawn from history.csv, the
    learning rate on a second axis); with `data_curve` (percentages), the learning curve by data size (see
    cnnkit.experiments.datacurve; `epochs` per subset, default RUN's); with `landscape`, Li et al.'s loss landscape
    within `budget_s` seconds (cnnkit.diagnose.landscape); with `gradcam`, Grad-CAM heat maps. Returns
    {"run", "plots": {name: path}, "best_epoch", "data_curve": {"rows", "reading"}, "landscape": {...}}.
    The landscape's passes over the training batches run in `precision` (auto: bf16 + channels_last where the
    hardware has it; its batch norms are not folded: the directions are the network's own weights)."""
    from cnnkit.diagnose.curves import best_epoch, plot_learning_curves, read_history
    from cnnkit.experiments.datacurve import check_percents

    check_precision(precision)
    percents = check_percents(data_curve) if data_curve is not None else None
    if epochs is not None and percents is None:
        raise CnnkitError("--epochs sets the training of each --data-curve subset; give --data-curve too")
    if not budget_s > 0:
        raise CnnkitError(f"the time budget must be positive seconds, got {budget_s:g}")
    run = Path(run)
    model_file(run)  # a missing run fails here, before any work
    recipe = _recipe_of(run)
    asked = {"--data-curve": percents is not None, "--landscape": landscape, "--gradcam": gradcam}
    for flag in (f for f, on in asked.items() if on and f not in recipe.diagnoses):
        raise CnnkitError(f"{flag} is not supported for a {recipe.name} run (supported: "
                          f"{', '.join(recipe.diagnoses) or 'the learning curves only'})")
    result: dict = {"run": str(run), "plots": {}}
    if (run / "history.csv").is_file() and (history := read_history(run / "history.csv")):
        path = plot_learning_curves(history, run / "plots" / "learning_curves.png", metric=recipe.curve_metric)
        result["plots"]["learning_curves"], result["best_epoch"] = str(path), best_epoch(history)
    if percents is not None:
        from cnnkit.experiments.datacurve import data_curve as measure_data_curve
        from cnnkit.experiments.datacurve import read_data_curve

        rows = measure_data_curve(run, percents, epochs=epochs)
        result["data_curve"] = {"rows": rows, "reading": read_data_curve(rows)}
        result["plots"]["data_curve"] = str(run / "plots" / "data_curve.png")
    if landscape:
        from cnnkit.diagnose.landscape import loss_landscape

        result["landscape"] = loss_landscape(run, budget_s=budget_s, precision=precision)
        result["plots"].update(result["landscape"]["plots"])
    if gradcam:
        try:
            from cnnkit.diagnose.gradcam import plot_gradcam
        except ImportError:
            raise CnnkitError("Grad-CAM is not available in this cnnkit (cnnkit.diagnose.gradcam is missing)") from None
        result["plots"]["gradcam"] = str(plot_gradcam(run, run / "plots" / "gradcam.png"))
    return result


def sweep(space: str | Path, *, trials: int, out: str | Path, sampler: str = "tpe", pruner: str = "median",
          metric: str = "val_loss", seed: int | None = None):
    """A hyperparameter search with Optuna over the settings of SPACE.yaml (base: fixed, search: tuned), until
    `trials` trials have finished in `out` (its SQLite study resumes); every trial an ordinary run folder
    OUT/trial-NNNN. Returns a SweepResult (rows, best, importance, files); see cnnkit.experiments.sweep."""
    from cnnkit.experiments.sweep import sweep as run_sweep

    return run_sweep(space, trials=trials, out=out, sampler=sampler, pruner=pruner, metric=metric, seed=seed)


def compare_runs(runs: list[str | Path], *, out: str | Path | None = None) -> dict:
    """Runs side by side: final metrics, config differences, verdicts, and the learning curves overlaid; writes
    OUT/compare.png, compare.html and compare.json. See cnnkit.diagnose.compare_runs."""
    from cnnkit.diagnose.compare_runs import compare_runs as compare

    return compare(runs, out=out)
