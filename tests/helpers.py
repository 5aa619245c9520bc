"""Test-only pieces that runs started as subprocesses load by name (tests/ on PYTHONPATH)."""

import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    """Sends this process `signal` once optimizer step `step` is done: a preemption at a
    known point of the run, with the real signal path."""

    def __init__(self, step: int, signal: str = "SIGUSR1") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))
