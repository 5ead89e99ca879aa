"""PyBlaze's "Training a Classifier" guide (seed 003) redone with kiln, on scikit-learn's digits.

The PyBlaze guide trains PyTorch's tutorial CNN on CIFAR-10 with the model as its own
estimator. This script follows it step by step on the 8x8 digits that ship with scikit-learn
(nothing is downloaded), enlarged to 3x32x32 so that the CNN is exactly the guide's:

1. The data as torch datasets: 20% of the images held out for testing, then the rest split
   randomly by fractions, 80% to train and 20% to validate (`kiln.split(dataset, 0.8, 0.2)`),
   and data loaders for each (`kiln.loader`), larger batches where no gradients are kept.
2. The model: `class Model(kiln.Estimator, nn.Module)` gives the network `fit`, `evaluate` and
   `predict` methods; the network itself is plain PyTorch.
3. Training: at most 20 epochs with Adam and cross-entropy, the accuracy measured on the
   validation data after every epoch, and early stopping when the validation loss has not
   improved for 3 epochs (`EarlyStopping`). A summary line per epoch is printed.
4. The history plotted: the loss of every batch, and the per-epoch curves (`history.plot()`).
5. The evaluation on the test data: `model.evaluate(...)` returns the accuracy.

Figures go into the directory given as the first argument, or a new temporary directory
(printed at the start). It runs in about 15 seconds on two CPU cores:

    python examples/pyblaze_estimator.py [OUTPUT_DIRECTORY]
"""

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn, optim
from torch.utils.data import TensorDataset

import kiln
from kiln.callbacks import EarlyStopping


def digits_datasets() -> tuple[TensorDataset, TensorDataset]:
    """The digits as 3x32x32 images in [0, 1] with their labels: (train and validation, test)."""
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # N,1,8,8
    # Enlarged 4x and repeated over three colour channels: the shape of a CIFAR-10 image.
    images = F.interpolate(images, size=(32, 32), mode="bilinear").expand(-1, 3, -1, -1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    # CIFAR-10 comes as two sets; the digits are one, so a fixed fifth is set aside for testing.
    train_val, test = kiln.split((images.contiguous(), labels), 0.8, 0.2, seed=1)
    return TensorDataset(*train_val), TensorDataset(*test)


class Model(kiln.Estimator, nn.Module):
    """PyTorch's tutorial CNN; `kiln.Estimator` adds `fit`, `evaluate` and `predict`."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of the 10 classes for a batch of 3x32x32 images."""
        x = self.pool(F.relu(self.conv1(x)))  # 6 x 14 x 14
        x = self.pool(F.relu(self.conv2(x)))  # 16 x 5 x 5
        x = x.view(-1, 400)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def draw_batch_losses(losses: list[float], path: Path) -> None:
    """The training loss of every batch, across epochs (PyBlaze's `micro_train_loss`)."""
    from matplotlib.figure import Figure  # only needed when drawing

    figure = Figure(figsize=(6, 4), dpi=100)
    ax = figure.subplots()
    ax.plot(range(len(losses)), losses)
    ax.set_xlabel("batch")
    ax.set_ylabel("training loss")
    figure.savefig(path)


def main() -> None:
    torch.set_num_threads(1)  # a small network: more threads only add overhead
    kiln.seed_everything(0)  # the weights and the loaders' shuffling are reproducible
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="kiln_pyblaze_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"output directory: {out}")

    # 1. Data: set aside 20% of the training data for validation, chosen at random.
    train_val_dataset, test_dataset = digits_datasets()
    train_dataset, val_dataset = kiln.split(train_val_dataset, 0.8, 0.2)  # torch Subsets
    # The guide's 256 suits CIFAR's 40,000 training images; with 1,150, batches of 64 give the
    # optimizer enough steps per epoch.
    train_loader = kiln.loader(train_dataset, batch_size=64, shuffle=True)
    val_loader = kiln.loader(val_dataset, batch_size=2048)  # no gradients: large batches fit
    test_loader = kiln.loader(test_dataset, batch_size=2048)
    print(
        f"digits: {len(train_dataset)} train, {len(val_dataset)} validation, "
        f"{len(test_dataset)} test images"
    )

    # 2. The model is its own estimator.
    model = Model()

    # 3. Training, validated after every epoch, stopped early when the validation loss stalls.
    history = model.fit(
        train_loader,
        val=val_loader,
        epochs=20,
        optimizer=optim.Adam(model.parameters()),
        loss=nn.CrossEntropyLoss(),
        metrics=["accuracy"],
        # As in the guide, the model keeps its last weights; restore_best=True would roll
        # back to the best epoch's.
        callbacks=[EarlyStopping("val_loss", patience=3)],
    )
    print(f"trained {len(history)} epochs; history: {', '.join(history.keys())}")

    # 4. The history: every batch's loss, then every logged value per epoch.
    draw_batch_losses(history.batch_losses, out / "batch_losses.png")
    history.plot(["loss", "accuracy"]).savefig(out / "history.png")
    print(f"saved batch_losses.png and history.png; final val_loss {history.val_loss[-1]:.4f}")

    # 5. Evaluation on the test data.
    evaluation = model.evaluate(test_loader, metrics=["accuracy"])
    print(f"Our model achieves an accuracy of {evaluation.accuracy:.2%}.")
    print(f"test accuracy: {100 * evaluation.accuracy:.2f}%")


if __name__ == "__main__":
    main()
