"""The hooks the Trainer calls (Keras', minGPT's short list): every callback subclasses `Callback`."""
from __future__ import annotations

from typing import Any

Trainer = Any  # a cnnkit.engine.trainer.Trainer, which imports this module (so this one cannot import it back)


class Callback:
    """Override any hook. `all_ranks = False` callbacks run on DDP rank 0 only (the ones that write)."""

    all_ranks = False

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def on_train_batch_end(self, trainer: Trainer) -> None: ...
    def on_validation_end(self, trainer: Trainer, logs: dict) -> None: ...
    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None: ...
    def on_fit_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...
