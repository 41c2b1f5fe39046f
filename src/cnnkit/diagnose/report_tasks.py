"""The task-specific sections of report.html: confusion matrix and top losses, Grad-CAM (classification),
IoU per class and the worst images (segmentation), precision/recall, errors and drawn boxes (detection and
instance segmentation). Which of them a report holds is the caller's choice (the run's recipe)."""
from __future__ import annotations

from pathlib import Path

import torch

from cnnkit.diagnose.report_page import RunInfo, figure, note, table

ERROR_KINDS = {  # error_breakdown's totals, in the order shown, and what each means
    "true_positive": "right class, IoU ≥ 0.5 with an unmatched true box",
    "duplicate": "right class and place, but the true box was already matched",
    "wrong_class": "IoU ≥ 0.5 with a true box of another class",
    "mislocalised": "right class, 0.1 ≤ IoU < 0.5",
    "wrong_class_and_mislocalised": "another class, 0.1 ≤ IoU < 0.5",
    "background": "IoU < 0.1 with every true box",
    "ignored": "on a crowd region",
    "missed": "true boxes no detection overlaps (IoU ≥ 0.1)",
    "not_found": "true boxes without a true positive (missed ones included)",
}


def classification_section(run: RunInfo) -> str:
    from cnnkit.diagnose.classification import classification_analysis

    a = classification_analysis(run.path, run.plots, split="val")
    paths = a["paths"]
    per_class = [[c, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support")]
                 for c, m in a["per_class"].items()]
    top_k = ", ".join(f"top-{k} {acc:.4f}" for k, acc in a["top_k_accuracy"].items())
    return (note(f"on the val split ({a.get('count', '?')} images): {top_k}; expected calibration error "
                 f"{a['ece']:.4f}")
            + '<div class="row">'
            + figure(paths["confusion"], "confusion matrix (counts): rows true class, columns predicted")
            + figure(paths["confusion_normalized"], "confusion matrix, each row normalised to 1") + "</div>"
            + '<div class="row">'
            + table(["class", "precision", "recall", "F1", "support"], per_class, html_id="per-class")
            + figure(paths["reliability"], "reliability diagram: confidence against accuracy per bin") + "</div>"
            + "<h3>Top losses</h3>" + figure(paths["top_losses"], "the most confidently wrong val images"))


def gradcam_section(run: RunInfo) -> str:
    from cnnkit.diagnose.gradcam import plot_gradcam

    path = plot_gradcam(run.path, run.plots / "gradcam.png", split="val", n=8)
    return figure(path, "Grad-CAM: where the last conv layer's evidence for the predicted class lies (val images)")


def segmentation_section(run: RunInfo) -> str:
    from cnnkit.diagnose.segmentation import segmentation_analysis

    a = segmentation_analysis(run.path, run.plots, split="val")
    s = a["scores"]
    rows = [[c, iou, dice, acc] for c, iou, dice, acc in
            zip(run.card.classes, s["per_class_iou"], s["per_class_dice"], s["per_class_accuracy"])]
    worst = "; ".join(f"{Path(w['path']).name} {w['miou']:.3f}" if w["miou"] is not None else Path(w["path"]).name
                      for w in a["worst"])
    return (note(f"on the val split ({a['count']} images, every non-ignored pixel): mIoU {s['miou']:.4f}, pixel "
                 f"accuracy {s['pixel_accuracy']:.4f}, frequency-weighted IoU {s['fw_iou']:.4f}")
            + '<div class="row">'
            + figure(a["paths"]["confusion_normalized"], "pixel confusion matrix, each row normalised to 1")
            + table(["class", "IoU", "Dice", "accuracy"], rows, html_id="per-class-iou") + "</div>"
            + "<h3>Worst images</h3>"
            + figure(a["paths"]["worst"], f"the val images of lowest mIoU ({worst}): the image, its labels, the "
                                          "prediction", pixels=True))


def label_overlays(run: RunInfo, size: int, n: int = 8) -> Path:
    """plots/train_labels.png: up to `n` training images of a segmentation run, each beside its label overlay."""
    from torchvision.utils import save_image

    from cnnkit.data.segmentation.draw import overlay, palette_of
    from cnnkit.data.segmentation.loader import fit_image
    from cnnkit.data.segmentation.source import open_segmentation_source

    source = open_segmentation_source(run.config.get("data", {}).get("source", ""))
    pictures = []
    for i in run.record["splits"]["train"][:n]:
        image, mask = source.read(int(i))  # uint8 (3, H, W), int64 (H, W)
        image = fit_image(image, size)
        mask = fit_image(mask[None].to(torch.uint8), size, nearest=True)[0]
        pictures += [image, overlay(image, mask, palette_of(run.card))]
    path = run.plots / "train_labels.png"
    width = max(p.shape[-1] for p in pictures)
    height = max(p.shape[-2] for p in pictures)
    padded = torch.zeros(len(pictures), 3, height, width, dtype=torch.uint8)
    for k, p in enumerate(pictures):
        padded[k, :, :p.shape[-2], :p.shape[-1]] = p
    save_image(padded.float() / 255.0, path, nrow=4, padding=2)
    return path


def _ap(value: float | None) -> float | None:
    """COCO's -1 (undefined: no true box of the class) shown as a dash."""
    return None if value is None or value < 0 else value


def _detection_tables(a: dict) -> tuple[str, str]:
    """(per-class AP table, error breakdown table) of a detection_analysis."""
    masks = a["problem"] == "instance"
    header = ["class", "AP", "AP50", "AP75"] + (["mask AP", "mask AP50", "mask AP75"] if masks else [])
    keys = ["ap", "ap50", "ap75"] + (["mask_ap", "mask_ap50", "mask_ap75"] if masks else [])
    per_class = table(header, [[name] + [_ap(ap.get(k)) for k in keys] for name, ap in a["per_class"].items()],
                      html_id="per-class-ap")
    errors = a["errors"]
    rows = [["detections", "of score ≥ 0.5", errors.get("detections")],
            ["true boxes", "not crowd regions", errors.get("ground_truths")]]
    rows += [[kind.replace("_", " "), meaning, errors[kind]] for kind, meaning in ERROR_KINDS.items() if kind in errors]
    return per_class, table(["", "meaning", "count"], rows, html_id="detection-errors", numeric_from=2)


def detection_section(run: RunInfo) -> str:
    """COCO metrics of the val split, the precision/recall curves, AP per class, the error breakdown and a grid
    of val images with the predicted boxes (red) over the true ones (green)."""
    from cnnkit.diagnose.detection import SHOWN_SCORE, detection_analysis

    a = detection_analysis(run.path, run.plots, split="val")
    m = a["metrics"]
    headline = f"box mAP {m['map']:.4f}, mAP50 {m['map50']:.4f}, mAP75 {m['map75']:.4f}"
    if a["problem"] == "instance":
        headline = f"mask mAP {m['mask_map']:.4f}, mask mAP50 {m['mask_map50']:.4f}; " + headline
    per_class, errors = _detection_tables(a)
    curves = figure(a["paths"]["pr_curves"], "box precision/recall per class at IoU 0.5")
    if "mask_pr_curves" in a["paths"]:
        curves += figure(a["paths"]["mask_pr_curves"], "mask precision/recall per class at IoU 0.5")
    return (note(f"on the val split ({a['count']} images, COCO's rules): {headline}")
            + f'<div class="row">{curves}{per_class}</div>'
            + "<h3>Errors</h3>" + note("each detection of score ≥ 0.5 gets one label (after Hoiem et al. 2012 and "
                                       "TIDE); the true boxes are counted apart") + errors
            + "<h3>Detections</h3>"
            + figure(a["paths"]["detections"], f"the first val images: true boxes green, predicted boxes red (score "
                                               f"≥ {SHOWN_SCORE:g}, class and score written)", pixels=True))
