"""Test-only pieces that runs started as subprocesses load by name (tests/ on PYTHONPATH)."""

import os
import signal
from pathlib import Path

import lightning as L


class SignalAtStep(L.Callback):
    """Sends this process `signal` once optimizer step `step` is done: a preemption at a
    known point of the run, with the real signal path."""

    def __init__(self, step: int, signal: str = "SIGUSR1") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


def wandb_records(run_file) -> tuple[dict, list[dict]]:
    """The config and the history rows of an offline W&B run, read from its `.wandb` file
    (a LevelDB-style log of protobuf records: 7-byte file header, 32 KiB blocks, each record
    chunk behind a 7-byte crc/length/type header). wandb >= 0.19 ships no Python reader."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    assert data[:4] == b":W&B", run_file
    records, chunk, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # no room for a header: the rest of the block is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            records.append(chunk)
            chunk = b""
        elif kind == 0:
            break
    config, history = {}, []

    def key(item) -> str:
        return item.key or ".".join(item.nested_key)

    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            history.append({key(i): json.loads(i.value_json) for i in record.history.item})
    return config, history
