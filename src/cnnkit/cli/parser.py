"""The `cnnkit` argument parser: argparse only. It imports no torch (nor numpy), so `cnnkit --help` and
`cnnkit VERB --help` answer at once; names that only torch-land knows (architectures, optimizers, schedules,
augment presets, losses) are plain help text here and are checked when the verb runs."""
from __future__ import annotations

import argparse

from cnnkit.cli.parser_experiments import prune_parser
from cnnkit.errors import CnnkitError
from cnnkit.version import __version__

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # cnnkit.engine.precision (argparse only here: no torch)
TASKS_HELP = "binary | multiclass | multilabel | regression | detect | segment | instance"


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
    from cnnkit.config import parse_key_values

    try:
        return parse_key_values(text, example="--dropout classifier.*=0.5,fc6=0.3")
    except CnnkitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


TRAIN_HELP = ("train a model for any task: classification, regression, detection, instance or semantic "
              "segmentation (--task); prints the run folder last")


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data",
                   help="folder of class folders, CSV of path,label, or digits | mnist:PATH | synthetic-shapes")
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
                                      "decay | one_cycle | reduce_on_plateau")
    p.add_argument("--task", help=f"{TASKS_HELP} (default: inferred from the data)")
    p.add_argument("--loss",
                   help="a loss of cnnkit.losses.core, e.g. focal, multiclass_svm, huber (default: the task's)")
    p.add_argument("--augment", help="none | light | standard | strong")
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--resize", choices=("resize", "pad", "crop"))
    p.add_argument("--images", metavar="DIR", help="detection: the images of a COCO JSON file, when not beside it")
    p.add_argument("--val", type=float, help="validation fraction (default 0.15)")
    p.add_argument("--test", type=float, help="test fraction (default 0.15)")


def _regularization_flags(p: argparse.ArgumentParser) -> None:
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


def _knob_flags(p: argparse.ArgumentParser) -> None:
    """The optimisation knobs (docs/training.md has the table); KEY=VALUE values parse as numbers, bools, lists."""
    kv, add = "KEY=VALUE", p.add_argument
    add("--schedule-interval", choices=("epoch", "batch"), help="what the schedule counts (default: its own)")
    add("--schedule-option", action="append", metavar=kv, help="repeatable: --schedule-option step_size=3")
    add("--optimizer-option", action="append", metavar=kv, help="repeatable, torch's names: betas=(0.9,0.99)")
    add("--momentum", type=float, help="momentum of sgd or rmsprop (default 0)")
    add("--nesterov", action="store_true", default=None, help="sgd: Nesterov momentum")
    add("--weight-decay", type=float, help="the optimiser's weight decay (coupled L2; adamw: decoupled)")
    add("--label-smoothing", type=float, metavar="EPS", help="soft targets: 1 − ε on the class, ε/K spread")
    add("--grad-clip", type=float, metavar="NORM", help="clip the gradients' global L2 norm to NORM")
    add("--warmup-epochs", type=float, help="linear warm-up of the learning rate before the schedule")
    add("--whiten", action="store_true", default=None, help="each image by its own mean and std (--normalize whiten)")
    add("--normalize", choices=("standard", "mean", "whiten"), help="standard (default): (x−mean)/std; mean: x−mean")
    add("--class-weight", metavar="balanced|FILE", help="balanced (n / (K·n_c)), or a CSV/JSON of class → weight")
    add("--accumulate", type=_positive_int, metavar="N", help="one optimiser step per N batches (as N × batch size)")
    add("--init", metavar="SCHEME[:K=V,...]", help="a fresh model's conv/linear layers: he | glorot | lecun | "
        "normal:std=0.01,bias=0.1 | uniform:low=-0.05,high=0.05")
    add("--insert-dropout", action="append", metavar="GLOB=RATE",
        help="dropout after the matching modules (spatial on 4-D maps), repeatable: 'features.*.conv=0.1'")


def _transfer_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", help="transfer learning: feature-extractor | head-only | fine-tune | partial | "
                                      "linear-probe | auto (see docs/transfer.md)")
    p.add_argument("--keep-stages", type=_positive_int, metavar="K", help="partial: keep the first K stages")
    p.add_argument("--unfreeze-every", type=_positive_int, metavar="N",
                   help="fine-tune: unfreeze one more stage every N epochs, from the head backwards")
    p.add_argument("--probe", choices=("logistic", "svm"), help="linear-probe: logistic regression or linear SVM")
    p.add_argument("--head-init", choices=("auto", "random", "probe"),
                   help="the new head before training: random, or fitted as a linear probe (LP-FT); auto (default): "
                        "probe for fine-tune from pretrained weights on classes")


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:1")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): bf16 autocast + channels_last where the CPU or GPU has bf16 (fp16 on an "
                        "older GPU), fp32 elsewhere")
    p.add_argument("--amp", action="store_true", default=None,
                   help="the older alias: mixed precision (bf16 on any CPU) even where auto keeps fp32")
    p.add_argument("--seed", type=int)
    p.add_argument("--on-nan", choices=("stop", "skip"),
                   help="a NaN or infinite loss: stop (default; one line naming the epoch and batch, the last good "
                        "checkpoint kept) or skip the batch and halve the learning rate (stops after 5 in a row)")
    p.add_argument("--out", help="run folder (default runs/<model>-<data>)")
    p.add_argument("--config", help="YAML file with data/model/train sections; flags override it")
    p.add_argument("--alarm-stop", action="store_true", default=None,
                   help="stop when the overfitting alarm fires (val loss rising while the train loss falls)")
    p.add_argument("--alarm-on", choices=("rise", "plateau", "both"),
                   help="what the overfitting alarm counts while the train loss falls: a rising val loss, a plateau "
                        "(no new low beyond --min-delta), or both (default; see docs/diagnosis.md)")
    p.add_argument("--target-error", type=float, metavar="ERROR",
                   help="target or human-level error of the verdict (bias = train error − this)")
    p.add_argument("--log", action="append", choices=("tensorboard", "mlflow"),
                   help="also log to TensorBoard (RUN/tensorboard) or MLflow; repeatable")
    p.add_argument("--save-format", choices=("pt", "safetensors"),
                   help="the run's weights: RUN/model.pt (default) or RUN/model.safetensors, the card in its "
                        "metadata (checkpoints stay .pt; every reader takes either)")


def _train_parser(sub, verb: str = "train", text: str = TRAIN_HELP) -> argparse.ArgumentParser:
    """The training flags, shared by train, lr-find and transfer compare."""
    p = sub.add_parser(verb, help=text)
    _data_flags(p)
    _regularization_flags(p)
    _knob_flags(p)
    _transfer_flags(p)
    _run_flags(p)
    if verb == "lr-find":
        p.add_argument("--steps", type=_positive_int, default=100, help="batches of the range test")
    elif verb != "compare":  # `transfer compare` starts new runs only
        p.add_argument("--resume", metavar="RUN", help="continue RUN from checkpoints/last.pt")
    if verb == "train":
        p.add_argument("--folds", type=int, metavar="K",
                       help="K-fold cross-validation of train+val (the test split kept out): runs OUT/fold1..foldK, "
                            "mean ± std of the val metrics in OUT/folds.json")
        p.add_argument("--group-by", metavar="COLUMN",
                       help="with --folds: a column of the CSV data source; a group never spans two folds")
    return p


def _audit_parser(sub) -> None:
    p = sub.add_parser("audit", help="question the labels and the split: label errors (confident learning), "
                                     "duplicates and leaks, quality, bad boxes or masks; prints OUT last")
    p.add_argument("target", metavar="DATA_OR_RUN", help="a data source as for train --data, or a run folder "
                   "(its split and config)")
    p.add_argument("--out", metavar="DIR", help="default audit-<name>: audit.html, audit.json, relabel.csv")
    p.add_argument("--task", help=f"{TASKS_HELP} (default: inferred from the data)")
    p.add_argument("--folds", type=_positive_int, default=5, help="cross-fitting folds (default 5)")
    p.add_argument("--method", choices=("auto", "probe", "scratch"), default="auto",
                   help="out-of-fold model: probe (logistic regression on pretrained embeddings), scratch (the "
                        "--model trained from scratch per fold), auto (default: scratch for images of at most "
                        "64 px, else probe)")
    p.add_argument("--embedder", metavar="WEIGHTS", help="pretrained weights of the probe's embeddings "
                   "(default efficientnet_lite0.imagenet)")
    p.add_argument("--annotators", metavar="CSV", help="a CSV with a path column and one label column per "
                   "annotator: agreement (Cohen's or Fleiss' kappa), majority and soft labels")
    p.add_argument("--seconds-per-item", type=float, help="annotation time per item for the effort estimate "
                   "(default 6 s, the notes' 10 items a minute; 30 s per instance mask, 60 s per semantic mask)")
    p.add_argument("--model", help="scratch and detection/segmentation audits: the architecture (see `cnnkit "
                   "models`)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--epochs", type=_positive_int, help="epochs of each out-of-fold model")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer")
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--resize", choices=("resize", "pad", "crop"))
    p.add_argument("--images", metavar="DIR", help="detection: the images of a COCO JSON file, when not beside it")
    p.add_argument("--val", type=float, help="validation fraction of a new split (default 0.15)")
    p.add_argument("--test", type=float, help="test fraction of a new split (default 0.15)")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--config", help="YAML file with data/model/train sections for the out-of-fold models")


def _transfer_parser(sub) -> None:
    t = sub.add_parser("transfer", help="transfer learning tools: compare strategies")
    p = _train_parser(t.add_subparsers(dest="transfer_verb", required=True, metavar="compare"), "compare",
                      "train several strategies on the same split and budget; a table of val accuracy, time and "
                      "trainable parameters; prints the folder last")
    p.add_argument("--strategies", metavar="S1,S2,...",
                   help="default feature-extractor,head-only,fine-tune,partial,linear-probe,scratch "
                        "(scratch: the same architecture from random weights; auto also allowed)")
    p.add_argument("--json", action="store_true")


def _percents(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected percentages such as 10,25,50,100, got {text!r}") from None


def _inference_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): bf16 autocast + channels_last where the CPU or GPU has bf16, fp32 elsewhere; "
                        "fp32 forces fp32 (batch norms are folded into the convolutions either way)")


def _diagnose_parser(sub) -> None:
    p = sub.add_parser("diagnose", help="diagnostic plots of a run: learning curves, by data size, loss landscape")
    p.add_argument("run")
    p.add_argument("--data-curve", type=_percents, metavar="P1,P2,...",
                   help="train on these percentages of the training split, e.g. 10,25,50,100: would more data help?")
    p.add_argument("--landscape", action="store_true", help="Li et al.'s 1-D and 2-D loss landscape")
    p.add_argument("--gradcam", action="store_true", help="Grad-CAM heat maps of val images")
    p.add_argument("--epochs", type=_positive_int, help="epochs of each --data-curve subset (default: the run's)")
    p.add_argument("--budget", type=float, default=60.0, metavar="SECONDS", help="time budget of --landscape")
    _inference_precision(p)
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


def _evaluate_parsers(sub) -> None:
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
            p.add_argument("--data", metavar="OTHER",
                           help="evaluate on all of another labelled set (as train's --data), its classes mapped by "
                                "name; refused if any image is in the run's training split; reports the shift "
                                "against the run's test (else val) metric")
        _inference_precision(p)
        p.add_argument("--json", action="store_true")


def _predict_parsers(sub) -> None:
    p = sub.add_parser("predict", help="predictions for images or folders of images: top-k classes, labels, "
                                       "values, boxes or masks, by the run's task")
    p.add_argument("run", metavar="RUN_OR_WEIGHTS",
                   help="a run folder, pretrained weights such as efficientnet_lite0.imagenet (ImageNet classes), "
                        "or a FILE.onnx written by `cnnkit export`")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.add_argument("--threshold", type=float, default=0.5, help="multilabel: a label is predicted at or above it")
    p.add_argument("--score-threshold", type=float, help="detection: keep boxes scoring at least this")
    p.add_argument("--nms-iou", type=float, help="detection: non-maximum suppression's IoU threshold")
    p.add_argument("--out", metavar="DIR", help="detection: each image with its boxes drawn; segmentation: "
                   "NAME_mask.png (class indices) and NAME_overlay.png")
    p.add_argument("--proposals", type=_positive_int, metavar="N",
                   help="rcnn, spp_net, fast_rcnn: also draw the first N region proposals (thin, grey) under the "
                        "boxes; needs --out")
    _inference_precision(p)
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"),
                   help="what runs a FILE.onnx (default onnxruntime; openvino: Intel's, bf16 on AMX unless "
                        "--precision fp32)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("export", help="the model as one file to use outside cnnkit (ONNX, card in its metadata); "
                                      "prints the file last")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", default="onnx", choices=("onnx",))
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantisation (onnxruntime), calibrated on the run's training images")
    p.add_argument("--out", metavar="FILE", help="default: RUN/model.onnx (RUN/model.int8.onnx with --int8)")
    p = sub.add_parser("embed", help="feature vectors of images (.npy, .npz or .parquet); prints the file last")
    p.add_argument("run", metavar="RUN_OR_WEIGHTS",
                   help="a run folder, or pretrained weights such as efficientnet_lite0.imagenet")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--out", default="embeddings.npz", metavar="FILE",
                   help="its extension picks the format: .npy (+ .paths.txt), .npz or .parquet")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--layer", metavar="NAME",
                   help="this module's output (global-average-pooled) instead of the last linear layer's input")
    _inference_precision(p)


def _models_parser(sub) -> None:
    p = sub.add_parser("models", help="the registered architectures: parameters, depth, size, GFLOPs")
    p.add_argument("names", nargs="*", help="only these: zoo names, named weights, tv/..., timm/... or spec:...")
    p.add_argument("--task", help="only the architectures of this task: classify | detect | segment | instance")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bench", action="store_true", help="add CPU latency per image at batch 1 and 32")
    p.add_argument("--budget", type=float, default=90.0, metavar="SECONDS", help="time budget of --bench")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for --bench (default: torch's)")


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="training and inference images/s at fp32 and auto, MFU against this machine's "
                                     "measured peak, and where a training step's time goes")
    p.add_argument("model", metavar="MODEL_OR_RUN",
                   help="a zoo name (see `cnnkit models`), pretrained weights such as efficientnet_lite0.imagenet, "
                        "or a run folder")
    p.add_argument("--input", metavar="CxHxW", help="input size, e.g. 3x128x128 (default: the model's or the run's)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--steps", type=_positive_int, default=10, help="timed steps, after 3 warm-up steps")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (default: torch's)")
    p.add_argument("--remeasure", action="store_true", help="measure this machine's GEMM and convolution peak "
                   "again instead of reading the cached one")
    p.add_argument("--json", action="store_true")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535 (0: any free port), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _serve_parser(sub) -> None:
    from cnnkit.serve.limits import MB, Limits  # no torch, no FastAPI: the defaults only

    d = Limits()
    p = sub.add_parser("serve", help="predictions over HTTP (FastAPI on uvicorn): POST images to /predict, the "
                                     "API at /docs; Ctrl-C stops")
    p.add_argument("run", metavar="RUN|FILE.onnx",
                   help="a run folder, pretrained weights such as efficientnet_lite0.imagenet, or a FILE.onnx written "
                        "by `cnnkit export`")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=_port, default=8000, help="default 8000; 0: any free port (printed)")
    p.add_argument("--max-request-mb", type=_positive_float, metavar="MB", default=d.max_request_bytes / MB,
                   help=f"largest request body in MB (default {d.max_request_bytes / MB:g})")
    p.add_argument("--max-image-mpx", type=_positive_float, metavar="MPX", default=d.max_image_pixels / 1e6,
                   help=f"largest image in megapixels, read from its header before decoding "
                        f"(default {d.max_image_pixels / 1e6:g})")
    p.add_argument("--max-images", type=_positive_int, metavar="N", default=d.max_images,
                   help=f"images per request (default {d.max_images})")
    p.add_argument("--max-batch", type=_positive_int, metavar="N", default=d.max_batch,
                   help=f"images per model call; requests that arrive together share one (default {d.max_batch})")
    p.add_argument("--max-wait-ms", type=float, metavar="MS", default=d.max_wait_s * 1000,
                   help=f"how long a batch waits for more requests (default {d.max_wait_s * 1000:g})")
    p.add_argument("--max-queued", type=_positive_int, metavar="N", default=d.max_queued,
                   help=f"images waiting for the model before requests get 503 (default {d.max_queued})")
    p.add_argument("--timeout", type=_positive_float, default=d.timeout_s, metavar="SECONDS",
                   help=f"a request's wait for its predictions before a 503 (default {d.timeout_s:g})")
    p.add_argument("--top-k", type=_positive_int, help="classes: as for predict (default 5)")
    p.add_argument("--threshold", type=float, help="multilabel: as for predict (default 0.5)")
    p.add_argument("--score-threshold", type=float, help="detection: as for predict")
    p.add_argument("--nms-iou", type=float, help="detection: as for predict")
    _inference_precision(p)
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"),
                   help="what runs a FILE.onnx, as for predict (default onnxruntime)")
    p.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default info, warning with -q)")


# ---------------------------------------------------------------- sweep and compare (several runs)

def _sweep_compare_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="a hyperparameter search with Optuna over SPACE.yaml (base: fixed settings, "
                                     "search: tuned ones); every trial a run folder; prints DIR last")
    p.add_argument("space", metavar="SPACE.yaml")
    p.add_argument("--trials", type=_positive_int, required=True, help="finished trials wanted in DIR (a rerun with "
                   "the same DIR goes on from its study.db)")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep's folder: study.db, trials.csv, "
                   "parallel.png, importance.json, trial-0000/ ...")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe",
                   help="tpe (default), random, or grid (every search setting a list)")
    p.add_argument("--pruner", choices=("median", "none"), default="median",
                   help="median (default): stop a trial whose val metric is below the median of earlier trials at "
                        "the same epoch")
    p.add_argument("--metric", default="val_loss", help="the history column optimised (default val_loss; "
                   "val_accuracy is maximised)")
    p.add_argument("--seed", type=int, help="the sampler's seed")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("compare", help="runs side by side: learning curves overlaid, final metrics, config "
                                       "differences and verdicts (table, compare.html, compare.json)")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", metavar="DIR", help="where compare.png, compare.html and compare.json go "
                   "(default compare-<first run's name>)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _run_tool_parsers(sub) -> None:
    p = sub.add_parser("demo", help="LeNet-5 on the embedded digits: train, test, plots")
    p.add_argument("--out")
    _audit_parser(sub)
    p = sub.add_parser("report", help="write RUN/report.html, one self-contained page; prints its path last")
    p.add_argument("run")


def _data_tool_parsers(sub) -> None:
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
    p.add_argument("--task", choices=("classify", "segment", "detect", "instance"), default="classify",
                   help="segment: segmentation data, each picture beside its mask; detect: detection data, the "
                        "boxes drawn with their class names (instance: and the masks)")


def build_parser() -> argparse.ArgumentParser:
    """The whole `cnnkit` parser; building and using it imports nothing heavy."""
    parser = _Parser(prog="cnnkit", description="Train, diagnose and use CNNs on images.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True)
    _train_parser(sub)
    _train_parser(sub, "lr-find", "the learning-rate range test (Smith 2017): a plot and a suggested --lr")
    _evaluate_parsers(sub)
    _predict_parsers(sub)
    _models_parser(sub)
    _inspect_parser(sub)
    _bench_parser(sub)
    prune_parser(sub)
    _diagnose_parser(sub)
    _transfer_parser(sub)
    _run_tool_parsers(sub)
    _serve_parser(sub)
    _data_tool_parsers(sub)
    _sweep_compare_parsers(sub)
    return parser
