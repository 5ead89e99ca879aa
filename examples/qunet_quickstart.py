"""QuNet's quick start (seed 000) redone with kiln: a circle to learn, step by step.

The QuNet tutorial trains a small network to tell points inside a circle from points outside,
then adds, one section at a time, the things a training library should do for you. This script
follows its sections in order:

1. The toy data: 1200 points in the square [-1, 1]^2, labelled 1 inside the circle x^2 + y^2 <
   0.5; the first 80% train, the rest validate (`kiln.Data`, shuffled training batches).
2. A model that defines its own step: `training_step` returns `{"loss": ..., "score": ...}`,
   and kiln logs the score as `score` and `val_score`.
3. The trainer with QuNet's training figure every 100 epochs (`TrainingPlot`), and a callback
   of our own that draws the decision surface each time the figure is drawn (`on_plot`).
4. A learning-rate schedule: a linear warmup then a cosine decay (`WarmupCosine`).
5. The best models: kept in memory (`BestModels`) and written to disk on each improvement
   (`Checkpoint`, in QuNet's folder layout), then the model rolled back to the best score.

Everything it draws or saves goes into the directory given as the first argument, or a new
temporary directory (printed at the start). It runs in about 10 seconds on two CPU cores:

    python examples/qunet_quickstart.py [OUTPUT_DIRECTORY]
"""

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import kiln
from kiln.callbacks import BestModels, Checkpoint, TrainingPlot


def circle_data(n: int = 1200) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [-1, 1]^2 and their labels: 1.0 inside the circle of radius sqrt(0.5)."""
    X = 2 * torch.rand(n, 2) - 1
    Y = (X**2).sum(dim=1) < 0.5
    # Binary cross-entropy wants float targets of the output's shape (N, 1), not (N,).
    return X, Y.float().view(-1, 1)


class Model(nn.Module):
    """Two inputs, one hidden layer of 16 units, one output: the probability of 'inside'."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = kiln.MLP(input=2, hidden=[16], output=1, drop=0.1)
        self.loss = nn.BCELoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The probability that each point of the batch (B, 2) lies inside: (B, 1)."""
        return torch.sigmoid(self.mlp(x))

    def training_step(self, batch, batch_idx):
        """Called by the trainer on every training batch, and on validation batches too."""
        x, y_true = batch  # (B, 2), (B, 1)
        y_pred = self(x)
        loss = self.loss(y_pred, y_true)  # the value the optimizer minimizes
        accuracy = ((y_pred.detach() > 0.5) == y_true.bool()).float().mean()
        return {"loss": loss, "score": accuracy}  # kiln logs `score` and `val_score`


class DecisionSurface(kiln.Callback):
    """Draw the model's probability over the square, with the points, after each training plot.

    `TrainingPlot` draws its figure every `period` epochs and then calls `on_plot` on every
    callback (QuNet's `on_after_plot`). Figures are built with matplotlib's object API (no
    global `pyplot` state) and saved as `surface_epoch_{epoch}.png`.
    """

    def __init__(self, points: torch.Tensor, labels: torch.Tensor, directory: Path, size: int = 64):
        self.points, self.labels, self.directory, self.size = points, labels, directory, size
        self.files: list[Path] = []

    def on_plot(self, trainer: kiln.Trainer) -> None:
        """Draw the surface of the model as it is now, and save it."""
        from matplotlib.figure import Figure  # only needed when drawing

        model, epoch = trainer.model, trainer.state.epoch
        axis = torch.linspace(-1, 1, self.size)
        # Row i of the image is x2 = axis[i], column j is x1 = axis[j]: imshow's layout.
        x2, x1 = torch.meshgrid(axis, axis, indexing="ij")
        points = torch.stack([x1.flatten(), x2.flatten()], dim=1).to(trainer.device)
        was_training = model.training
        model.eval()  # no dropout while drawing
        with torch.no_grad():
            surface = model(points).view(self.size, self.size).cpu()
        model.train(was_training)

        figure = Figure(figsize=(4, 4))
        ax = figure.subplots()
        ax.imshow(surface, cmap="bwr", origin="lower", extent=(-1, 1, -1, 1), alpha=0.5)
        ax.scatter(self.points[:, 0], self.points[:, 1], c=self.labels[:, 0], s=3, cmap="bwr")
        ax.set_title(f"epoch {epoch}: val_score {trainer.state.logs['val_score']:.3f}")
        path = self.directory / f"surface_epoch_{epoch}.png"
        figure.savefig(path, dpi=80)
        self.files.append(path)
        print(f"epoch {epoch}: val_score {trainer.state.logs['val_score']:.4f}, drew {path.name}")


def draw_data(points: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    """The points in feature space, coloured by class (the tutorial's first figure)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 4))
    ax = figure.subplots()
    ax.scatter(points[:, 0], points[:, 1], c=labels[:, 0], s=3, cmap="bwr")
    ax.grid(ls=":")
    figure.savefig(path, dpi=80)


def main() -> None:
    torch.set_num_threads(1)  # a tiny model: more threads only add overhead
    kiln.seed_everything(0)  # the data, the weights, dropout and the shuffling are reproducible
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="kiln_qunet_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"output directory: {out}")

    # 1. The toy dataset.
    X, Y = circle_data(1200)
    draw_data(X, Y, out / "data.png")
    n_trn = int(len(X) * 0.8)
    data_trn = kiln.Data((X[:n_trn], Y[:n_trn]), batch_size=128, shuffle=True)
    data_val = kiln.Data((X[n_trn:], Y[n_trn:]), batch_size=256)

    # 2. The model, which computes its own loss and score.
    model = Model()

    # 3. The trainer: QuNet's training figure every 100 epochs, our surface after each one.
    #    The model's step computes the loss, so the trainer needs only the optimizer.
    surface = DecisionSurface(X, Y, out)
    trainer = kiln.Trainer(
        model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4),
        callbacks=[TrainingPlot(period=100, directory=out), surface],
        progress=False,  # 500 summary lines would bury the tutorial's output
    )
    trainer.fit(data_trn, val=data_val, epochs=200)

    # 4. A schedule: from 1e-4, warm up linearly to 1e-2 over 50 epochs, then fall along a
    #    cosine to 1e-3 at epoch 200 of the schedule (the length includes the warmup).
    trainer.schedules.set(
        kiln.optim.WarmupCosine(lr1=1e-4, lr_hot=1e-2, lr2=1e-3, epochs=200, warmup=50)
    )
    trainer.fit(data_trn, val=data_val, epochs=200)  # epochs 201-400: the counter carries on

    # 5. The best models: in memory by validation loss and score, and on disk as files in QuNet's
    #    folders (`log/loss`, `log/score`), a new file at each improvement, prefixed "01".
    best = BestModels(loss="val_loss", score="val_score")
    best_loss_files = Checkpoint(
        out / "log/loss/01epoch_{epoch:04d}_loss_{val_loss:.4f}.pt",
        monitor="val_loss",
        save_best_only=True,
    )
    best_score_files = Checkpoint(
        out / "log/score/01epoch_{epoch:04d}_score_{val_score:.4f}.pt",
        monitor="val_score",
        save_best_only=True,
    )
    trainer.callbacks = [*trainer.callbacks, best, best_loss_files, best_score_files]
    history = trainer.fit(data_trn, val=data_val, epochs=100)

    print(f"best val_loss {best.loss:.4f} at epoch {best.loss_epoch}")
    print(f"best val_score {best.score:.4f} at epoch {best.score_epoch}")
    torch.save(best.score_weights, out / "best_score.pt")  # QuNet's trainer.save(...) of it
    best.restore(trainer, "score")  # roll back to the best-score epoch
    rolled_back = trainer.evaluate(data_val)
    print(f"learning rate: {history.lr[200]:.1e} at epoch 201, {history.lr[-1]:.1e} at the end")
    print(
        f"files: {len(best_loss_files.saved)} in log/loss, {len(best_score_files.saved)} in "
        f"log/score, {len(surface.files)} surfaces, training.png"
    )
    print(f"rolled back to epoch {best.score_epoch}")
    print(f"validation score: {100 * rolled_back.score:.2f}%")


if __name__ == "__main__":
    main()
