"""`kiln fit`, `kiln predict` and `kiln evaluate` on small tables, run through `cli.main`."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import kiln
from kiln.cli import main
from kiln.tables.model import build_loss
from kiln.tables.read import read_table
from kiln.tables.recipe import TableSchedule
from kiln.tables.spec import TableSpec
from tests.helpers import SimulatedCrashError

datasets = pytest.importorskip("sklearn.datasets")
QUICK = ["--epochs", "4", "--hidden", "16", "--lr", "0.03", "--quiet", "--device", "cpu"]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    return rows[0], rows[1:]


def sklearn_csv(path: Path, loader, target_names=None) -> Path:
    data = loader()
    header = [name.replace(" ", "_") for name in data.feature_names] + ["target"]
    target = data.target if target_names is None else np.array(target_names)[data.target]
    rows = [[*map(float, x), y] for x, y in zip(data.data, target, strict=True)]
    return write_csv(path, header, rows)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory) -> Path:
    return sklearn_csv(tmp_path_factory.mktemp("data") / "cancer.csv", datasets.load_breast_cancer)


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory) -> Path:
    return sklearn_csv(tmp_path_factory.mktemp("data") / "diabetes.csv", datasets.load_diabetes)


def fails(argv: list[str], capsys) -> str:
    """Run the command, which must fail cleanly: status 2, one `kiln: error:` line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith("kiln: error: ")
    return captured.err


def test_fit_predict_evaluate_binary(cancer, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(cancer), "--target", "target", "--out", str(run), *QUICK]) == 0
    shown = capsys.readouterr().out
    assert "Trained 4 epochs on 455 rows, validated on 114." in shown
    assert "target  data   accuracy  log_loss  auc" in shown
    assert f"model  {run / 'model.kiln'}" in shown
    for name in ("model.kiln", "table.json", "summary.json", "log.tsv", "last.ckpt"):
        assert (run / name).is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["val"]["target"]["accuracy"] > 0.8
    assert summary["epochs"] == 4

    assert main(["predict", str(run), str(cancer), "-o", str(tmp_path / "p.csv")]) == 0
    assert "Wrote 569 predictions" in capsys.readouterr().out
    header, rows = read_csv(tmp_path / "p.csv")
    assert header == ["target", "target_proba_0", "target_proba_1"]
    predicted = np.array([row[0] for row in rows])
    probabilities = np.array([[float(row[1]), float(row[2])] for row in rows])
    assert set(predicted) == {"0", "1"}
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-6)
    truth = datasets.load_breast_cancer().target.astype(str)

    assert main(["evaluate", str(run), str(cancer), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["target"]
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == truth))
    assert main(["evaluate", str(run), str(cancer)]) == 0
    assert "target  cancer.csv  " in capsys.readouterr().out

    # The model file is an ordinary kiln trainer file, with the best epoch's weights.
    spec = TableSpec.load(run / "table.json")
    loaded = kiln.load(run / "model.kiln", loss=build_loss(spec), device="cpu", progress=False)
    inputs = torch.from_numpy(spec.encode_features(read_table(cancer)))
    assert torch.equal(loaded.predict(inputs)[:, 0], torch.from_numpy(probabilities[:, 1]).float())
    assert 1 <= summary["best_epoch"] <= summary["epochs"] == 4


def test_regression_predictions_are_in_the_original_units(diabetes, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(diabetes), "-t", "target", "-o", str(run), *QUICK]) == 0
    assert main(["predict", str(run), str(diabetes), "-o", str(tmp_path / "p.csv")]) == 0
    header, rows = read_csv(tmp_path / "p.csv")
    assert header == ["target"]
    predicted = np.array([float(row[0]) for row in rows])
    truth = datasets.load_diabetes().target
    assert abs(predicted.mean() - truth.mean()) < 30  # unscaled: the mean is about 152
    capsys.readouterr()
    assert main(["evaluate", str(run), str(diabetes), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["target"]
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - truth) ** 2)))
    assert metrics["r2"] > 0.0


def mixed_table(path: Path) -> Path:
    """Breast cancer with text labels, a wide text column, missing cells and two targets."""
    data = datasets.load_breast_cancer()
    rng = np.random.default_rng(0)
    rows = []
    for i, (x, y) in enumerate(zip(data.data[:, :6], data.target, strict=True)):
        radius = "" if i % 7 == 0 else float(x[0])
        label = "" if i % 11 == 0 else ["malignant", "benign"][y]
        rows.append([f"id{i}", radius, *map(float, x[1:5]), f"city{rng.integers(30)}", x[5], label])
    header = ["id", "radius", "texture", "perimeter", "area", "smooth", "city", "compact", "diag"]
    return write_csv(path, header, rows)


def test_text_labels_embeddings_missing_cells_and_two_targets(tmp_path, capsys):
    data = mixed_table(tmp_path / "mixed.csv")
    run = tmp_path / "run"
    argv = ["fit", str(data), "-t", "compact", "-t", "diag", "--ignore", "id", "-o", str(run)]
    assert main([*argv, *QUICK]) == 0
    spec = json.loads((run / "table.json").read_text())
    kinds = {c["name"]: c["kind"] for c in spec["features"]}
    assert kinds["city"] == "categorical"
    assert [c["kind"] for c in spec["features"] if c["name"] == "city"] == ["categorical"]
    assert next(c for c in spec["features"] if c["name"] == "city")["encoding"] == "embedding"
    assert next(c for c in spec["features"] if c["name"] == "radius")["indicator"] is True
    assert [(c["name"], c["kind"]) for c in spec["targets"]] == [
        ("compact", "regression"),
        ("diag", "binary"),
    ]
    assert main(["predict", str(run), str(data), "-o", str(tmp_path / "p.csv")]) == 0
    header, rows = read_csv(tmp_path / "p.csv")
    assert header == ["compact", "diag", "diag_proba_benign", "diag_proba_malignant"]
    assert {row[1] for row in rows} <= {"benign", "malignant"}
    capsys.readouterr()
    assert main(["evaluate", str(run), str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"compact", "diag"}


def test_multiclass_text_labels(tmp_path, capsys):
    data = sklearn_csv(tmp_path / "iris.csv", datasets.load_iris, ["setosa", "versi", "virgi"])
    run = tmp_path / "run"
    assert main(["fit", str(data), "-t", "target", "-o", str(run), *QUICK]) == 0
    assert main(["predict", str(run), str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("target,target_proba_setosa,target_proba_versi,target_proba_virgi")
    assert len(lines) - start - 1 == 150


def without_time(path: Path) -> list[list[str]]:
    header, rows = read_csv_tsv(path)
    keep = [i for i, name in enumerate(header) if name != "time"]
    return [[row[i] for i in keep] for row in rows]


def read_csv_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    return lines[0], lines[1:]


def test_resume_continues_the_run_exactly(diabetes, tmp_path, monkeypatch):
    base = ["fit", str(diabetes), "-t", "target", "--hidden", "8", "-q", "--device", "cpu"]
    assert main([*base, "--epochs", "4", "-o", str(tmp_path / "whole")]) == 0

    schedule = TableSchedule.on_train_batch_start

    def crashing(self, trainer):  # the process dies in the second epoch (2 steps a pass)
        if trainer.state.step == 3:
            raise SimulatedCrashError("killed")
        schedule(self, trainer)

    monkeypatch.setattr(TableSchedule, "on_train_batch_start", crashing)
    with pytest.raises(SimulatedCrashError):
        main([*base, "--epochs", "4", "-o", str(tmp_path / "part")])
    monkeypatch.undo()
    assert main([*base, "-o", str(tmp_path / "part"), "--resume"]) == 0  # its saved 4 epochs
    assert without_time(tmp_path / "part" / "log.tsv") == without_time(
        tmp_path / "whole" / "log.tsv"
    )
    whole = torch.load(tmp_path / "whole" / "model.kiln", weights_only=True)
    part = torch.load(tmp_path / "part" / "model.kiln", weights_only=True)
    for key, value in whole["trainer"]["model"].items():
        assert torch.equal(value, part["trainer"]["model"][key]), key


def test_resume_builds_the_network_the_run_was_training(diabetes, tmp_path, monkeypatch, capsys):
    base = ["fit", str(diabetes), "-t", "target", "--hidden", "8", "-q", "--device", "cpu"]
    schedule = TableSchedule.on_train_batch_start

    def crashing(self, trainer):
        if trainer.state.step == 3:
            raise SimulatedCrashError("killed")
        schedule(self, trainer)

    run = tmp_path / "part"
    monkeypatch.setattr(TableSchedule, "on_train_batch_start", crashing)
    with pytest.raises(SimulatedCrashError):
        main([*base, "--members", "1", "--bins", "0", "--epochs", "4", "-o", str(run)])
    monkeypatch.undo()
    record = json.loads((run / "table.json").read_text())
    assert record["network"] == {"activation": "silu"}  # regression
    assert record["options"]["members"] == 1
    assert record["options"]["bins"] == 0
    # as a kiln before these records wrote it: one network without piecewise-linear
    # embeddings, and regression used Mish then
    del record["network"], record["options"]["members"], record["options"]["bins"]
    (run / "table.json").write_text(json.dumps(record))
    assert main([*base, "-o", str(run), "--resume"]) == 0  # the default --members, --bins not taken
    saved = torch.load(run / "model.kiln", weights_only=True)
    assert saved["recipe"]["kwargs"]["activation"] == "mish"
    assert "members" not in saved["recipe"]["kwargs"]
    assert "bins" not in saved["recipe"]["kwargs"]
    resumed = json.loads((run / "table.json").read_text())
    assert resumed["network"] == {"activation": "mish"}
    assert resumed["options"]["members"] == 1
    assert resumed["options"]["bins"] == 0

    record["network"] = {"activation": "relu?"}
    (run / "table.json").write_text(json.dumps(record))
    assert main([*base, "-o", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiln: error: ")
    assert "names no known activation" in err
    assert len(err.strip().splitlines()) == 1


def test_an_ensemble_run_saves_its_members_and_predicts(cancer, tmp_path, capsys):
    run = tmp_path / "run"
    quick = ["--epochs", "2", "--hidden", "8", "-q", "--device", "cpu"]
    assert main(["fit", str(cancer), "-t", "target", "-o", str(run), "--members", "3", *quick]) == 0
    spec = TableSpec.from_dict(json.loads((run / "table.json").read_text()))
    trainer = kiln.load(run / "model.kiln", loss=build_loss(spec), device="cpu", progress=False)
    assert trainer.model.members == 3
    # per numeric column: its value and 3 periodic outputs (no piecewise-linear ones: binary)
    assert trainer.model.layers[0].weight.shape == (3, spec.dense_width + 3 * 30, 8)
    assert trainer.model.piecewise is None
    out = tmp_path / "p.csv"
    assert main(["predict", str(run), str(cancer), "-o", str(out)]) == 0
    header, rows = read_csv(out)
    for row in rows:
        total = sum(float(row[i]) for i, name in enumerate(header) if "_proba_" in name)
        assert total == pytest.approx(1.0, abs=1e-5)
    err = fails(["fit", str(cancer), "-t", "target", "-o", str(tmp_path / "b"), "--members", "0",
                 *quick], capsys)  # fmt: skip
    assert "--members must be a positive integer; received 0" in err
    err = fails(["fit", str(cancer), "-t", "target", "-o", str(tmp_path / "c"), "--bins", "-1",
                 *quick], capsys)  # fmt: skip
    assert "--bins must be a non-negative integer; received -1" in err


def test_a_regression_run_embeds_numbers_piecewise_with_bins_fitted_and_saved(diabetes, tmp_path):
    quick = ["-t", "target", "--epochs", "2", "--hidden", "8", "-q", "--device", "cpu"]
    run = tmp_path / "run"
    assert main(["fit", str(diabetes), "-o", str(run), *quick]) == 0
    assert json.loads((run / "table.json").read_text())["options"]["bins"] == 16  # the default
    saved = torch.load(run / "model.kiln", weights_only=True)
    assert saved["recipe"]["kwargs"]["bins"] == 16
    spec = TableSpec.from_dict(json.loads((run / "table.json").read_text()))
    trainer = kiln.load(run / "model.kiln", loss=build_loss(spec), device="cpu", progress=False)
    edges = trainer.model.piecewise.edges
    assert edges.shape == (10, 17)  # 10 numeric columns, 16 bins between 17 quantiles
    torch.testing.assert_close(edges, saved["trainer"]["model"]["piecewise.edges"])
    assert not torch.equal(edges[0], edges[2])  # each column's own quantiles
    # per numeric column: its value, 3 periodic and 3 piecewise-linear outputs
    assert (
        trainer.model.layers[0].weight.shape[1] == spec.dense_width + 6 * 10
    )  # (members, in, out)
    assert main(["predict", str(run), str(diabetes), "-o", str(tmp_path / "p.csv")]) == 0
    without = tmp_path / "without"
    assert main(["fit", str(diabetes), "-o", str(without), "--bins", "0", *quick]) == 0
    assert json.loads((without / "table.json").read_text())["options"]["bins"] == 0
    assert "bins" not in torch.load(without / "model.kiln", weights_only=True)["recipe"]["kwargs"]


# ----- bad tables: one clear line, never a traceback ---------------------------------------------


def test_missing_target_column_lists_the_columns(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", ["a", "b"], [[1, 2]])
    err = fails(["fit", str(data), "--target", "c", *QUICK], capsys)
    assert err == f"kiln: error: Target column 'c' not found in {data}. Its columns are: a, b.\n"


def test_empty_file(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("")
    err = fails(["fit", str(tmp_path / "d.csv"), "--target", "y"], capsys)
    assert "d.csv is empty: expected a header row naming the columns" in err


def test_target_that_is_all_missing(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1.5, ""], [2.5, "NA"]])
    err = fails(["fit", str(data), "--target", "y", *QUICK], capsys)
    assert "Target column 'y' of " in err
    assert "has no values: all 2 cells are missing" in err


def test_column_mixing_numbers_and_text(tmp_path, capsys):
    rows = [[0.5, "3"], [1.5, "4"], [2.5, "lots"], [3.5, "5"]]
    data = write_csv(tmp_path / "d.csv", ["y", "count"], rows)
    err = fails(["fit", str(data), "--target", "y", *QUICK], capsys)
    assert "Column 'count' of " in err
    assert "mixes numbers and text: numbers such as '3', '4', '5', and text such as 'lots'" in err


def test_prediction_columns_must_match_the_training_columns(cancer, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(cancer), "--target", "target", "--out", str(run), *QUICK]) == 0
    header, rows = read_csv(cancer)
    renamed = ["radius" if name == "mean_radius" else name for name in header]
    other = write_csv(tmp_path / "other.csv", [*renamed, "extra"], [[*r, 1] for r in rows[:5]])
    err = fails(["predict", str(run), str(other)], capsys)
    assert err == (
        f"kiln: error: The columns of {other} do not match the training columns: missing "
        "'mean_radius'; not seen in training 'radius', 'extra'.\n"
    )
    no_target = write_csv(tmp_path / "x.csv", header[:-1], [rows[0][:-1]])
    err = fails(["evaluate", str(run), str(no_target)], capsys)
    assert "Target column 'target' not found in" in err
    err = fails(["fit", str(cancer), "--target", "target", "--out", str(run), *QUICK], capsys)
    assert f"{run} already holds a run. Continue it with --resume" in err
    err = fails(["fit", str(cancer), "-t", "mean_area", "-o", str(run), "--resume", *QUICK], capsys)
    assert "was trained for the target(s) target; received mean_area. Resume with the same" in err


def test_other_expected_errors(tmp_path, capsys):
    err = fails(["fit", str(tmp_path / "none.csv"), "--target", "y"], capsys)
    assert err == f"kiln: error: No such file: {tmp_path / 'none.csv'}\n"
    data = write_csv(tmp_path / "d.csv", ["x", "y"], [[1.5, 2.5]])
    err = fails(["fit", str(data), "--target", "y", "--kind", "x"], capsys)
    assert "--kind takes COLUMN=KIND, such as --kind zip=categorical; received 'x'" in err
    err = fails(["fit", str(data), "--target", "y", "--val", "2"], capsys)
    assert "--val must be in (0, 1)" in err
    err = fails(["predict", str(tmp_path), str(data)], capsys)
    assert f"{tmp_path} is not a finished `kiln fit` run" in err


@pytest.mark.slow
def test_installed_command_fits_and_predicts(cancer, tmp_path):
    command = Path(sys.executable).with_name("kiln")
    run = tmp_path / "run"
    fit = [str(command), "fit", str(cancer), "-t", "target", "-o", str(run), *QUICK]
    subprocess.run(fit, check=True, capture_output=True, text=True)
    result = subprocess.run(
        [str(command), "predict", str(run), str(cancer)], check=True, capture_output=True, text=True
    )
    assert result.stdout.startswith("target,target_proba_0,target_proba_1\n")
    bad = subprocess.run([str(command), "predict", str(run), str(tmp_path / "no.csv")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("kiln: error: No such file")


# ----- hostile tables and damaged runs: one line, status 2, or a run that works ---------------


def labelled_table(path: Path, labels: list[str]) -> Path:
    """60 rows: a feature `x` that tells the label, and the label column `y` as written."""
    rows = [[i % len(labels) + 0.1 * (i % 3), labels[i % len(labels)]] for i in range(60)]
    return write_csv(path, ["x", "y"], rows)


@pytest.mark.parametrize(
    ("labels", "kind", "expected"),
    [
        ([str(i) for i in range(1, 11)], [], [str(i) for i in range(1, 11)]),  # 10 after 9
        (["1", "2", "10"], ["--kind", "y=multiclass"], ["1", "2", "10"]),
        (
            ["0.5", "1.50", "2.5", "10.25"],
            ["--kind", "y=multiclass"],
            ["0.5", "1.5", "2.5", "10.25"],
        ),
        (["b", "a", "c"], [], ["a", "b", "c"]),
        (["1", "x", "2.0", "10"], ["--kind", "y=multiclass"], ["1", "10", "2", "x"]),
        (["18446744073709551616", "18446744073709551617", "-3"], [], None),
    ],
    ids=["ints-1-to-10", "ints-given-kind", "floats", "text", "mixed", "beyond-int64"],
)
def test_class_labels_of_every_type_fit_predict_and_evaluate(
    labels, kind, expected, tmp_path, capsys
):
    data, run = labelled_table(tmp_path / "d.csv", labels), tmp_path / "run"
    assert main(["fit", str(data), "-t", "y", "-o", str(run), *kind, *QUICK]) == 0
    saved = json.loads((run / "table.json").read_text())["targets"][0]["labels"]
    assert saved == (expected or ["-3", "18446744073709551616", "18446744073709551617"])
    assert main(["predict", str(run), str(data), "-o", str(tmp_path / "p.csv")]) == 0
    header, rows = read_csv(tmp_path / "p.csv")
    assert header == ["y", *(f"y_proba_{label}" for label in saved)]
    assert {row[0] for row in rows} <= set(saved)
    capsys.readouterr()
    assert main(["evaluate", str(run), str(data), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["y"]["accuracy"] <= 1


def test_integers_beyond_int64_stay_distinct_features(tmp_path):
    big = ["100000000000000000000", "100000000000000000001", "100000000000000000002"]
    rows = [[big[i % 3], i % 3 + 0.5, i % 2] for i in range(30)]
    data, run = write_csv(tmp_path / "d.csv", ["c", "x", "y"], rows), tmp_path / "run"
    assert main(["fit", str(data), "-t", "y", "-o", str(run), *QUICK]) == 0
    features = json.loads((run / "table.json").read_text())["features"]
    assert features[0] == {
        "name": "c", "kind": "categorical", "vocabulary": big, "encoding": "onehot", "dim": 4
    }  # fmt: skip


def hostile_file(kind: str, path: Path) -> tuple[Path, str]:
    """A file a stranger might pass as a table, and what the error must say about it."""
    if kind == "latin-1":
        path.write_bytes("city,y\nZürich,1\nCafé,0\n".encode("latin-1"))
        return path, f"{path} is not UTF-8 text: line 2 has the byte 0xfc after 'Z'"
    if kind == "xlsx":
        path.write_bytes(b"PK\x03\x04" + bytes(200))
        return path, f"{path} is a ZIP archive (an Excel .xlsx workbook?), not UTF-8 CSV text"
    if kind == "utf-16":
        path.write_text("x,y\n1,2\n", encoding="utf-16")
        return path, f"{path} is UTF-16 text, not UTF-8 CSV text. Save the table as CSV UTF-8"
    if kind == "binary":
        path.write_bytes(b"x,y\n1,\x00\x01\x02\n")
        return path, f"{path} is a binary file (it holds NUL bytes), not UTF-8 CSV text"
    if kind == "huge-cell":
        path.write_text("x,y\n" + "1," + "w" * 200_000 + "\n")
        return path, f"{path}, line 2: not readable as CSV (field larger than field limit"
    path.write_bytes(b"PAR1 not really")  # "parquet": a damaged Parquet file
    return path, f"{path} is not a readable Parquet file ("


@pytest.mark.parametrize("kind", ["latin-1", "xlsx", "utf-16", "binary", "huge-cell", "parquet"])
def test_hostile_tables_are_refused_in_one_line_naming_the_file(kind, tmp_path, capsys):
    if kind == "parquet":
        pytest.importorskip("pyarrow")
    name = "d.parquet" if kind == "parquet" else "d.csv"
    data, message = hostile_file(kind, tmp_path / name)
    err = fails(["fit", str(data), "--target", "y", *QUICK], capsys)
    assert err.startswith(f"kiln: error: {message}")
    assert err.count("\n") == 1
    if kind == "latin-1":
        assert "Save it as UTF-8" in err
        assert "iconv -f cp1252 -t utf-8 d.csv > d-utf8.csv" in err


def test_a_long_text_cell_trains_with_memory_in_proportion_to_the_file(tmp_path, capsys):
    """One 20,000-character cell among 30,000 rows: 0.3 MB; a fixed-width array took 7 GiB."""
    rows = [[i % 97 / 10, "w" * 20_000 if i == 5 else f"k{i % 7}", i % 3] for i in range(30_000)]
    data = write_csv(tmp_path / "d.csv", ["x", "t", "y"], rows)
    size = data.stat().st_size
    tracemalloc.start()
    try:
        table = read_table(data)
        spec = TableSpec.infer(table, ["y"])
        spec.encode_features(table), spec.encode_targets(table)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * size, f"reading and encoding took {peak / size:.0f}x the file's size"
    run = tmp_path / "run"
    argv = ["fit", str(data), "-t", "y", "-o", str(run), "--batch-size", "4096", *QUICK]
    assert main([*argv, "--epochs", "1"]) == 0
    assert main(["predict", str(run), str(data), "-o", str(tmp_path / "p.csv")]) == 0


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """A small finished run, and its table (copy the run before damaging it)."""
    folder = tmp_path_factory.mktemp("run")
    data = labelled_table(folder / "d.csv", ["a", "b"])
    argv = ["fit", str(data), "-t", "y", "-o", str(folder / "run"), "--drop", "0.1", *QUICK]
    assert main(argv) == 0
    assert main(["predict", str(folder / "run"), str(data), "-o", str(folder / "p.csv")]) == 0
    return folder / "run", data


def damage(run: Path, how: str) -> tuple[Path, str]:
    """Damage one file of `run` as `how` says; return the file and what the error must say."""
    spec, model = run / "table.json", run / "model.kiln"
    if how == "spec-not-json":
        spec.write_bytes(b"\xff\xfe{")
        return spec, "is not valid JSON"
    if how.startswith("spec"):
        data = json.loads(spec.read_text())
        if how == "spec-without-features":
            del data["features"]
        elif how == "spec-without-labels":
            del data["targets"][0]["labels"]
        else:  # spec-bad-options
            data["options"] = "fast"
        spec.write_text(json.dumps(data))
        return spec, {
            "spec-without-features": "is damaged: it has no 'features' list (found None)",
            "spec-without-labels": "is damaged: the binary column 'y' has no valid 'labels'",
            "spec-bad-options": "is damaged: its 'options' are not those `kiln fit` writes",
        }[how]
    if how == "model-empty":
        model.write_bytes(b"")
    elif how == "model-truncated":
        model.write_bytes(model.read_bytes()[:1000])
    else:  # model-from-another-run: a model with other inputs beside this run's spec
        other = kiln.Trainer(kiln.MLP(5, [16, 16], 1), loss="bce_with_logits", device="cpu")
        other.save(model)
        return model, f"does not fit {spec}: 0.bias (shape (16,)) is not a weight of the spec"
    return model, "damaged"


@pytest.mark.parametrize(
    "how",
    [
        "spec-without-features",
        "spec-without-labels",
        "spec-bad-options",
        "spec-not-json",
        "model-empty",
        "model-truncated",
        "model-from-another-run",
    ],
)
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_damaged_run_files_are_refused_in_one_line_naming_the_file(
    how, command, finished_run, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    path, message = damage(run, how)
    err = fails([command, str(run), str(finished_run[1])], capsys)
    assert err.count("\n") == 1
    assert str(path) in err
    assert message in err


@pytest.mark.slow
def test_installed_command_refuses_hostile_files_in_one_line(finished_run, tmp_path):
    """The way a stranger meets them: the installed `kiln`, stderr one line, status 2."""
    command = str(Path(sys.executable).with_name("kiln"))
    latin, _ = hostile_file("latin-1", tmp_path / "latin.csv")
    run = tmp_path / "run"
    shutil.copytree(finished_run[0], run)
    (run / "model.kiln").write_bytes(b"")
    for argv in (["fit", str(latin), "-t", "y"], ["predict", str(run), str(finished_run[1])]):
        result = subprocess.run([command, *argv], capture_output=True, text=True, check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("kiln: error: "), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
