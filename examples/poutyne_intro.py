"""Poutyne's introduction (seed 004) redone with kiln, on scikit-learn's digits.

The seed trains a fully-connected and a convolutional network on MNIST four ways; this script
follows it section by section on the 8x8 digits that ship with scikit-learn (no download):

1. **The PyTorch way**: the seed's hand-written loop (`pytorch_train`), as it is.
2. **The kiln way**: the same training in three lines (`kiln_train`). Both see the same
   batches from the same initial weights, so they end with the same weights, bit for bit: the
   script checks it for both networks.
3. **Callbacks**: the last weights, the best weights by validation accuracy (a file per
   improvement, only the last kept, reloaded at the end) and a CSV log (`train_with_callbacks`).
4. **The experiment directory** (Poutyne's `ModelBundle`): `kiln.Trainer(..., task=
   "classification", dir=...)` trains 5 epochs; the same function called again with
   `epochs=10` resumes from the directory and goes on to epoch 10; `trainer.test` evaluates
   the best checkpoint and writes `test_log.tsv`. The directory's listing ends the output.

Differences from the seed, on purpose: digits instead of MNIST, so the networks take 1x8x8
inputs (same layers, smaller widths where the input shrinks); accuracy is a fraction (0-1),
kiln's unit, where Poutyne prints percent; the hand-written loop reports fractions too, so its
lines read like kiln's.

Run `python examples/poutyne_intro.py [OUTPUT_DIR]` (a temporary directory by default):
about 15 seconds on two CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import kiln
from kiln.callbacks import Checkpoint, CSVLogger

NUM_CLASSES = 10
BATCH_SIZE = 16
LEARNING_RATE = 0.1
NUM_EPOCHS = 5

Loader = DataLoader[tuple[torch.Tensor, ...]]


def load_data() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Digits as standardised 1x8x8 images: 64% train, 16% validation, 20% test."""
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    images = (images - images.mean()) / images.std()  # as MNIST's usual Normalize transform
    labels = torch.tensor(digits.target)
    parts = kiln.split((images, labels), 0.64, 0.16, 0.2, seed=42)
    train, valid, test = (TensorDataset(*part) for part in parts)
    return train, valid, test


TRAIN, VALID, TEST = load_data()


def loaders() -> tuple[Loader, Loader, Loader]:
    """Fresh DataLoaders: the training one shuffles in the same order at every call."""
    order = torch.Generator().manual_seed(42)
    train = DataLoader(TRAIN, batch_size=BATCH_SIZE, shuffle=True, generator=order)
    valid = DataLoader(VALID, batch_size=BATCH_SIZE)
    test = DataLoader(TEST, batch_size=BATCH_SIZE)
    return train, valid, test


def create_fully_connected_network() -> nn.Module:
    """Input -> [Linear -> ReLU]*3 -> Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(8 * 8, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


def create_convolutional_network() -> nn.Module:
    """Input -> [Conv -> ReLU -> MaxPool]*2 -> Dropout -> Linear -> ReLU -> Dropout -> Linear."""
    return nn.Sequential(
        nn.Conv2d(in_channels=1, out_channels=16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(in_channels=16, out_channels=32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, NUM_CLASSES),
    )


# 1. The PyTorch way: the seed's own loop.


def pytorch_accuracy(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """The fraction of a batch's predictions that are right."""
    return (y_pred.argmax(1) == y_true).float().mean()


def pytorch_train_one_epoch(
    network: nn.Module, loader: Loader, optimizer: torch.optim.Optimizer, loss_function: nn.Module
) -> tuple[float, float]:
    """One training pass over `loader`; return the epoch's mean loss and accuracy."""
    network.train(True)
    loss_sum = acc_sum = 0.0
    example_count = 0
    with torch.enable_grad():
        for x, y in loader:
            optimizer.zero_grad()
            y_pred = network(x)
            loss = loss_function(y_pred, y)
            loss.backward()
            optimizer.step()
            # Batch means weighted by the batch size, so that the epoch mean is exact.
            loss_sum += loss.item() * len(x)
            acc_sum += pytorch_accuracy(y_pred, y).item() * len(x)
            example_count += len(x)
    return loss_sum / example_count, acc_sum / example_count


def pytorch_test(
    network: nn.Module, loader: Loader, loss_function: nn.Module
) -> tuple[float, float]:
    """Evaluate on `loader`; return the mean loss and accuracy."""
    network.eval()
    loss_sum = acc_sum = 0.0
    example_count = 0
    with torch.no_grad():
        for x, y in loader:
            y_pred = network(x)
            loss = loss_function(y_pred, y)
            loss_sum += loss.item() * len(x)
            acc_sum += pytorch_accuracy(y_pred, y).item() * len(x)
            example_count += len(x)
    return loss_sum / example_count, acc_sum / example_count


def pytorch_train(network: nn.Module) -> tuple[float, float]:
    """Train `network` for NUM_EPOCHS epochs by hand; return the test loss and accuracy."""
    train_loader, valid_loader, test_loader = loaders()
    optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE)
    loss_function = nn.CrossEntropyLoss()
    for epoch in range(1, NUM_EPOCHS + 1):
        train_loss, train_acc = pytorch_train_one_epoch(
            network, train_loader, optimizer, loss_function
        )
        valid_loss, valid_acc = pytorch_test(network, valid_loader, loss_function)
        print(
            f"Epoch {epoch}/{NUM_EPOCHS}: loss: {train_loss:.4f}, acc: {train_acc:.4f}, "
            f"val_loss: {valid_loss:.4f}, val_acc: {valid_acc:.4f}"
        )
    test_loss, test_acc = pytorch_test(network, test_loader, loss_function)
    print(f"Test:\n\tLoss: {test_loss:.4f}\n\tAccuracy: {test_acc:.4f}")
    return test_loss, test_acc


# 2. The kiln way: the same training.


def kiln_train(network: nn.Module) -> tuple[float, float]:
    """Train `network` as `pytorch_train` does, with kiln; return the test loss and accuracy."""
    train_loader, valid_loader, test_loader = loaders()
    optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE)
    trainer = kiln.Trainer(network, optimizer=optimizer, loss="cross_entropy", metrics=["acc"])
    trainer.fit(train_loader, valid_loader, epochs=NUM_EPOCHS)
    test = trainer.evaluate(test_loader)
    print(f"Test:\n\tLoss: {test.loss:.4f}\n\tAccuracy: {test.acc:.4f}")
    return test.loss, test.acc


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two networks hold equal tensors, bit for bit."""
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def compare(name: str, create: Callable[[], nn.Module]) -> None:
    """Train two copies of a network, by hand and with kiln, from the same initial weights."""
    by_hand, with_kiln = create(), create()
    with_kiln.load_state_dict(by_hand.state_dict())
    print(f"\n== {name}: the PyTorch way ==")
    torch.manual_seed(1)  # the convolutional network's dropout draws from the global generator
    hand = pytorch_train(by_hand)
    print(f"\n== {name}: the kiln way ==")
    torch.manual_seed(1)
    ours = kiln_train(with_kiln)
    print(f"{name}: same final weights: {same_weights(by_hand, with_kiln)}")
    gap = max(abs(a - b) for a, b in zip(hand, ours, strict=True))
    # The weights are equal; the means may differ in the last digits, since kiln sums the
    # batch values in another order and precision than the Python floats of the loop above.
    print(f"{name}: test loss and accuracy differ by {gap:.1e}")


# 3. Callbacks.


def train_with_callbacks(name: str, network: nn.Module, out: Path) -> None:
    """`kiln_train` plus the last weights, the best weights and a CSV log in `out/name`."""
    save_path = out / name
    train_loader, valid_loader, test_loader = loaders()
    callbacks = [
        # The latest weights, to continue the optimization later.
        Checkpoint(save_path / "last_epoch.ckpt"),
        # A new file each time the validation accuracy improves; the older one is removed,
        # and the best weights are loaded back into the network at the end.
        Checkpoint(
            save_path / "best_epoch_{epoch}.ckpt",
            monitor="val_acc",
            mode="max",
            save_best_only=True,
            keep_only_last_best=True,
            restore_best=True,
            verbose=True,
        ),
        # One row per epoch.
        CSVLogger(save_path / "log.csv"),
    ]
    optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE)
    trainer = kiln.Trainer(
        network, optimizer=optimizer, loss="cross_entropy", metrics=["acc"], callbacks=callbacks
    )
    trainer.fit(train_loader, valid_loader, epochs=NUM_EPOCHS)
    test = trainer.evaluate(test_loader)  # with the restored best weights
    print(f"Test:\n\tLoss: {test.loss:.4f}\n\tAccuracy: {test.acc:.4f}")
    print(f"{name} files: {sorted(path.name for path in save_path.iterdir())}")


# 4. The experiment directory.


def train_experiment(network: nn.Module, directory: Path, epochs: int = NUM_EPOCHS) -> None:
    """Train in `directory` up to `epochs` in all (resuming what it holds), then test."""
    train_loader, valid_loader, test_loader = loaders()
    optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE)
    trainer = kiln.Trainer(network, optimizer=optimizer, task="classification", dir=directory)
    # `epochs` counts the whole run: with 5 epochs saved, epochs=10 trains epochs 6 to 10.
    # The first call finds nothing to resume and starts from scratch.
    trainer.fit(train_loader, valid_loader, epochs=epochs, resume=True)
    test = trainer.test(test_loader)  # the best checkpoint, by val_accuracy
    print(f"Test (best checkpoint):\n\tLoss: {test.loss:.4f}\n\tAccuracy: {test.accuracy:.4f}")


def listing(directory: Path) -> None:
    """Print every file under `directory` with its size."""
    print(f"\n{directory}:")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(directory)}  ({path.stat().st_size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: one thread is as fast, and polite on shared cores
    kiln.seed_everything(0)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        print(f"train/valid/test: {len(TRAIN)}/{len(VALID)}/{len(TEST)} digits; output in {out}")

        compare("fc", create_fully_connected_network)
        compare("conv", create_convolutional_network)

        print("\n== callbacks ==")
        train_with_callbacks("fc", create_fully_connected_network(), out)

        print("\n== experiment directory: 5 epochs ==")
        directory = out / "conv_net_experiment"
        train_experiment(create_convolutional_network(), directory)
        print("\n== experiment directory: resumed to 10 epochs ==")
        train_experiment(create_convolutional_network(), directory, epochs=10)
        rows = (directory / "log.tsv").read_text().splitlines()[1:]
        print(f"log.tsv: {len(rows)} rows, epochs {[int(row.split()[0]) for row in rows]}")
        listing(directory)


if __name__ == "__main__":
    main()
