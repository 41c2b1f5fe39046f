"""`cnnkit VERB ...`: argv → config → cnnkit.api.<verb>(). No training logic lives here."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from cnnkit import api
from cnnkit.config import parse_key_values
from cnnkit.engine.distributed import shutdown_distributed
from cnnkit.errors import CnnkitError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (`error: ...`) and exit 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _dropout_spec(text: str) -> float | dict:
    """--dropout 0.3 → 0.3; --dropout classifier.*=0.5,fc6=0.3 → {"classifier.*": 0.5, "fc6": 0.3}."""
    try:
        return float(text)
    except ValueError:
        pass
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected a rate (0.3) or GLOB=RATE pairs (classifier.*=0.5), got {text!r}")
    try:
        return parse_key_values(text, example="--dropout classifier.*=0.5,fc6=0.3")
    except CnnkitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _sparsities(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions such as 0.5,0.8,0.9, got {text!r}") from None


def _train_parser(sub, verb: str = "train",
                  text: str = "train a classifier; prints the run folder last") -> argparse.ArgumentParser:
    p = sub.add_parser(verb, help=text)
    p.add_argument("--data", help="folder of class folders, CSV of path,label, or digits | mnist:PATH | synthetic-shapes")
    p.add_argument("--model", help="registered architecture (see `cnnkit models`)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="architecture option, repeatable: --model-option activation=gelu --model-option dropout=0.3")
    p.add_argument("--weights", metavar="FILE", help="start from a state-dict file, e.g. another run's model.pt "
                   "(a head of another size starts afresh)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", help="sgd | adagrad | adadelta | rmsprop | adam | adamw | adamax | nadam | ftrl")
    p.add_argument("--schedule", help="constant | cosine | cosine_restarts | step_decay | linear_decay | exponential | "
                                      "one_cycle | reduce_on_plateau")
    p.add_argument("--task", help="binary | multiclass | multilabel | regression | detect | segment | instance "
                   "(default: inferred from the data)")
    p.add_argument("--loss", help="a loss of cnnkit.losses.core, e.g. focal, multiclass_svm, huber (default: the task's)")
    p.add_argument("--augment", help="none | light | standard | strong")
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--resize", choices=("resize", "pad", "crop"))
    p.add_argument("--images", metavar="DIR", help="detection: the images of a COCO JSON file, when not beside it")
    p.add_argument("--val", type=float, help="validation fraction (default 0.15)")
    p.add_argument("--test", type=float, help="test fraction (default 0.15)")
    p.add_argument("--patience", type=_positive_int, help="early stopping: epochs without improvement of --monitor")
    p.add_argument("--monitor", help="what early stopping watches (default val_loss; val_accuracy, val_mae, ...)")
    p.add_argument("--min-delta", type=float, help="early stopping: a smaller change is no improvement")
    p.add_argument("--l1", type=float, help="λ of an L1 penalty on the weights (data loss and penalty logged apart)")
    p.add_argument("--l2", type=float, help="λ of an L2 penalty on the weights (not decoupled weight decay)")
    p.add_argument("--dropout", type=_dropout_spec, metavar="RATE|GLOB=RATE,...",
                   help="rate of every dropout layer (0.3), or per layer: classifier.*=0.5,fc6=0.3")
    p.add_argument("--batch-norm", choices=("on", "off", "frozen"),
                   help="off: no BN layers; frozen: BN keeps its running statistics and γ, β (default on)")
    p.add_argument("--mixup", type=float, metavar="ALPHA", help="mixup with Beta(α, α) mixing weights")
    p.add_argument("--cutmix", type=float, metavar="ALPHA", help="CutMix with Beta(α, α) box areas")
    p.add_argument("--adversarial", choices=("fgsm", "pgd"), help="adversarial training (½ clean + ½ attacked loss)")
    p.add_argument("--adv-eps", type=float, help="the attack's budget in pixel units (default 0.1)")
    p.add_argument("--strategy", help="transfer learning: feature-extractor | head-only | fine-tune | partial | "
                                      "linear-probe | auto (see docs/transfer.md)")
    p.add_argument("--keep-stages", type=_positive_int, metavar="K", help="partial: keep the first K stages")
    p.add_argument("--unfreeze-every", type=_positive_int, metavar="N",
                   help="fine-tune: unfreeze one more stage every N epochs, from the head backwards")
    p.add_argument("--probe", choices=("logistic", "svm"), help="linear-probe: logistic regression or linear SVM")
    p.add_argument("--head-init", choices=("auto", "random", "probe"),
                   help="the new head before training: random, or fitted as a linear probe (LP-FT); auto (default): "
                        "probe for fine-tune from pretrained weights on classes")
    p.add_argument("--workers", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:1")
    p.add_argument("--amp", action="store_true", default=None, help="mixed precision")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default runs/<model>-<data>)")
    p.add_argument("--config", help="YAML file with data/model/train sections; flags override it")
    p.add_argument("--alarm-stop", action="store_true", default=None,
                   help="stop when the overfitting alarm fires (val loss rising while the train loss falls)")
    p.add_argument("--target-error", type=float, metavar="ERROR",
                   help="target or human-level error of the verdict (bias = train error − this)")
    p.add_argument("--log", action="append", choices=("tensorboard", "mlflow"),
                   help="also log to TensorBoard (RUN/tensorboard) or MLflow; repeatable")
    if verb == "lr-find":
        p.add_argument("--steps", type=_positive_int, default=100, help="batches of the range test")
    elif verb != "compare":  # `transfer compare` starts new runs only
        p.add_argument("--resume", metavar="RUN", help="continue RUN from checkpoints/last.pt")
    return p


def _transfer_parser(sub) -> None:
    t = sub.add_parser("transfer", help="transfer learning tools: compare strategies")
    p = _train_parser(t.add_subparsers(dest="transfer_verb", required=True, metavar="compare"), "compare",
                      "train several strategies on the same split and budget; a table of val accuracy, time and "
                      "trainable parameters; prints the folder last")
    p.add_argument("--strategies", metavar="S1,S2,...",
                   help="default feature-extractor,head-only,fine-tune,partial,linear-probe,scratch "
                        "(scratch: the same architecture from random weights; auto also allowed)")
    p.add_argument("--json", action="store_true")


def _prune_parser(sub) -> None:
    p = sub.add_parser("prune", help="magnitude pruning of a run's model: val accuracy against sparsity")
    p.add_argument("run")
    p.add_argument("--sparsity", type=_sparsities, required=True, metavar="S1,S2,...",
                   help="fractions of the Conv/Linear weights set to zero, e.g. 0.5,0.8,0.9")
    p.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="global: rank all weights together; layer: the same fraction in every layer")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                   help="epochs of training after pruning, with the run's config (pruned weights stay zero)")
    p.add_argument("--out", help="folder of the pruned models, one run folder s<percent> each (default RUN/pruned)")
    p.add_argument("--json", action="store_true")


def _percents(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percentages such as 10,25,50,100, got {text!r}") from None


def _diagnose_parser(sub) -> None:
    p = sub.add_parser("diagnose", help="diagnostic plots of a run: learning curves, by data size, loss landscape")
    p.add_argument("run")
    p.add_argument("--data-curve", type=_percents, metavar="P1,P2,...",
                   help="train on these percentages of the training split, e.g. 10,25,50,100: would more data help?")
    p.add_argument("--landscape", action="store_true", help="Li et al.'s 1-D and 2-D loss landscape")
    p.add_argument("--gradcam", action="store_true", help="Grad-CAM heat maps of val images")
    p.add_argument("--epochs", type=_positive_int, help="epochs of each --data-curve subset (default: the run's)")
    p.add_argument("--budget", type=float, default=60.0, metavar="SECONDS", help="time budget of --landscape")
    p.add_argument("--json", action="store_true")


def _inspect_parser(sub) -> None:
    p = sub.add_parser("inspect", help="per-layer shapes, parameters, FLOPs, receptive fields; kernels, feature maps")
    p.add_argument("target", metavar="MODEL_OR_RUN", help="registered model name or run folder")
    p.add_argument("--input", metavar="CxHxW", help="input size, e.g. 3x224x224 (default: the model's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--kernels", action="store_true", help="write the first conv layer's kernels as a PNG grid")
    p.add_argument("--feature-maps", metavar="IMAGE", help="write the feature maps of --layer for IMAGE as a PNG")
    p.add_argument("--layer", metavar="NAME", help="module path, e.g. c1 or layer1.0.conv1")
    p.add_argument("--out", metavar="PNG")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnkit", description="Train, diagnose and use CNNs on images.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="verb", required=True)
    _train_parser(sub)
    _train_parser(sub, "lr-find", "the learning-rate range test (Smith 2017): a plot and a suggested --lr")
    for verb, text in (("evaluate", "loss and the task's metrics on the val (or train) split"),
                       ("test", "evaluate the locked test split; each use is recorded")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("run")
        if verb == "evaluate":
            p.add_argument("--split", default="val", choices=("val", "train"))
            p.add_argument("--attack", choices=("fgsm", "pgd"), help="also report robust_accuracy under this attack")
            p.add_argument("--eps", type=float, default=0.1, help="attack budget in pixel units")
            p.add_argument("--target-error", type=float, metavar="ERROR",
                           help="target or human-level error of the verdict (bias = train error − this)")
            p.add_argument("--boundary-f1", action="store_true",
                           help="segmentation: also the boundary F1 score (Csurka et al. 2013)")
        p.add_argument("--json", action="store_true")
    p = sub.add_parser("predict", help="top-k classes, labels or values of images or folders of images")
    p.add_argument("run", metavar="RUN_OR_WEIGHTS",
                   help="a run folder, or pretrained weights such as efficientnet_lite0.imagenet (ImageNet classes)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.add_argument("--threshold", type=float, default=0.5, help="multilabel: a label is predicted at or above it")
    p.add_argument("--score-threshold", type=float, help="detection: keep boxes scoring at least this")
    p.add_argument("--nms-iou", type=float, help="detection: non-maximum suppression's IoU threshold")
    p.add_argument("--out", metavar="DIR", help="detection: each image with its boxes drawn; segmentation: "
                   "NAME_mask.png (class indices) and NAME_overlay.png")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("embed", help="feature vectors of images (.npy, .npz or .parquet); prints the file last")
    p.add_argument("run", metavar="RUN_OR_WEIGHTS",
                   help="a run folder, or pretrained weights such as efficientnet_lite0.imagenet")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", default="embeddings.npz", metavar="FILE",
                   help="its extension picks the format: .npy (+ .paths.txt), .npz or .parquet")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--layer", metavar="NAME",
                   help="this module's output (global-average-pooled) instead of the last linear layer's input")
    p = sub.add_parser("models", help="the registered architectures: parameters, depth, size, GFLOPs")
    p.add_argument("--task")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bench", action="store_true", help="add CPU latency per image at batch 1 and 32")
    p.add_argument("--budget", type=float, default=90.0, metavar="SECONDS", help="time budget of --bench")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for --bench (default: torch's)")
    _inspect_parser(sub)
    _prune_parser(sub)
    _diagnose_parser(sub)
    _transfer_parser(sub)
    p = sub.add_parser("demo", help="LeNet-5 on the embedded digits: train, test, plots")
    p.add_argument("--out")
    p = sub.add_parser("report", help="write RUN/report.html, one self-contained page; prints its path last")
    p.add_argument("run")
    p = sub.add_parser("convert", help="detection annotations COCO | VOC | YOLO (| Penn-Fudan) → COCO | VOC | YOLO, "
                                       "checked; prints the output path last")
    p.add_argument("src", metavar="SRC", help="COCO .json file, VOC / YOLO / Penn-Fudan folder, or synthetic-shapes")
    p.add_argument("--to", choices=("coco", "voc", "yolo"), help="the output format")
    p.add_argument("--out", metavar="PATH", help="the output .json file (COCO) or folder")
    p.add_argument("--images", metavar="DIR", help="the images of a COCO file, when not beside it")
    p.add_argument("--policy", metavar="KIND=ACTION,...",
                   help="bad annotations: unknown_class|outside|zero_area|duplicate|empty_image = fix|drop|fatal "
                        "(default unknown_class=fatal,outside=fix,zero_area=drop,duplicate=drop,empty_image=keep)")
    p.add_argument("--check-only", action="store_true", help="check and report only; write nothing")
    p = sub.add_parser("augment-preview", help="a grid PNG of augmented training images")
    p.add_argument("data")
    p.add_argument("--augment", default="standard")
    p.add_argument("--out", default="augment_preview.png")
    p.add_argument("-n", type=_positive_int, default=8, help="how many source images (rows)")
    p.add_argument("--task", choices=("classify", "segment"), default="classify",
                   help="segment: segmentation data, each picture beside its mask")
    return parser


def _model_options(items: list[str] | None) -> dict | None:
    options = parse_key_values(",".join(items or []), example="--model-option activation=leaky_relu")
    return options or None


def _train_overrides(a: argparse.Namespace) -> dict:
    pick = lambda **kv: {k: v for k, v in kv.items() if v is not None}  # noqa: E731
    return {
        "data": pick(source=a.data, augment=a.augment, image_size=a.image_size, channels=a.channels, resize=a.resize,
                     val=a.val, test=a.test, workers=a.workers, images=a.images),
        "model": pick(name=a.model, options=_model_options(a.model_option), dropout=a.dropout,
                      batch_norm=a.batch_norm, weights=a.weights),
        "train": pick(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer, schedule=a.schedule,
                      loss=a.loss, patience=a.patience, monitor=a.monitor, min_delta=a.min_delta, device=a.device,
                      amp=a.amp, seed=a.seed, l1=a.l1, l2=a.l2, mixup=a.mixup, cutmix=a.cutmix, adversarial=a.adversarial, adv_eps=a.adv_eps,
                      log=a.log, strategy=a.strategy, keep_stages=a.keep_stages, unfreeze_every=a.unfreeze_every,
                      probe=a.probe, head_init=a.head_init),
        "diagnose": pick(alarm_stop=a.alarm_stop, target_error=a.target_error),
        **pick(out=a.out, task=a.task),
    }


def _report_train(result: api.TrainResult) -> int:
    if result.val:
        shown = [k for k in ("accuracy", "f1_macro", "map", "mask_map", "miou", "pixel_accuracy", "mae", "rmse", "r2",
                             "loss")
                 if k in result.val]
        print("  ".join(f"val {k} {result.val[k]:.4f}" for k in shown))
    if result.verdict is not None and not result.interrupted:
        from cnnkit.diagnose.verdict import format_verdict

        print(format_verdict(result.verdict.as_dict()))
    if result.interrupted:
        print(f"interrupted: state saved; continue with `cnnkit train --resume {result.run_dir}`", file=sys.stderr)
    print(result.run_dir)
    return 130 if result.interrupted else 0


def cmd_train(a: argparse.Namespace) -> int:
    if a.resume:
        extra = _train_overrides(a)["train"]
        return _report_train(api.train(resume=a.resume, **{k: v for k, v in extra.items() if k == "epochs"}))
    cfg = api.load_config(a.config, _train_overrides(a))
    return _report_train(api.train(cfg))


def _print_metrics(metrics: dict, as_json: bool) -> None:
    """JSON, or the scalars on one line and each per-class/label/target table below it."""
    if as_json:
        print(json.dumps(metrics))
        return
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                    if not isinstance(v, dict)))
    for key, table in metrics.items():
        if isinstance(table, dict) and table and not all(isinstance(v, dict) for v in table.values()):
            print(f"{key}  " + "  ".join(f"{n} n/a" if v is None else f"{n} {v:.4f}" if isinstance(v, float)
                                         else f"{n} {v}" for n, v in table.items()))
        elif isinstance(table, dict) and table:
            columns = list(next(iter(table.values())))
            width = max(len(str(name)) for name in table)
            print(f"\n{key.removeprefix('per_'):<{width}}  " + "  ".join(f"{c:>8}" for c in columns))
            for name, row in table.items():
                print(f"{name:<{width}}  " + "  ".join("     n/a" if row[c] is None else f"{row[c]:8.4f}"
                                                       if isinstance(row[c], float) else f"{row[c]:8}"
                                                       for c in columns))


def cmd_predict(a: argparse.Namespace) -> int:
    results = api.predict(a.run, a.inputs, top_k=a.top_k, threshold=a.threshold, score_threshold=a.score_threshold,
                          nms_iou=a.nms_iou, out=a.out)
    if a.json:
        print(json.dumps(results))
        return 0
    for r in results:
        if "fractions" in r:  # segmentation: each class's share of the pixels, and the files written
            shares = "  ".join(f"{c} {f:.3f}" for c, f in r["fractions"].items())
            print(f"{r['path']}  {shares}" + (f"  → {r['mask']}" if "mask" in r else ""))
        elif "bbox" in r:  # detection: one line per box
            print(f"{r['path']}  {r['label']} {r['score']:.3f}  x,y,w,h " + ",".join(f"{v:.1f}" for v in r["bbox"]))
        elif "values" in r:  # regression
            print(r["path"] + "  " + "  ".join(f"{k} {v:.4g}" for k, v in r["values"].items()))
        elif "labels" in r:  # multilabel: the labels at or above the threshold, then every probability
            print(r["path"] + "  [" + ", ".join(r["labels"]) + "]  "
                  + "  ".join(f"{p['label']} {p['probability']:.3f}" for p in r["predictions"]))
        else:
            print(r["path"] + "  " + "  ".join(f"{p['label']} {p['probability']:.3f}" for p in r["predictions"]))
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from cnnkit.diagnose.zoo import format_table

    start = time.perf_counter()
    rows = api.models_table(task=a.task, bench=a.bench, budget_s=a.budget, threads=a.threads)
    if a.json:
        print(json.dumps(rows))
    else:
        print(format_table(rows, bench=a.bench))
        print(f"({len(rows)} models in {time.perf_counter() - start:.1f}s)", file=sys.stderr)
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    if a.kernels:
        print(api.inspect_kernels(a.target, a.out))
    elif a.feature_maps:
        if not a.layer:
            raise CnnkitError("--feature-maps needs --layer NAME (a module path such as c1 or layer1.0.conv1)")
        print(api.inspect_feature_maps(a.target, a.feature_maps, a.layer, a.out))
    else:
        from cnnkit.diagnose.inspect import format_report

        report = api.inspect_model(a.target, a.input)
        print(json.dumps(report) if a.json else format_report(report))
    return 0


def cmd_prune(a: argparse.Namespace) -> int:
    rows = api.prune(a.run, a.sparsity, scope=a.scope, finetune_epochs=a.finetune_epochs, out=a.out)
    if a.json:
        print(json.dumps(rows))
        return 0
    tuned = a.finetune_epochs > 0
    print("sparsity  measured  val acc  val loss" + ("  acc before ft" if tuned else ""))
    for r in rows:
        print(f"{r['sparsity_target']:8.2f}  {r['sparsity']:8.4f}  {r['val_accuracy']:7.4f}  {r['val_loss']:8.4f}"
              + (f"  {r['val_accuracy_before_ft']:13.4f}" if tuned else ""))
    print(Path(rows[0]["run"]).parent)
    return 0


def cmd_diagnose(a: argparse.Namespace) -> int:
    """The plots' paths and numbers (or JSON), then the run folder as the last line."""
    result = api.diagnose(a.run, data_curve=a.data_curve, landscape=a.landscape, gradcam=a.gradcam,
                          epochs=a.epochs, budget_s=a.budget)
    if a.json:
        print(json.dumps(result))
    else:
        from cnnkit.experiments.datacurve import format_data_curve
        from cnnkit.diagnose.landscape import format_landscape

        best = result.get("best_epoch")
        for name, path in result["plots"].items():
            print(f"{name.replace('_', ' ')}: {path}" + (f"  (best epoch {best}: lowest val loss)"
                                                         if name == "learning_curves" and best else ""))
        if "data_curve" in result:
            print("\n" + format_data_curve(result["data_curve"]["rows"], result["data_curve"]["reading"]))
        if "landscape" in result:
            print("\n" + format_landscape(result["landscape"]))
    print(result["run"])
    return 0


def cmd_transfer_compare(a: argparse.Namespace) -> int:
    """The table (or JSON), the files written, then the comparison folder as the last line."""
    from cnnkit.experiments.compare import format_table, load_compare_config, parse_strategies

    strategies = parse_strategies(a.strategies)  # a bad name fails before any config or data is read
    result = api.transfer_compare(load_compare_config(a.config, _train_overrides(a)), strategies, a.out)
    if a.json:
        print(json.dumps(result.rows))
    else:
        print(format_table(result.rows))
        print(f"table: {result.files['json']}  {result.files['csv']}  plot: {result.files['png']}")
    if result.interrupted:
        print("interrupted: the table holds the finished strategies", file=sys.stderr)
    print(result.out)
    return 130 if result.interrupted else 0


def cmd_demo(a: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = api.train(api.demo_config(a.out))
    seconds = time.perf_counter() - start
    if result.interrupted:
        return _report_train(result)
    metrics = api.test(result.run_dir)
    print(f"test accuracy {metrics['accuracy']:.4f} on {metrics['count']} held-out digits "
          f"(trained in {seconds:.0f}s)")
    print(f"learning curves: {result.run_dir / 'plots' / 'learning_curves.png'}")
    print(f"predict with:    cnnkit predict {result.run_dir} IMAGE")
    print(result.run_dir)
    return 0


def cmd_convert(a: argparse.Namespace) -> int:
    if a.check_only:
        print("\n".join(api.check_annotations(a.src, images=a.images, policy=a.policy).summary()))
        return 0
    if not a.to or not a.out:
        raise CnnkitError("convert needs --to coco|voc|yolo and --out PATH (or --check-only)")
    print(api.convert(a.src, a.to, a.out, images=a.images, policy=a.policy))
    return 0


def run(a: argparse.Namespace) -> int:
    if a.verb == "train":
        return cmd_train(a)
    if a.verb == "evaluate":
        metrics = api.evaluate(a.run, a.split, attack=a.attack, eps=a.eps, target_error=a.target_error,
                               boundary_f1=a.boundary_f1)
        verdict = metrics.pop("verdict", None) if not a.json else None
        _print_metrics(metrics, a.json)
        if verdict is not None:
            from cnnkit.diagnose.verdict import format_verdict

            print("\n" + format_verdict(verdict))
    elif a.verb == "test":
        _print_metrics(api.test(a.run), a.json)
    elif a.verb == "predict":
        return cmd_predict(a)
    elif a.verb == "embed":
        print(api.embed(a.run, a.inputs, a.out, batch_size=a.batch_size, layer=a.layer))
    elif a.verb == "models":
        return cmd_models(a)
    elif a.verb == "inspect":
        return cmd_inspect(a)
    elif a.verb == "demo":
        return cmd_demo(a)
    elif a.verb == "lr-find":
        cfg = api.load_config(a.config, _train_overrides(a))
        out = Path(a.out or "lr_find.png")
        result = api.lr_find(cfg, steps=a.steps, out=out)
        print(f"suggested lr {result.suggestion:.3g} (steepest descent of the smoothed loss)" if result.suggestion
              else "no suggestion: the loss never fell; try a wider range")
        print(out)
    elif a.verb == "prune":
        return cmd_prune(a)
    elif a.verb == "diagnose":
        return cmd_diagnose(a)
    elif a.verb == "transfer":
        return cmd_transfer_compare(a)
    elif a.verb == "report":
        print(api.report(a.run))
    elif a.verb == "augment-preview":
        print(api.augment_preview(a.data, a.out, a.augment, n=a.n, task=a.task))
    elif a.verb == "convert":
        return cmd_convert(a)
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    warnings.showwarning = _show_warning
    try:
        return run(args)
    except CnnkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnkit models | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    finally:
        shutdown_distributed()
