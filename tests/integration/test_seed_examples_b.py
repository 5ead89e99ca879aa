"""The seed examples of PytorchTrainer and Poutyne run, and reach their key results (slow).

Each example runs in a subprocess, in a temporary working directory, writing into a temporary
output directory; the checks read both its output and the files it wrote. About 25 s in all.
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
    """Run `examples/{name} out` from inside `out` (so a stray relative file lands there)."""
    out.mkdir()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=out,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def number(pattern: str, out: str) -> float:
    found = re.search(pattern, out, re.MULTILINE)
    assert found, out
    return float(found.group(1))


def rows(path: Path, delimiter: str) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file, delimiter=delimiter))


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
