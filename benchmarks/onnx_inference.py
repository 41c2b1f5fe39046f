"""ONNX inference on the CPU (issue 16): eager PyTorch fp32 against the file of `cnnkit export` on onnxruntime,
fp32 and int8, and on OpenVINO where `import openvino` works, all in one process.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/onnx_inference.py [--repeats 5] [--threads N]
        [--batches 1,32] [--activations uint8,int8] [--calibration 64] [--run RUN]

The network: cnnkit's `resnet18` (torchvision's layout) at 3×224×224 with 1000 classes, with the ImageNet
weights `resnet18.imagenet` where the torch hub cache holds them, else randomly initialised (the speed is the
same; the header says which). The rows:
- torch eager fp32: model.eval() under torch.inference_mode(), NCHW fp32, batch norms as trained (not folded);
- onnxruntime fp32: the file of cnnkit.export.onnx.export_onnx (batch norms folded), on cnnkit's session
  (cnnkit.export.runtime.session: CPUExecutionProvider, every graph optimisation), what `cnnkit predict
  FILE.onnx` runs;
- onnxruntime int8 (u8 act.): cnnkit.export.quantize.quantize_onnx on that file, as `cnnkit export --int8` does
  (QDQ, int8 weights per channel, uint8 activations with MinMax ranges), calibrated on --calibration images:
  hymenoptera/train JPEGs under $CNNKIT_DATA (default ../shared/data) through the card's transform, else random;
- onnxruntime int8 (s8 act.): the same with int8 activations, with --activations uint8,int8 (which is faster);
- openvino fp32 / bf16 / int8: the same fp32 and int8 files on OpenVINO's CPU plugin, each compiled for each
  batch size; fp32 forces INFERENCE_PRECISION_HINT f32, bf16 is OpenVINO's own default on CPUs with AMX or
  AVX512-BF16 (shown only where that is the default), int8 runs the QDQ file as OpenVINO reads it.

Measurement: one warm-up call of every (row, batch), then --repeats rounds; in each round every (row, batch) is
timed in turn, round-robin, each for at least --min-time seconds, so that a machine that gets busier slows all
rows alike. Printed, as a markdown table: the median images/s, the ratio to torch eager fp32 at the same batch,
and the share of the calibration images whose top-1 class equals eager fp32's. --threads sets torch's,
onnxruntime's and OpenVINO's threads alike (default: torch's, i.e. the cores).

With --run RUN (a classification run, e.g. a hymenoptera fine-tune; repeatable): RUN's model exported in fp32
and int8 (`api.export` into a temporary folder; int8 calibrated on RUN's training split), their top-1 accuracy
on RUN's val split, the share of val images on which they agree, and their images/s on onnxruntime at batch 1
and 32 (three alternated rounds, the median). --runs-only skips the ResNet-18 rows.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from shared_data import ROOT  # benchmarks/ is on sys.path when run as a script
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
Runner = Callable[[np.ndarray], np.ndarray]  # a (N, C, H, W) float32 batch → (N, K) logits


def hymenoptera() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    return (Path(env) if env else ROOT.parent / "shared" / "data") / "hymenoptera"


def resnet18() -> tuple[nn.Module, ModelCard, str]:
    """(model in eval mode, card, where its weights come from): ImageNet weights where cached, else random."""
    from cnnkit.models.factory import create_model
    from cnnkit.runs.folder import open_model

    try:
        model, card = open_model("resnet18.imagenet")
        return model.eval(), card, "resnet18.imagenet (ImageNet weights)"
    except CnnkitError:
        torch.manual_seed(0)
        card = ModelCard(architecture="resnet18", task="multiclass", classes=[f"class{i}" for i in range(1000)],
                         input_size=[3, 224, 224], mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="crop")
        return create_model("resnet18", num_classes=1000).eval(), card, "random init (resnet18.imagenet not cached)"


def calibration_images(card: ModelCard, n: int) -> tuple[list[torch.Tensor], str]:
    """n preprocessed images: hymenoptera/train JPEGs spread over both classes through card.transform(), else
    random normal ones; and what they are."""
    from cnnkit.data.images import is_image_file, read_image

    root = hymenoptera() / "train"
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p)) if root.is_dir() else []
    transform, images = card.transform(), []
    for path in paths[::max(1, len(paths) // n)][:n]:
        try:
            images.append(transform(read_image(path, 3)).float())
        except (CnnkitError, OSError) as err:
            print(f"skipped {path.name}: {err}", file=sys.stderr)
    if images:
        return images, f"{len(images)} JPEGs of {root}"
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*card.input_size, generator=g) for _ in range(n)], f"{n} random normal images ({root} absent)"


def build_files(folder: Path, model: nn.Module, card: ModelCard, images: list[torch.Tensor],
                activations: list[str]) -> dict[str, Path]:
    """{"fp32": the exported file, "uint8"/"int8": the file quantised with those activations}."""
    from cnnkit.export.onnx import export_onnx
    from cnnkit.export.quantize import CalibrationReader, quantize_onnx

    files = {"fp32": export_onnx(model, card, folder / "resnet18.onnx")}
    for kind in activations:
        start = time.perf_counter()
        files[kind] = folder / f"resnet18.int8-{kind}.onnx"
        quantize_onnx(files["fp32"], files[kind], CalibrationReader(images), activations=kind)
        print(f"quantised ({kind} activations) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return files


def torch_runner(model: nn.Module) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def ort_runner(path: Path, threads: int) -> Runner:
    from cnnkit.export.runtime import session

    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def openvino_runner(path: Path, threads: int, precision: str | None) -> Runner:
    """OpenVINO's CPU plugin on `path`, compiled once per input shape; `precision` the inference precision hint
    (None: OpenVINO's default)."""
    import openvino as ov

    core, compiled = ov.Core(), {}
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape not in compiled:
            net = core.read_model(str(path))
            net.reshape(list(x.shape))
            compiled[x.shape] = core.compile_model(net, "CPU", config)
        return compiled[x.shape]([x])[0]

    return run


def openvino_default_precision() -> str | None:
    """OpenVINO's default CPU inference precision ('bf16' on CPUs with AMX or AVX512-BF16), None without it."""
    try:
        import openvino as ov
    except ImportError:
        return None
    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)


def make_runners(model: nn.Module, files: dict[str, Path], threads: int) -> dict[str, Runner]:
    """The rows, in table order."""
    names = {"uint8": "int8 (u8 act.)", "int8": "int8 (s8 act.)"}
    runners = {"torch eager fp32": torch_runner(model), "onnxruntime fp32": ort_runner(files["fp32"], threads)}
    runners.update({f"onnxruntime {names[k]}": ort_runner(files[k], threads) for k in names if k in files})
    default = openvino_default_precision()
    if default is None:
        return runners
    runners["openvino fp32"] = openvino_runner(files["fp32"], threads, "f32")
    if default != "f32":
        runners[f"openvino {default} (its default here)"] = openvino_runner(files["fp32"], threads, None)
    runners.update({f"openvino {names[k]}": openvino_runner(files[k], threads, None) for k in names if k in files})
    return runners


def rate(run: Runner, x: np.ndarray, min_time: float) -> float:
    """Images per second of `run` on batch `x`, over at least `min_time` seconds."""
    calls, start = 0, time.perf_counter()
    while True:
        run(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls * len(x) / elapsed


def warm_up(runners: dict[str, Runner], batches: dict[int, np.ndarray]) -> dict[str, Runner]:
    """One call of every (row, batch); the rows that ran (a row that fails, e.g. an OpenVINO compilation, is
    dropped with a note)."""
    kept = {}
    for name, run in runners.items():
        try:
            for x in batches.values():
                run(x)
        except RuntimeError as err:  # OpenVINO's compile errors, onnxruntime's Fail
            lines = [line for line in str(err).splitlines() if line.strip()]
            print(f"dropped row {name!r}: {lines[-1][:160] if lines else type(err).__name__}", file=sys.stderr)
            continue
        kept[name] = run
    return kept


def measure(runners: dict[str, Runner], batches: dict[int, np.ndarray], repeats: int,
            min_time: float) -> dict[tuple[str, int], float]:
    """{(row, batch size): median images/s} over `repeats` round-robin rounds (after warm_up)."""
    rates: dict[tuple[str, int], list[float]] = {(name, b): [] for name in runners for b in batches}
    for r in range(repeats):
        for b, x in batches.items():
            for name, run in runners.items():
                rates[(name, b)].append(rate(run, x, min_time))
        print(f"round {r + 1}/{repeats} done", file=sys.stderr)
    return {key: statistics.median(values) for key, values in rates.items()}


def agreement(runners: dict[str, Runner], images: list[torch.Tensor], batch: int = 32) -> dict[str, float]:
    """Each row's share of `images` whose top-1 class equals torch eager fp32's."""
    x = torch.stack(images).numpy()
    tops = {name: np.concatenate([run(np.ascontiguousarray(x[i:i + batch])).argmax(1)
                                  for i in range(0, len(x), batch)]) for name, run in runners.items()}
    eager = tops["torch eager fp32"]
    return {name: float((top == eager).mean()) for name, top in tops.items()}


def table(medians: dict[tuple[str, int], float], agree: dict[str, float], batches: list[int]) -> str:
    head = "| runtime | " + " | ".join(f"batch {b} img/s | × eager" for b in batches) + " | top-1 = eager |"
    lines = [head, "|---|" + "---:|---:|" * len(batches) + "---:|"]
    for name in agree:
        cells = []
        for b in batches:
            value = medians[(name, b)]
            cells += [f"{value:.1f}", f"{value / medians[('torch eager fp32', b)]:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {agree[name]:.1%} |")
    return "\n".join(lines)


def run_accuracy(run: Path, threads: int, min_time: float, batch: int = 64) -> str:
    """RUN exported fp32 and int8: size, val top-1 accuracy, agreement, and speed on onnxruntime (batch 1 and 32,
    the files alternated), as a markdown table."""
    from cnnkit import api
    from cnnkit.diagnose.classification import open_split

    data = open_split(run, "val")
    transform, channels = data.card.transform(), data.card.input_size[0]
    x = torch.stack([transform(data.source.load(int(i), channels)).float() for i in data.indices]).numpy()
    labels = np.asarray(data.source.labels[data.indices])
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": api.export(run, out=Path(tmp) / "model.onnx"),
                 "int8": api.export(run, int8=True, out=Path(tmp) / "model.int8.onnx")}
        sizes = {k: p.stat().st_size / 2**20 for k, p in files.items()}
        runners = {k: ort_runner(p, threads) for k, p in files.items()}
        tops = {}
        for kind, run_file in runners.items():
            out = np.concatenate([run_file(np.ascontiguousarray(x[i:i + batch])) for i in range(0, len(x), batch)])
            tops[kind] = (out[:, 0] > 0).astype(np.int64) if out.shape[1] == 1 else out.argmax(1)
        speed: dict[tuple[str, int], list[float]] = {}
        for _ in range(3):  # alternated rounds, the median kept
            for kind, run_file in runners.items():
                for b in (1, 32):
                    xb = np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])))
                    speed.setdefault((kind, b), []).append(rate(run_file, xb, min_time))
    lines = [f"{run}: {data.card.architecture}, {'×'.join(map(str, data.card.input_size))}, val split of "
             f"{len(labels)} images, onnxruntime, {threads} threads",
             "| file | size MB | val top-1 | top-1 = fp32 | batch 1 img/s | batch 32 img/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, top in tops.items():
        b1, b32 = (statistics.median(speed[(kind, b)]) for b in (1, 32))
        lines.append(f"| {kind} ONNX | {sizes[kind]:.2f} | {(top == labels).mean():.2%} | "
                     f"{(top == tops['fp32']).mean():.1%} | {b1:.1f} | {b32:.1f} |")
    return "\n".join(lines)


def header(weights: str, calibration: str, files: dict[str, Path], threads: int) -> str:
    try:
        import openvino as ov

        openvino = ov.__version__.split("-")[0]
    except ImportError:
        openvino = "not installed"
    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    sizes = ", ".join(f"{k} {p.stat().st_size / 2**20:.1f} MB" for k, p in files.items())
    return (f"ResNet-18, 3×224×224, 1000 classes, weights: {weights}\nCPU: {cpu}, {os.cpu_count()} cores, "
            f"{threads} threads; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, openvino "
            f"{openvino}\nfiles: {sizes}; calibration: {calibration}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="round-robin rounds (median over them)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds each (row, batch) is timed per round")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    p.add_argument("--activations", default="uint8", help="int8 files' activation types: uint8, int8 or both")
    p.add_argument("--calibration", type=int, default=64, help="calibration images")
    p.add_argument("--run", type=Path, action="append", default=[],
                   help="also: val accuracy and speed of RUN's fp32 and int8 ONNX files (repeatable)")
    p.add_argument("--runs-only", action="store_true", help="skip the ResNet-18 rows")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    batches = [int(b) for b in a.batches.split(",")]
    activations = [k.strip() for k in a.activations.split(",") if k.strip()]
    warnings.filterwarnings("ignore")
    for run in a.run if a.runs_only else []:
        print(run_accuracy(run, a.threads, a.min_time) + "\n")
    if a.runs_only:
        return 0
    model, card, weights = resnet18()
    images, calibration = calibration_images(card, a.calibration)
    with tempfile.TemporaryDirectory() as tmp:
        files = build_files(Path(tmp), model, card, images, activations)
        g = np.random.default_rng(0)
        inputs = {b: g.standard_normal((b, *card.input_size), dtype=np.float32) for b in batches}
        runners = warm_up(make_runners(model, files, a.threads), inputs)
        agree = agreement(runners, images)
        medians = measure(runners, inputs, a.repeats, a.min_time)
        print(header(weights, calibration, files, a.threads) + "\n")
    print(table(medians, agree, batches))
    for run in a.run:
        print("\n" + run_accuracy(run, a.threads, a.min_time))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CnnkitError as err:
        sys.exit(f"error: {err}")
