"""The package version, importable without torch: `from cnnkit.version import __version__`."""
__version__ = "0.1.0"
