"""cnnkit: train, diagnose and use convolutional neural networks on images."""
__version__ = "0.1.0"
