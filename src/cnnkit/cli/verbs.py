"""One handler per verb: argparse.Namespace → cnnkit.api.<verb>() → printed result; returns the exit code.

cnnkit.api (and so torch) is imported inside each handler, after parsing, never at import time. Every api verb
is called with its first argument(s) (run, cfg, inputs, ...) positionally and everything else by keyword."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cnnkit.cli.output import prediction_line, print_metrics, print_other, report_train
from cnnkit.errors import CnnkitError


def _model_options(items: list[str] | None) -> dict | None:
    from cnnkit.config import parse_key_values

    options = parse_key_values(",".join(items or []), example="--model-option activation=leaky_relu")
    return options or None


def train_overrides(a: argparse.Namespace) -> dict:
    """The config sections set by the training flags (those not given are left to the YAML file and defaults)."""
    pick = lambda **kv: {k: v for k, v in kv.items() if v is not None}  # noqa: E731
    return _with_knobs(a, {
        "data": pick(source=a.data, augment=a.augment, image_size=a.image_size, channels=a.channels, resize=a.resize,
                     val=a.val, test=a.test, workers=a.workers, images=a.images),
        "model": pick(name=a.model, options=_model_options(a.model_option), dropout=a.dropout,
                      batch_norm=a.batch_norm, weights=a.weights),
        "train": pick(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer, schedule=a.schedule,
                      loss=a.loss, patience=a.patience, monitor=a.monitor, min_delta=a.min_delta, device=a.device,
                      amp=a.amp, precision=a.precision, seed=a.seed, on_nan=a.on_nan, l1=a.l1, l2=a.l2,
                      mixup=a.mixup, cutmix=a.cutmix, adversarial=a.adversarial, adv_eps=a.adv_eps, log=a.log,
                      strategy=a.strategy,
                      keep_stages=a.keep_stages, unfreeze_every=a.unfreeze_every, probe=a.probe,
                      head_init=a.head_init, save_format=a.save_format),
        "diagnose": pick(alarm_stop=a.alarm_stop, alarm_on=a.alarm_on, target_error=a.target_error),
        **pick(out=a.out, task=a.task),
    })


def _key_values(items: list[str] | None, flag: str, example: str) -> dict:
    """Repeated KEY=VALUE flags → {key: value}, each value a number, bool or list where it reads as one."""
    from cnnkit.config import parse_key_value

    options: dict = {}
    for item in items or []:
        options.update(parse_key_value(item, example=f"{flag} {example}"))
    return options


def _with_knobs(a: argparse.Namespace, sections: dict) -> dict:
    """`sections` with the optimisation knobs' flags (--momentum, --schedule-option, --init, ...) added; a
    namespace without them (a verb of its own) adds nothing."""
    k = argparse.Namespace(**{name: getattr(a, name, None) for name in KNOBS})
    pick = lambda **kv: {key: v for key, v in kv.items() if v is not None}  # noqa: E731
    optimizer = {**_key_values(k.optimizer_option, "--optimizer-option", "betas=(0.9,0.99)"),
                 **pick(momentum=k.momentum, nesterov=k.nesterov)}
    schedule = _key_values(k.schedule_option, "--schedule-option", "step_size=3")
    placed = _key_values(k.insert_dropout, "--insert-dropout", "'features.*.conv=0.1'")
    sections["data"].update(pick(whiten=k.whiten, normalize=k.normalize or ("whiten" if k.whiten else None)))
    sections["model"].update(pick(init=k.init, insert_dropout=placed or None))
    sections["train"].update(pick(
        schedule_interval=k.schedule_interval, schedule_options=schedule or None, optimizer_options=optimizer or None,
        weight_decay=k.weight_decay, label_smoothing=k.label_smoothing, grad_clip=k.grad_clip,
        warmup_epochs=k.warmup_epochs, class_weight=k.class_weight, accumulate=k.accumulate))
    return sections


KNOBS = ("optimizer_option", "momentum", "nesterov", "schedule_option", "insert_dropout", "whiten", "normalize",
         "init", "schedule_interval", "weight_decay", "label_smoothing", "grad_clip", "warmup_epochs", "class_weight",
         "accumulate")  # the parser's _knob_flags


# ---------------------------------------------------------------- training: train, lr-find, demo, transfer compare

def cmd_train(a: argparse.Namespace) -> int:
    if a.group_by is not None and a.folds is None:
        raise CnnkitError(f"--group-by {a.group_by} chooses the folds of cross-validation; give --folds K too")
    if a.folds is not None and a.resume:
        raise CnnkitError("--folds starts K new runs and cannot --resume one; resume a fold's run folder alone")
    from cnnkit import api

    if a.folds is not None:
        from cnnkit.cli.output import report_folds

        cfg = api.load_config(a.config, train_overrides(a))
        return report_folds(api.cross_validate(cfg, folds=a.folds, group_by=a.group_by))
    if a.resume:
        extra = train_overrides(a)["train"]
        return report_train(api.train(resume=a.resume, **{k: v for k, v in extra.items() if k == "epochs"}))
    cfg = api.load_config(a.config, train_overrides(a))
    return report_train(api.train(cfg))


def cmd_lr_find(a: argparse.Namespace) -> int:
    from cnnkit import api

    cfg = api.load_config(a.config, train_overrides(a))
    out = Path(a.out or "lr_find.png")
    result = api.lr_find(cfg, steps=a.steps, out=out)
    print(f"suggested lr {result.suggestion:.3g} (steepest descent of the smoothed loss)" if result.suggestion
          else "no suggestion: the loss never fell; try a wider range")
    print(out)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from cnnkit import api

    start = time.perf_counter()
    result = api.train(api.demo_config(out=a.out))
    seconds = time.perf_counter() - start
    if result.interrupted:
        return report_train(result)
    metrics = api.test(result.run_dir)
    print(f"test accuracy {metrics['accuracy']:.4f} on {metrics['count']} held-out digits "
          f"(trained in {seconds:.0f}s)")
    print(f"learning curves: {result.run_dir / 'plots' / 'learning_curves.png'}")
    print(f"predict with:    cnnkit predict {result.run_dir} IMAGE")
    print(result.run_dir)
    return 0


def cmd_transfer_compare(a: argparse.Namespace) -> int:
    """The table (or JSON), the files written, then the comparison folder as the last line."""
    from cnnkit.experiments.compare import format_table, load_compare_config, parse_strategies

    strategies = parse_strategies(a.strategies)  # a bad name fails before any config or data is read
    from cnnkit import api

    result = api.transfer_compare(load_compare_config(a.config, train_overrides(a)), strategies=strategies,
                                  out=a.out)
    if a.json:
        print(json.dumps(result.rows))
    else:
        print(format_table(result.rows))
        print(f"table: {result.files['json']}  {result.files['csv']}  plot: {result.files['png']}")
    if result.interrupted:
        print("interrupted: the table holds the finished strategies", file=sys.stderr)
    print(result.out)
    return 130 if result.interrupted else 0


# ---------------------------------------------------------------- a trained run: evaluate, test, predict, embed, report

def cmd_evaluate(a: argparse.Namespace) -> int:
    from cnnkit import api

    metrics = api.evaluate(a.run, split=a.split, attack=a.attack, eps=a.eps, target_error=a.target_error,
                           boundary_f1=a.boundary_f1, precision=a.precision, data=a.data)
    if a.data is not None:  # another labelled set: its metrics and the shift, no verdict
        print_other(metrics, a.json)
        return 0
    verdict = metrics.pop("verdict", None) if not a.json else None
    print_metrics(metrics, a.json)
    if verdict is not None:
        from cnnkit.diagnose.verdict import format_verdict

        print("\n" + format_verdict(verdict))
    return 0


def cmd_test(a: argparse.Namespace) -> int:
    from cnnkit import api

    print_metrics(api.test(a.run, precision=a.precision), a.json)
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from cnnkit import api

    results = api.predict(a.run, a.inputs, top_k=a.top_k, threshold=a.threshold, score_threshold=a.score_threshold,
                          nms_iou=a.nms_iou, out=a.out, precision=a.precision, runtime=a.runtime,
                          proposals=a.proposals)
    if a.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(prediction_line(r))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from cnnkit import api

    print(api.export(a.run, format=a.format, int8=a.int8, out=a.out))
    return 0


def cmd_embed(a: argparse.Namespace) -> int:
    from cnnkit import api

    print(api.embed(a.run, a.inputs, out=a.out, batch_size=a.batch_size, layer=a.layer, precision=a.precision))
    return 0


def cmd_audit(a: argparse.Namespace) -> int:
    from cnnkit import api

    pick = lambda **kv: {k: v for k, v in kv.items() if v is not None}  # noqa: E731
    overrides = {"data": pick(image_size=a.image_size, resize=a.resize, val=a.val, test=a.test, workers=a.workers,
                              images=a.images),
                 "model": pick(name=a.model, options=_model_options(a.model_option)),
                 "train": pick(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer,
                               seed=a.seed, precision=a.precision),
                 **pick(task=a.task)}
    cfg = api.load_config(a.config, overrides) if a.config else None  # a run folder: its own config + flags
    print(api.audit(a.target, cfg=cfg, out=a.out, folds=a.folds, method=a.method, embedder=a.embedder,
                    annotators=a.annotators, seconds_per_item=a.seconds_per_item, overrides=overrides))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from cnnkit import api

    print(api.report(a.run))
    return 0


# ---------------------------------------------------------------- tools: models, inspect, prune, diagnose, data

def cmd_models(a: argparse.Namespace) -> int:
    from cnnkit import api
    from cnnkit.diagnose.zoo import format_table

    start = time.perf_counter()
    rows = api.models_table(task=a.task, bench=a.bench, budget_s=a.budget, threads=a.threads, names=a.names)
    if a.json:
        print(json.dumps(rows))
    else:
        print(format_table(rows, bench=a.bench))
        print(f"({len(rows)} models in {time.perf_counter() - start:.1f}s)", file=sys.stderr)
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from cnnkit import api

    if a.kernels:
        print(api.inspect_kernels(a.target, out=a.out))
    elif a.feature_maps:
        if not a.layer:
            raise CnnkitError("--feature-maps needs --layer NAME (a module path such as c1 or layer1.0.conv1)")
        print(api.inspect_feature_maps(a.target, image=a.feature_maps, layer=a.layer, out=a.out))
    else:
        from cnnkit.diagnose.inspect import format_report

        report = api.inspect_model(a.target, input_size=a.input)
        print(json.dumps(report) if a.json else format_report(report))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    """The table of images/s, MFU and the step's breakdown, or one JSON object."""
    from cnnkit import api

    result = api.bench(a.model, input=a.input, batch_size=a.batch_size, steps=a.steps, device=a.device,
                       threads=a.threads, remeasure=a.remeasure)
    if a.json:
        print(json.dumps(result))
    else:
        from cnnkit.experiments.bench import format_bench

        print(format_bench(result))
    return 0


def cmd_prune(a: argparse.Namespace) -> int:
    from cnnkit import api

    extra = {"structured": True, "criterion": a.criterion, "latency_batch": a.latency_batch} if a.structured else {}
    if a.residual is not None:
        extra["residual"] = a.residual  # without --structured api.prune refuses it in one line
    rows = api.prune(a.run, sparsities=a.sparsity, scope=a.scope, finetune_epochs=a.finetune_epochs, out=a.out,
                     **extra)
    if a.json:
        print(json.dumps(rows))
        return 0
    if a.structured:
        from cnnkit.experiments.structured import format_structured

        print(format_structured(rows))
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
    from cnnkit import api

    result = api.diagnose(a.run, data_curve=a.data_curve, landscape=a.landscape, gradcam=a.gradcam,
                          epochs=a.epochs, budget_s=a.budget, precision=a.precision)
    if a.json:
        print(json.dumps(result))
    else:
        from cnnkit.diagnose.landscape import format_landscape
        from cnnkit.experiments.datacurve import format_data_curve

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


def cmd_convert(a: argparse.Namespace) -> int:
    from cnnkit import api

    if a.check_only:
        print("\n".join(api.check_annotations(a.src, images=a.images, policy=a.policy).summary()))
        return 0
    if not a.to or not a.out:
        raise CnnkitError("convert needs --to coco|voc|yolo and --out PATH (or --check-only)")
    print(api.convert(a.src, to=a.to, out=a.out, images=a.images, policy=a.policy))
    return 0


def cmd_augment_preview(a: argparse.Namespace) -> int:
    from cnnkit import api

    print(api.augment_preview(a.data, out=a.out, preset=a.augment, n=a.n, task=a.task))
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    """Serve RUN over HTTP until Ctrl-C; prints the address first (with --port 0, the port that was free)."""
    from cnnkit.serve.limits import MB, Limits
    from cnnkit.serve.server import Service

    limits = Limits(max_request_bytes=int(a.max_request_mb * MB), max_image_pixels=int(a.max_image_mpx * 1e6),
                    max_images=a.max_images, max_batch=a.max_batch, max_wait_s=a.max_wait_ms / 1000,
                    max_queued=a.max_queued, timeout_s=a.timeout)
    options = {"top_k": a.top_k, "threshold": a.threshold, "score_threshold": a.score_threshold,
               "nms_iou": a.nms_iou}
    service = Service(a.run, a.host, a.port, limits=limits, precision=a.precision, runtime=a.runtime,
                      options=options, log_level=a.log_level or ("warning" if a.quiet else "info"))
    model = service.model
    try:
        service.run(on_ready=lambda: print(f"serving {model.target} ({model.card.problem}, {model.runtime}) on "
                                           f"{service.url}  (API: {service.url}/docs; Ctrl-C stops)", flush=True))
    finally:  # also when Ctrl-C comes before the server runs
        service.close()
    return 0


# ---------------------------------------------------------------- several runs: sweep, compare

def cmd_sweep(a: argparse.Namespace) -> int:
    """The table of trials, the importance and the best configuration (or JSON), then DIR as the last line."""
    from cnnkit import api
    from cnnkit.experiments.sweep_report import format_sweep

    result = api.sweep(a.space, trials=a.trials, out=a.out, sampler=a.sampler, pruner=a.pruner, metric=a.metric,
                       seed=a.seed)
    if a.json:
        print(json.dumps({"metric": result.metric, "direction": result.direction, "trials": result.rows,
                          "best": result.best, "importance": result.importance}, default=str))
    else:
        print(format_sweep(result))
    print(result.out)
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    """The side-by-side table (or JSON), then the page's path as the last line."""
    from cnnkit import api
    from cnnkit.diagnose.compare_runs import format_comparison

    result = api.compare_runs(a.runs, out=a.out)
    print(json.dumps(result) if a.json else format_comparison(result))
    if not a.json:
        print(result["files"]["html"])
    return 0


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train, "lr-find": cmd_lr_find, "demo": cmd_demo, "transfer": cmd_transfer_compare,
    "evaluate": cmd_evaluate, "test": cmd_test, "predict": cmd_predict, "export": cmd_export, "embed": cmd_embed,
    "report": cmd_report, "audit": cmd_audit,
    "models": cmd_models, "inspect": cmd_inspect, "prune": cmd_prune, "diagnose": cmd_diagnose,
    "convert": cmd_convert, "augment-preview": cmd_augment_preview, "bench": cmd_bench,
    "serve": cmd_serve, "sweep": cmd_sweep, "compare": cmd_compare,
}


def run(a: argparse.Namespace) -> int:
    """Run the verb of parsed arguments `a`; its exit code."""
    return VERBS[a.verb](a)
