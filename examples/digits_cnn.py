"""Train a small CNN on scikit-learn's handwritten digits with kiln.

What it shows: a stratified train/validation/test split with `kiln.split`, a `kiln.Trainer`
with a named loss, optimizer and metric, early stopping that restores the best epoch's
weights, the live progress bar and per-epoch summary lines, and a final test evaluation.

The data (1797 grayscale 8x8 images, 10 classes) ships with scikit-learn, so nothing is
downloaded. Run it from the repository root with

    make demo            # or: python examples/digits_cnn.py

It takes a few seconds on a laptop CPU and exits non-zero if the test accuracy falls below 97%,
so CI catches regressions.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

import kiln

MIN_TEST_ACCURACY = 0.97


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, one 2x2 pooling, then a linear classifier over 10 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            # Padding keeps the 8x8 size: the images are too small to lose their border.
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 64 x 4 x 4
            nn.Flatten(),
            nn.Dropout(0.3),  # 1,257 training images: regularize the dense layer
            nn.Linear(64 * 4 * 4, 10),  # logits; the cross-entropy loss applies the softmax
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def main() -> None:
    kiln.seed_everything(0)  # weights, dropout and the shuffling order are reproducible

    digits = load_digits()
    # Pixels are 0..16; scale them to [0, 1] and add the channel axis Conv2d expects.
    X = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    Y = torch.tensor(digits.target, dtype=torch.long)
    # Stratified: each split keeps the ten classes in the same proportions.
    train, val, test = kiln.split((X, Y), 0.7, 0.15, 0.15, seed=0, stratify=Y)

    net = DigitsCNN()
    params = sum(p.numel() for p in net.parameters())
    print(f"digits: {len(train[0])} train, {len(val[0])} validation, {len(test[0])} test images")
    print(f"model: {params:,} parameters")

    # Stop once validation accuracy has not improved for 8 epochs, and keep the best weights.
    stopper = kiln.callbacks.EarlyStopping("val_accuracy", patience=8, restore_best=True)
    trainer = kiln.Trainer(
        net, loss="cross_entropy", optimizer="adamw", lr=3e-3, metrics=["accuracy"],
        callbacks=[stopper],
    )
    trainer.fit(
        kiln.Data(train, batch_size=32, shuffle=True),
        val=kiln.Data(val, batch_size=256),
        epochs=60,
    )

    best = trainer.history.val_accuracy[stopper.best_epoch - 1]
    print(f"best val_accuracy {best:.4f} at epoch {stopper.best_epoch} (weights restored)")
    accuracy = trainer.evaluate(kiln.Data(test, batch_size=256)).accuracy
    print(f"test accuracy: {100 * accuracy:.2f}%")
    if accuracy < MIN_TEST_ACCURACY:
        raise SystemExit(f"test accuracy {accuracy:.2%} is below {MIN_TEST_ACCURACY:.0%}")


if __name__ == "__main__":
    main()
