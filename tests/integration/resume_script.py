"""A training script that can be killed (SIGKILL) at a chosen moment, for the resume tests.

Usage: python resume_script.py DIR EPOCHS, with KILL_AT=step:N (die after optimizer step N) or
KILL_AT=write:N (die in the middle of writing the N-th `last.ckpt` of this process). Every run
resumes the run saved in DIR; the last one writes DIR/result.pt with the weights and history.
With LOGGERS=<MLflow tracking URI>, the run also has a `TextLog`, a `CSVLogger(append=True)`
and an `MLflowLogger` instead of the mid-epoch saves (so that the first `last.ckpt` is written
after the first epoch's rows).
"""

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

import kiln

KIND, _, NUMBER = os.environ.get("KILL_AT", "none:0").partition(":")
KILL_AT = int(NUMBER or 0)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(kiln.Callback):
    def on_fit_start(self, trainer: kiln.Trainer) -> None:
        print(f"starting at step {trainer.state.step}", flush=True)

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        if KIND == "step" and trainer.state.step == KILL_AT:
            die()


def die_while_writing() -> None:
    """Make the KILL_AT-th write of `last.ckpt` in this process die halfway through the file.

    Other files (the directory's best weights) are written as usual.
    """
    real_save, writes = torch.save, []

    def dying_save(obj, file, *args, **kwargs):
        writes.append("last.ckpt" in getattr(file, "name", ""))
        if writes[-1] and sum(writes) == KILL_AT:
            file.write(b"half a checkpoint")
            file.flush()
            die()
        return real_save(obj, file, *args, **kwargs)

    torch.save = dying_save


def main() -> None:
    torch.set_num_threads(1)
    if KIND == "write":
        die_while_writing()
    directory, epochs = Path(sys.argv[1]), int(sys.argv[2])
    kiln.seed_everything(0)
    X = torch.randn(256, 8)
    Y = (X[:, :2].sum(1) > 0).long()
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    callbacks: list[kiln.Callback] = [
        KillAtStep(),
        kiln.callbacks.EarlyStopping("val_loss", patience=50),
        kiln.callbacks.StepCheckpoint(every_n_steps=4),  # mid-epoch saves
    ]
    if os.environ.get("LOGGERS"):
        from kiln.callbacks.mlflow_logger import MLflowLogger

        callbacks[2:] = [
            kiln.callbacks.TextLog("log.txt"),
            kiln.callbacks.CSVLogger("log.csv", append=True),
            MLflowLogger(tracking_uri=os.environ["LOGGERS"]),
        ]
    trainer = kiln.Trainer(
        net,
        loss="cross_entropy",
        metrics=["accuracy"],
        callbacks=callbacks,
        dir=directory,
        device="cpu",
        progress=False,
    )
    data = kiln.Data((X, Y), batch_size=32, shuffle=True)
    history = trainer.fit(data, val=0.25, epochs=epochs, resume=True)
    rows = [{k: v for k, v in row.items() if k != "time"} for row in history.epochs]
    torch.save(
        {"weights": net.state_dict(), "history": rows, "batch_losses": history.batch_losses},
        directory / "result.pt",
    )


if __name__ == "__main__":
    main()
