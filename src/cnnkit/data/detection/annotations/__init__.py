"""Detection annotation formats: one module per format (coco, voc, yolo, pennfudan), the shared item types
(source.py) and the checks of bad annotations (validate.py). Use them through `cnnkit.data.detection.source`."""
