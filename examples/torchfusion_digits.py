"""TorchFusion's training tutorial (seed 001) redone with kiln, on scikit-learn's digits.

The TorchFusion tutorial trains a fully connected network on MNIST with its `StandardModel`,
then shows a learning-rate function, the logging options and a custom trainer. This script does
the same on the 8x8 digits that ship with scikit-learn (nothing is downloaded):

1. The data: pixels scaled to [-1, 1], 80% to train, 20% to test, in batches of 64.
2. The network: Flatten, three hidden layers of 100 units with ReLU, 10 outputs; its summary
   (`trainer.summary`: layers, shapes, parameters, multiply-adds).
3. Training with Adam and cross-entropy for 20 epochs, top-1 and top-2 accuracy on both sets
   (`metrics=["top1", "top2"]`), a learning rate given per epoch by a plain function
   (`LRScheduler(EpochFunction(lr_schedule))`), the model after every epoch in `all_models/`,
   after each improvement of the test top-1 accuracy in `best_models/` (`Checkpoint`), the
   epoch lines appended to `logs.txt` (`TextLog`) and a figure per value at the end
   (`TrainingPlot(per_metric=True)`, with TorchFusion's file names); then the best model
   loaded back from its file.
4. The same training with a custom step: a `Trainer` subclass that overrides `training_step`
   (TorchFusion's `BaseModel` with `__train_func__`); the loop, the optimizer, the metrics and
   the callbacks stay kiln's. It reaches exactly the same weights.

Everything it saves goes into the directory given as the first argument, or a new temporary
directory (printed at the start). It runs in about 10 seconds on two CPU cores:

    python examples/torchfusion_digits.py [OUTPUT_DIRECTORY]
"""

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import kiln
from kiln.callbacks import Checkpoint, LRScheduler, TextLog, TrainingPlot
from kiln.checkpoint import load_weights
from kiln.optim import EpochFunction

EPOCHS = 20


def digits_data() -> tuple[kiln.Data, kiln.Data]:
    """The digits as (N, 1, 8, 8) images in [-1, 1] with their labels, split 80/20."""
    digits = load_digits()
    # Pixels are 0..16: to [0, 1], then normalised with mean 0.5 and deviation 0.5 as in the
    # tutorial's transforms.Normalize, which gives [-1, 1].
    X = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    X = (X - 0.5) / 0.5
    Y = torch.tensor(digits.target, dtype=torch.long)
    train, test = kiln.split((X, Y), 0.8, 0.2, seed=0)
    # A torch DataLoader works as well; kiln.Data slices in-memory tensors without a Python
    # loop over samples, and reshuffles the training set at every epoch.
    return kiln.Data(train, batch_size=64, shuffle=True), kiln.Data(test, batch_size=64)


def make_net() -> nn.Module:
    """The tutorial's fully connected network, for 8x8 inputs instead of 28x28."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 100),
        nn.ReLU(),
        nn.Linear(100, 100),
        nn.ReLU(),
        nn.Linear(100, 100),
        nn.ReLU(),
        nn.Linear(100, 10),  # one score per digit; the loss applies the softmax
    )


def lr_schedule(epoch: int) -> float:
    """The learning rate to use after the epoch numbered `epoch` (counted from 0).

    As in TorchFusion, kiln calls it when an epoch ends and the next epoch runs at the rate it
    returns (the first epoch runs at the optimizer's 0.001). The tutorial's steps at epochs
    30/60/90 are moved to 10/15 to fit a 20-epoch run: epochs 1-11 (as printed, from 1) run at
    0.001, 12-16 at 0.0001, 17-20 at 0.00001.
    """
    lr = 0.001
    if epoch >= 15:
        lr /= 100
    elif epoch >= 10:
        lr /= 10
    return lr


class StandardTrainer(kiln.Trainer):
    """TorchFusion's custom trainer: only the logic of one batch is ours.

    `training_step` receives a batch and returns the loss; kiln then runs backward and the
    optimizer step, and updates the metrics from "output" and "target". Validation uses the
    same step without gradients, and `predict` the model's output, unless overridden too.
    """

    def training_step(self, batch, batch_idx):
        """The loss of one batch, with the outputs and targets the metrics read."""
        x, y = batch
        outputs = self.model(x)
        loss = F.cross_entropy(outputs, y)
        return {"loss": loss, "output": outputs, "target": y}


def main() -> None:
    torch.set_num_threads(1)  # a small network: more threads only add overhead
    kiln.seed_everything(0)  # reproducible weights and data order (drawn by kiln.Data)
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="kiln_fusion_"))
    print(f"output directory: {out}")
    train, test = digits_data()
    print(f"digits: {train.num_samples} train, {test.num_samples} test images")

    # 1. The standard way: the network, an optimizer, a loss, metrics and callbacks.
    net = make_net()
    initial_weights = {key: value.clone() for key, value in net.state_dict().items()}
    model_dir = out / "digits_mlp_saved_models"
    best_saver = Checkpoint(
        model_dir / "best_models/model_{epoch0}.pth", monitor="val_top1", save_best_only=True
    )
    trainer = kiln.Trainer(
        net,
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(net.parameters(), lr=0.001),
        # Top-1 and top-2 accuracy on the training data, and on the test data as val_top1/2.
        metrics=["top1", "top2"],
        callbacks=[
            LRScheduler(EpochFunction(lr_schedule)),
            # TorchFusion's model_dir: every epoch's model, and the model at each new best
            # test top-1 accuracy ({epoch} counts from 1).
            Checkpoint(model_dir / "all_models/model_{epoch0}.pth"),
            best_saver,
            TextLog(model_dir / "logs.txt"),  # save_logs: the epoch lines, appended
            # save_metrics: one figure per value, TorchFusion's file names, after the last epoch
            TrainingPlot(period=EPOCHS, file=None, directory=model_dir, per_metric=True),
        ],
    )
    print(trainer.summary((1, 8, 8)))
    history = trainer.fit(train, val=test, epochs=EPOCHS)

    print(f"learning rate per epoch: {' '.join(f'{lr:g}' for lr in history.lr)}")
    all_models = sorted((model_dir / "all_models").glob("*.pth"))
    best_models = sorted((model_dir / "best_models").glob("*.pth"))
    log_lines = (model_dir / "logs.txt").read_text().splitlines()
    print(
        f"saved: {len(all_models)} in all_models, {len(best_models)} in best_models, "
        f"{len(log_lines)} lines in logs.txt"
    )
    print(f"test top-1 accuracy: {100 * history.val_top1[-1]:.2f}%")
    print(f"test top-2 accuracy: {100 * history.val_top2[-1]:.2f}%")

    # A model file holds {"epoch": ..., "logs": ..., "model": state_dict}: load the best one.
    saved = torch.load(best_saver.best_path, weights_only=True)
    best_net = make_net()
    best_net.load_state_dict(load_weights(best_saver.best_path))
    best = kiln.Trainer(best_net, "cross_entropy", optimizer=None, metrics=["top1"], progress=False)
    print(
        f"best model, epoch {saved['epoch']}: test top-1 accuracy "
        f"{100 * best.evaluate(test).top1:.2f}%"
    )

    # 2. The same training with our own step. The same initial weights (copied), the same data
    #    order (the same kiln.Data, whose order depends on the epoch), the same arithmetic: the
    #    weights come out identical.
    net2 = make_net()
    net2.load_state_dict(initial_weights)
    custom = StandardTrainer(
        net2,
        optimizer=torch.optim.Adam(net2.parameters(), lr=0.001),
        metrics=["top1", "top2"],
        callbacks=[LRScheduler(EpochFunction(lr_schedule))],
        progress=False,
    )
    custom_history = custom.fit(train, val=test, epochs=EPOCHS)
    same = all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters(), strict=True))
    print(
        f"custom step: test top-1 accuracy {100 * custom_history.val_top1[-1]:.2f}%, "
        f"same weights as the standard trainer: {same}"
    )
    predictions = custom.predict(test).argmax(dim=1)  # the model's output, batch by batch
    print(f"custom step predicts {predictions.shape[0]} test digits")


if __name__ == "__main__":
    main()
