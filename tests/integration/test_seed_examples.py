"""The seeds' tutorials and examples redone with kiln (`examples/`) run and reach their results.

QuNet's quick start, TorchFusion's digits, PyBlaze's estimator, PytorchTrainer's mixed targets
and Poutyne's introduction (slow). Each example runs in a subprocess, as a user would run it,
from inside a temporary output directory (so a stray relative file lands there); the checks read
the key results it prints and the files it writes.
"""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, out: Path) -> str:
    """Run `examples/{name} out` from inside `out`, made if missing; return what it printed."""
    out.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=out,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def number(pattern: str, text: str) -> float:
    """The number captured by `pattern` in a line of `text` (the whole line must match)."""
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no line matches {pattern!r} in:\n{text}"
    return float(found.group(1))


def rows(path: Path, delimiter: str) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file, delimiter=delimiter))


@pytest.mark.slow
def test_qunet_quickstart_example(tmp_path):
    """The circle is learnt; surfaces after each plot, the schedule and the best models work."""
    out = run_example("qunet_quickstart.py", tmp_path)
    assert number(r"^validation score: (\d+\.\d\d)%$", out) >= 97.0
    assert number(r"^best val_score (\d\.\d+) at epoch \d+$", out) >= 0.97
    # The training figure every 100 epochs, and the callback's surface after each (on_plot).
    for epoch in (100, 200, 300, 400, 500):
        assert f"epoch {epoch}: val_score " in out, out
        assert (tmp_path / f"surface_epoch_{epoch}.png").stat().st_size > 0
    assert (tmp_path / "training.png").stat().st_size > 0
    assert (tmp_path / "data.png").stat().st_size > 0
    # The warmup starts at lr1 when the schedule is set, and the cosine ends at lr2.
    assert "learning rate: 1.0e-04 at epoch 201, 1.0e-03 at the end" in out
    # The best models on disk, in QuNet's folders, with the epoch and value in the name.
    loss_files = sorted((tmp_path / "log" / "loss").glob("01epoch_*_loss_*.pt"))
    score_files = sorted((tmp_path / "log" / "score").glob("01epoch_*_score_*.pt"))
    assert loss_files
    assert score_files
    assert f"files: {len(loss_files)} in log/loss, {len(score_files)} in log/score" in out
    best_epoch = int(number(r"^rolled back to epoch (\d+)$", out))
    assert score_files[-1].name.startswith(f"01epoch_{best_epoch:04d}_score_")
    assert (tmp_path / "best_score.pt").stat().st_size > 0


@pytest.mark.slow
def test_torchfusion_digits_example(tmp_path):
    """The MLP reaches 95% top-1; the schedule, model folders and log are TorchFusion's."""
    out = run_example("torchfusion_digits.py", tmp_path)
    assert "Total params: 27,710" in out  # the summary of the 64-100-100-100-10 network
    assert number(r"^test top-1 accuracy: (\d+\.\d\d)%$", out) >= 95.0
    assert number(r"^test top-2 accuracy: (\d+\.\d\d)%$", out) >= 98.0
    assert number(r"^best model, epoch \d+: test top-1 accuracy (\d+\.\d\d)%$", out) >= 95.0
    # lr_schedule(epoch) sets the rate of the epoch after `epoch` (0-based): 11 epochs at 1e-3.
    rates = "0.001 " * 11 + "0.0001 " * 5 + "1e-05 " * 3 + "1e-05"
    assert f"learning rate per epoch: {rates}\n" in out
    model_dir = tmp_path / "digits_mlp_saved_models"
    all_models = {path.name for path in (model_dir / "all_models").iterdir()}
    assert all_models == {f"model_{epoch}.pth" for epoch in range(20)}  # 0-based, as TorchFusion
    best_models = list((model_dir / "best_models").glob("model_*.pth"))
    assert 1 <= len(best_models) <= 20
    assert len((model_dir / "logs.txt").read_text().splitlines()) == 20
    assert (model_dir / "epoch_19_loss.png").exists()
    assert (model_dir / "test_top2_epoch_19.png").exists()
    # The custom step trains to exactly the same weights as the standard trainer.
    assert re.search(r"same weights as the standard trainer: True$", out, re.MULTILINE), out
    assert "custom step predicts 359 test digits" in out


@pytest.mark.slow
def test_pyblaze_estimator_example(tmp_path):
    """The CNN estimator stops early, draws its history and reaches 90% on the test data."""
    out = run_example("pyblaze_estimator.py", tmp_path)
    assert "digits: 1150 train, 288 validation, 359 test images" in out
    assert re.search(r"^Stopped after epoch \d+: early stopping", out, re.MULTILINE), out
    epochs = int(number(r"^trained (\d+) epochs", out))
    assert 4 <= epochs < 20
    accuracy = number(r"^test accuracy: (\d+\.\d\d)%$", out)
    assert accuracy >= 90.0
    assert f"Our model achieves an accuracy of {accuracy:.2f}%." in out
    assert (tmp_path / "history.png").stat().st_size > 0
    assert (tmp_path / "batch_losses.png").stat().st_size > 0


@pytest.mark.slow
def test_pytorch_trainer_example_guesses_the_columns_and_predicts_both(tmp_path: Path) -> None:
    out = tmp_path / "out"
    text = run_example("pytorch_trainer_mixed.py", out)
    # The dataset has no `regression_flags`: they are guessed, and the scale computed.
    assert "MESSAGE: Regression flags: [1, 0]" in text
    assert re.search(r"^MESSAGE: Got constants: \[", text, re.MULTILINE), text
    assert "MixedCriterion(kinds=['regression', 'binary'])" in text
    assert re.search(r"^MESSAGE: name: .*diabetes_mixed / train score: ", text, re.MULTILINE)
    assert f"stop_diabetes_mixed in {out}" in text
    # The best network and, with n_best_nets=5, the averaged one.
    assert sorted(path.name for path in out.iterdir()) == [
        "diabetes_mixed.pt",
        "diabetes_mixed_avg.pt",
    ]
    for which in ("best", "averaged"):
        assert number(rf"^{which}: test R2 \(progression\): (-?\d+\.\d+)$", text) >= 0.5
        balanced = number(rf"^{which}: test balanced accuracy \(progression > 200\): (\S+)$", text)
        assert balanced >= 0.72  # a constant answer scores 0.5
    predictions = re.findall(
        r"^predicted progression +(\d+\.\d) \(true +\d+\.\d\), P\(high\) (\d\.\d\d) \(true [01]\)$",
        text,
        re.MULTILINE,
    )
    assert len(predictions) == 3, text
    assert all(25 <= float(value) <= 346 and 0 <= float(p) <= 1 for value, p in predictions)


@pytest.mark.slow
def test_poutyne_example_matches_the_hand_written_loop_and_resumes_to_ten_epochs(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    text = run_example("poutyne_intro.py", out)

    # 1-2. The kiln version ends with the hand-written loop's weights, for both networks.
    assert "fc: same final weights: True" in text
    assert "conv: same final weights: True" in text
    for name in ("fc", "conv"):
        assert number(rf"^{name}: test loss and accuracy differ by (\S+)$", text) < 1e-6

    # 3. Callbacks: the last weights, only the last best file, a CSV row per epoch.
    folder = out / "fc"
    log = rows(folder / "log.csv", ",")
    assert [row["epoch"] for row in log] == ["1", "2", "3", "4", "5"]
    accuracies = [float(row["val_acc"]) for row in log]
    best_epoch = accuracies.index(max(accuracies)) + 1
    assert sorted(path.name for path in folder.iterdir()) == [
        f"best_epoch_{best_epoch}.ckpt",
        "last_epoch.ckpt",
        "log.csv",
    ]
    assert f"Restoring data from {folder / f'best_epoch_{best_epoch}.ckpt'}" in text
    weights = torch.load(folder / "last_epoch.ckpt", weights_only=True)
    assert weights["epoch"] == 5

    # 4. The experiment directory: 5 epochs, then resumed to 10 (not restarted).
    directory = out / "conv_net_experiment"
    assert re.search(r"^Epoch 6/10 ", text, re.MULTILINE), text
    assert not re.search(r"^Epoch [1-5]/10 ", text, re.MULTILINE), text
    log = rows(directory / "log.tsv", "\t")
    assert [row["epoch"] for row in log] == [str(epoch) for epoch in range(1, 11)]
    assert "log.tsv: 10 rows, epochs [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" in text
    (tested,) = rows(directory / "test_log.tsv", "\t")
    best = max(log, key=lambda row: float(row["val_accuracy"]))
    assert tested["epoch"] == best["epoch"]
    assert float(tested["test_accuracy"]) >= 0.9
    assert (directory / "last.ckpt").is_file()
    assert (directory / "best" / f"epoch_{best['epoch']}.ckpt").is_file()
    assert "  test_log.tsv  (" in text  # the listing ends the output
