"""Tables for `kiln fit`: reading, column kinds, encoding, the network and loss, metrics."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

import kiln
from kiln.losses import MixedCriterion
from kiln.tables.kinds import (
    CATEGORICAL_MAX_INTEGERS,
    ONE_HOT_MAX,
    embedding_dim,
    robust_scaling,
)
from kiln.tables.metrics import (
    classification_metrics,
    format_metrics,
    regression_metrics,
    roc_auc,
    write_csv,
)
from kiln.tables.model import TableNet, build_loss, build_model
from kiln.tables.read import (
    Table,
    TableError,
    as_labels,
    as_numbers,
    label_order,
    read_table,
)
from kiln.tables.spec import TableSpec
from kiln.tables.train import TableOptions, split_rows


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def table(**columns):
    values = {
        name: np.array(v, dtype=object)
        if any(isinstance(x, str) for x in v)
        else np.array(v, dtype=float)
        for name, v in columns.items()
    }
    return Table(list(columns), values, "memory")


# ----- reading ---------------------------------------------------------------------------------


def test_read_csv_strips_cells_skips_blank_lines_and_reads_missing_tokens(tmp_path):
    path = write(tmp_path, "\ufeffa, b ,c\n1, x ,NA\n\n2,,?\n3,y,null\n")
    t = read_table(path)
    assert t.columns == ["a", "b", "c"]
    assert len(t) == 3
    assert as_numbers(t, "a").tolist() == [1.0, 2.0, 3.0]
    assert as_labels(t, "b").tolist() == ["x", None, "y"]
    assert np.isnan(as_numbers(t, "c")).all()


def test_read_csv_quoted_commas(tmp_path):
    t = read_table(write(tmp_path, 'name,n\n"Smith, J",1\n'))
    assert as_labels(t, "name").tolist() == ["Smith, J"]


def test_empty_file_is_a_table_error(tmp_path):
    with pytest.raises(TableError, match=r"data\.csv is empty: expected a header row"):
        read_table(write(tmp_path, "\n\n"))


def test_header_without_rows_is_a_table_error(tmp_path):
    with pytest.raises(TableError, match=r"has a header \(a, b\) but no data rows"):
        read_table(write(tmp_path, "a,b\n"))


def test_ragged_row_names_its_line(tmp_path):
    with pytest.raises(TableError, match=r"line 3: 3 cells where the header has 2 \(1 such row\)"):
        read_table(write(tmp_path, "a,b\n1,2\n3,4,5\n"))


def test_repeated_and_empty_column_names(tmp_path):
    with pytest.raises(TableError, match="repeats the column name 'a'"):
        read_table(write(tmp_path, "a,b,a\n1,2,3\n"))
    with pytest.raises(TableError, match="column 2 of the header has no name"):
        read_table(write(tmp_path, "a,,c\n1,2,3\n"))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(TableError, match="is a directory; expected a CSV or Parquet file"):
        read_table(tmp_path)


def test_parquet_without_pyarrow_says_how_to_fix(tmp_path, monkeypatch):
    real = importlib.import_module

    def no_pyarrow(name, *args):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_pyarrow)
    with pytest.raises(TableError, match=r"needs pyarrow, which is not installed: `pip install"):
        read_table(write(tmp_path, "", name="data.parquet"))


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "data.parquet"
    parquet.write_table(pa.table({"x": [1.5, None], "c": ["a", None], "i": [1, 2]}), path)
    t = read_table(path)
    assert np.isnan(as_numbers(t, "x")[1])
    assert as_labels(t, "c").tolist() == ["a", None]
    assert as_labels(t, "i").tolist() == ["1", "2"]


def test_mixed_column_names_it_and_shows_examples_of_each():
    t = table(age=["12", "40", "unknown", None, "n.a."])
    with pytest.raises(TableError) as error:
        as_numbers(t, "age")
    message = str(error.value)
    assert "Column 'age' of memory mixes numbers and text" in message
    assert "numbers such as '12', '40'" in message
    assert "text such as 'n.a.', 'unknown'" in message
    assert "--kind age=categorical" in message


def test_labels_of_numbers_are_canonical():
    t = table(n=["1", "1.0", "2.50", None])
    assert as_labels(t, "n").tolist() == ["1", "1", "2.5", None]


def test_a_number_is_one_label_however_written_and_in_any_column():
    floats = table(n=[1.0, 10.0, 2.5, -0.0, 1e20, 2.0**64, np.inf, np.nan])
    assert as_labels(floats, "n").tolist() == [
        "1", "10", "2.5", "0", "100000000000000000000", "18446744073709551616", None, None
    ]  # fmt: skip
    texts = table(n=["+01", "1.0", "1e0", "2.50", "18446744073709551617", "-0", "inf", "x", None])
    assert as_labels(texts, "n").tolist() == [
        "1", "1", "1", "2.5", "18446744073709551617", "0", None, "x", None
    ]  # fmt: skip


def test_label_order_is_by_value_for_numbers_and_as_text_otherwise():
    assert label_order(["10", "9", "-1", "2.5", "10"]) == ["-1", "2.5", "9", "10"]
    big = ["18446744073709551617", "18446744073709551616", "9"]
    assert label_order(big) == ["9", "18446744073709551616", "18446744073709551617"]
    assert label_order(["b", "10", "9", "a"]) == ["10", "9", "a", "b"]


def test_integers_beyond_float64_stay_distinct_labels_in_csv(tmp_path):
    big = ["100000000000000000000", "100000000000000000001", "100000000000000000002"]
    rows = "".join(f"{big[i % 3]},{big[i % 2]},{i}\n" for i in range(12))
    t = read_table(write(tmp_path, "c,y,x\n" + rows))
    assert t.values["c"].dtype == object  # kept as text: float64 would make them one number
    assert as_numbers(t, "c")[0] == 1e20
    spec = TableSpec.infer(t, ["y"])
    assert spec.features[0]["vocabulary"] == big
    assert spec.targets[0] == {"name": "y", "kind": "binary", "labels": big[:2]}
    np.testing.assert_array_equal(spec.encode_targets(t)[:4, 0], [0, 1, 0, 1])
    assert read_table(write(tmp_path, "c\n9007199254740992\n1\n")).values["c"].dtype != object


def test_integers_beyond_float64_stay_distinct_labels_in_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "data.parquet"
    big = [2**64 - 1, 2**64 - 2, None]
    parquet.write_table(pa.table({"u": pa.array(big, type=pa.uint64()), "i": [1, 2, 3]}), path)
    t = read_table(path)
    assert as_labels(t, "u").tolist() == ["18446744073709551615", "18446744073709551614", None]
    assert t.values["i"].dtype == np.float64


def test_labels_are_found_in_a_vocabulary_of_any_order():
    """Runs saved numeric labels in numeric order and vocabularies in text order: both work."""
    t = table(x=[0.5, 1.5, 2.5], y=["9", "10", "2"])
    numeric = TableSpec([], [{"name": "y", "kind": "multiclass", "labels": ["2", "9", "10"]}])
    np.testing.assert_array_equal(numeric.encode_targets(t)[:, 0], [1, 2, 0])
    text = TableSpec([], [{"name": "y", "kind": "multiclass", "labels": ["10", "2", "9"]}])
    np.testing.assert_array_equal(text.encode_targets(t)[:, 0], [2, 0, 1])


def test_a_long_cell_is_shortened_in_messages():
    t = table(x=[0.5, 1.5], y=["w" * 20_000, "w" * 20_000])
    with pytest.raises(TableError) as error:
        TableSpec.infer(t, ["y"])
    assert "single value 'wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww'... (20000 characters)" in str(
        error.value
    )
    assert len(str(error.value)) < 300


# ----- kinds -----------------------------------------------------------------------------------


def test_feature_kinds_and_encodings():
    many = [f"k{i}" for i in range(40)]
    t = table(
        num=[0.5 * i for i in range(40)],
        ints=[i % 3 for i in range(40)],
        wide_ints=list(range(40)),
        text=["a", "b"] * 20,
        wide=many,
        y=[0.1 * i for i in range(40)],
    )
    spec = TableSpec.infer(t, ["y"])
    kinds = {c["name"]: (c["kind"], c.get("encoding")) for c in spec.features}
    assert kinds == {
        "num": ("numeric", None),
        "ints": ("categorical", "onehot"),
        "wide_ints": ("numeric", None),
        "text": ("categorical", "onehot"),
        "wide": ("categorical", "embedding"),
    }
    assert spec.embeddings == [[41, embedding_dim(41)]]
    # numeric 1 + ints 4 slots + wide_ints 1 + text 3 slots
    assert spec.dense_width == 9


def test_thresholds_are_where_documented():
    ints = [float(i % CATEGORICAL_MAX_INTEGERS) for i in range(30)]
    more = [float(i % (CATEGORICAL_MAX_INTEGERS + 1)) for i in range(30)]
    assert TableSpec.infer(table(a=ints, y=ints), ["y"]).features[0]["kind"] == "categorical"
    assert TableSpec.infer(table(a=more, y=ints), ["y"]).features[0]["kind"] == "numeric"
    onehot = [f"v{i % (ONE_HOT_MAX - 1)}" for i in range(40)]
    embedded = [f"v{i % ONE_HOT_MAX}" for i in range(40)]
    assert TableSpec.infer(table(a=onehot, y=ints), ["y"]).features[0]["encoding"] == "onehot"
    assert TableSpec.infer(table(a=embedded, y=ints), ["y"]).features[0]["encoding"] == (
        "embedding"
    )


def test_target_kinds():
    t = table(
        x=[0.5, 1.5, 2.5, 3.5, 4.5],
        reg=[0.1, 2.2, 3.3, 4.4, 5.5],
        yes=["no", "yes", "no", None, "yes"],
        cls=[10.0, 2.0, 3.0, 2.0, 10.0],
        text=["c", "a", "b", "a", "c"],
    )
    spec = TableSpec.infer(t, ["reg", "yes", "cls", "text"])
    assert [c["kind"] for c in spec.targets] == ["regression", "binary", "multiclass", "multiclass"]
    assert spec.targets[2]["labels"] == ["2", "3", "10"]  # numeric order
    assert spec.targets[3]["labels"] == ["a", "b", "c"]
    assert spec.output_layout == [("regression", 1), ("binary", 1), ("multiclass", 3)] + [
        ("multiclass", 3)
    ]


def test_kind_overrides_and_their_errors():
    t = table(z=["1", "2", "x1", "2"], n=[1.0, 2.0, 3.0, 4.0], y=[0.0, 1.0, 0.0, 1.0])
    spec = TableSpec.infer(t, ["y"], kinds={"z": "categorical", "n": "categorical"})
    assert [c["kind"] for c in spec.features] == ["categorical", "categorical"]
    spec = TableSpec.infer(t, ["n"], kinds={"n": "multiclass"}, ignore=["z"])
    assert spec.targets[0]["kind"] == "multiclass"
    assert spec.ignored == ["z"]
    with pytest.raises(TableError, match="--kind n=text: a feature column's kind is one of nume"):
        TableSpec.infer(t, ["y"], kinds={"n": "text"}, ignore=["z"])
    with pytest.raises(TableError, match="--kind n=binary: target column 'n' has 4 distinct"):
        TableSpec.infer(t, ["n"], kinds={"n": "binary"}, ignore=["z"])
    with pytest.raises(TableError, match="Named column 'q' not found in memory"):
        TableSpec.infer(t, ["y"], kinds={"q": "numeric"})
    with pytest.raises(TableError, match="cannot be both target and ignored"):
        TableSpec.infer(t, ["y"], ignore=["y"])


def test_numeric_kind_on_text_says_so():
    t = table(c=["a", "b"], y=[1.0, 2.0])
    with pytest.raises(TableError, match="Column 'c' of memory holds text such as 'a', where"):
        TableSpec.infer(t, ["y"], kinds={"c": "numeric"})


def test_missing_target_lists_the_columns_and_a_close_match():
    t = table(age=[1.0], price=[2.0])
    with pytest.raises(TableError) as error:
        TableSpec.infer(t, ["prices"])
    assert str(error.value) == (
        "Target column 'prices' (did you mean 'price'?) not found in memory. Its columns are: "
        "age, price."
    )


def test_all_missing_and_single_valued_targets():
    t = table(x=[1.0, 2.0, 3.0], y=[np.nan, np.nan, np.nan], one=["a", "a", None])
    with pytest.raises(TableError, match="Target column 'y' of memory has no values: all 3 cells"):
        TableSpec.infer(t, ["y"])
    with pytest.raises(TableError, match="has the single value 'a' in every row; there is noth"):
        TableSpec.infer(t, ["one"])
    with pytest.raises(TableError, match="No target column: name the column"):
        TableSpec.infer(t, [])


def test_mixed_target_column_is_a_table_error():
    t = table(x=[1.0, 2.0, 3.0], y=["1", "b", "2"])
    with pytest.raises(TableError, match="Column 'y' of memory mixes numbers and text"):
        TableSpec.infer(t, ["y"])


# ----- encoding --------------------------------------------------------------------------------


def test_numeric_encoding_uses_training_rows_only():
    t = table(x=[1.5, 3.5, np.nan, 100.5], y=[0.5, 1.5, 2.5, 3.5])
    spec = TableSpec.infer(t, ["y"], train_rows=np.array([0, 1, 2]))
    column = spec.features[0]
    assert (column["center"], column["spread"], column["indicator"]) == (2.5, 1.0, True)
    encoded = spec.encode_features(t)
    clipped = [x / np.sqrt(1 + (x / 3) ** 2) for x in (-1.0, 1.0, 98.0)]
    np.testing.assert_allclose(
        encoded, [[clipped[0], 0], [clipped[1], 0], [0, 1], [clipped[2], 0]], rtol=1e-6
    )


def test_robust_scaling_ignores_outliers_and_falls_back_to_the_range():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 1e9])
    center, spread = robust_scaling(values)
    assert (center, spread) == (3.5, 2.5)  # the outlier moves neither
    assert robust_scaling(np.array([0.0] * 9 + [6.0])) == (0.0, 3.0)  # quartiles coincide
    assert robust_scaling(np.array([7.0, 7.0])) == (7.0, 1.0)
    assert robust_scaling(np.array([])) == (0.0, 1.0)
    t = table(x=[1.5, 2.5, 3.5, 4.5, 5.5, 1e9 + 0.5], y=[0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    encoded = TableSpec.infer(t, ["y"]).encode_features(t)[:, 0]
    assert encoded.max() <= 3.0  # the outlier is clipped smoothly
    assert np.all(np.diff(encoded) > 0)  # and the order of the values is kept


def test_categorical_encoding_unknown_and_missing_share_slot_zero():
    train = table(c=["b", "a", "b"], y=[0.5, 1.5, 2.5])
    spec = TableSpec.infer(train, ["y"])
    new = table(c=["a", "zzz", "b"])
    new.values["c"][2] = None
    np.testing.assert_array_equal(spec.encode_features(new), [[0, 1, 0], [1, 0, 0], [1, 0, 0]])


def test_embedded_columns_come_last_as_indices():
    labels = [f"v{i:02d}" for i in range(20)]
    t = table(c=labels, x=[0.5 * i for i in range(20)], y=[0.1 * i for i in range(20)])
    spec = TableSpec.infer(t, ["y"])
    encoded = spec.encode_features(t)
    assert encoded.shape == (20, 2)
    np.testing.assert_array_equal(encoded[:, 1], np.arange(1, 21))


def test_regression_predictions_stay_within_the_training_range():
    spec = TableSpec.infer(table(x=[0.5, 1.5, 2.5], r=[10.5, 20.5, 30.5]), ["r"])
    assert (spec.targets[0]["low"], spec.targets[0]["high"]) == (10.5, 30.5)
    outputs = np.array([[-100.0], [0.0], [100.0]])  # standardised: far below, mean, far above
    np.testing.assert_allclose(spec.decode(outputs)["r"], [10.5, 20.5, 30.5])


def test_targets_encode_and_decode_to_the_original_label_space():
    t = table(
        x=[0.5, 1.5, 2.5, 3.5],
        r=[10.5, 20.5, np.nan, 30.5],
        b=["no", "yes", "yes", "no"],
        m=["c", "a", "b", "a"],
    )
    spec = TableSpec.infer(t, ["r", "b", "m"])
    encoded = spec.encode_targets(t)
    assert np.isnan(encoded[2, 0])
    np.testing.assert_allclose(encoded[[0, 1, 3], 0] * spec.targets[0]["std"], [-10, 0, 10])
    np.testing.assert_array_equal(encoded[:, 1:], [[0, 2], [1, 0], [1, 1], [0, 0]])
    outputs = np.array([[0.0, 0.9, 0.1, 0.2, 0.7], [1.0, 0.2, 0.8, 0.1, 0.1]])
    columns = spec.decode(outputs)
    assert list(columns) == [
        "r", "b", "b_proba_no", "b_proba_yes", "m", "m_proba_a", "m_proba_b", "m_proba_c"
    ]  # fmt: skip
    np.testing.assert_allclose(columns["r"], [20.5, 20.5 + spec.targets[0]["std"]])
    assert columns["b"].tolist() == ["yes", "no"]
    np.testing.assert_allclose(columns["b_proba_no"], [0.1, 0.8])
    assert columns["m"].tolist() == ["c", "a"]


def test_unseen_target_label_is_a_table_error():
    spec = TableSpec.infer(table(x=[0.5, 1.5], y=["a", "b"]), ["y"])
    with pytest.raises(
        TableError, match=r"labels not seen in training: 'c'\. The model knows: 'a'"
    ):
        spec.encode_targets(table(x=[0.5], y=["c"]))


def test_columns_that_do_not_match_name_missing_and_extra():
    spec = TableSpec.infer(table(a=[0.5, 1.5], b=[0.5, 2.5], y=["p", "q"]), ["y"])
    spec.check_columns(table(b=[1.0], a=[2.0]))  # order and absent targets do not matter
    with pytest.raises(TableError) as error:
        spec.encode_features(table(a=[1.0], c=[2.0], d=[3.0], y=["p"]))
    assert str(error.value) == (
        "The columns of memory do not match the training columns: missing 'b'; not seen in "
        "training 'c', 'd'."
    )
    with pytest.raises(TableError, match="Target column 'y' not found"):
        spec.check_columns(table(a=[1.0], b=[2.0]), with_targets=True)


def test_spec_json_round_trip_and_bad_files(tmp_path):
    t = table(c=["a", "b", "a"], x=[0.5, np.nan, 1.5], y=["u", "v", "u"])
    spec = TableSpec.infer(t, ["y"])
    spec.save(tmp_path / "spec.json")
    loaded = TableSpec.load(tmp_path / "spec.json")
    np.testing.assert_array_equal(loaded.encode_features(t), spec.encode_features(t))
    assert loaded.to_dict() == json.loads(json.dumps(spec.to_dict()))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TableError, match="bad.json is not valid JSON"):
        TableSpec.load(tmp_path / "bad.json")
    with pytest.raises(TableError, match="is not a table spec of format 2 \\(found 7\\)"):
        TableSpec.from_dict({"format": 7})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("features"), "it has no 'features' list (found None)"),
        (lambda d: d["targets"].clear(), "it has no 'targets' list (found [])"),
        (
            lambda d: d["features"][0].pop("vocabulary"),
            "categorical column 'c' has no valid 'v",
        ),
        (
            lambda d: d["features"][1].update(spread=0),
            "the numeric column 'x' has no valid 'spread' (0)",
        ),
        (lambda d: d["features"][0].update(kind="text"), "column 'c' has the kind 'text', not one"),
        (
            lambda d: d["targets"][0].update(labels=["u"]),
            "the binary column 'y' has no valid 'labels'",
        ),
        (lambda d: d.update(ignored="id"), "its 'ignored' is not a list of column names"),
    ],
    ids=["no-features", "no-targets", "no-vocabulary", "zero-spread", "kind", "labels", "ignored"],
)
def test_a_damaged_spec_names_what_is_wrong(change, message):
    t = table(c=["a", "b", "a"], x=[0.5, np.nan, 1.5], y=["u", "v", "u"])
    data = TableSpec.infer(t, ["y"]).to_dict()
    change(data)
    with pytest.raises(TableError) as error:
        TableSpec.from_dict(data, "run/table.json")
    assert str(error.value).startswith("run/table.json is damaged: ")
    assert message in str(error.value)


# ----- network and loss ------------------------------------------------------------------------


def test_table_net_is_rebuilt_by_kiln_load(tmp_path):
    net = TableNet(numeric=1, dense=2, embeddings=[[5, 3]], hidden=[4], output=1)
    trainer = kiln.Trainer(net, loss="mse", device="cpu", progress=False)
    x = torch.tensor([[0.5, -1.0, 4.0], [0.0, 1.0, 0.0]])
    trainer.save(tmp_path / "m.kiln")
    loaded = kiln.load(tmp_path / "m.kiln", device="cpu", progress=False)
    assert isinstance(loaded.model, TableNet)
    assert torch.equal(loaded.predict(x), trainer.predict(x))


def test_build_model_fits_the_columns_and_the_targets():
    numbers = TableSpec.infer(table(x=[0.5, 1.5, np.nan], y=[0.5, 2.5, 1.0]), ["y"])
    net = build_model(numbers, [8], 0.0)
    assert (net.numeric, net.dense, len(net.embeddings)) == (1, 2, 0)  # x and its indicator
    assert isinstance(net.layers[1].act, torch.nn.SiLU)  # regression
    wide = TableSpec.infer(table(c=[f"v{i}" for i in range(20)], y=["a"] * 19 + ["b"]), ["y"])
    net = build_model(wide, [8], 0.0)
    assert (net.numeric, net.dense, len(net.embeddings)) == (0, 0, 1)
    assert isinstance(net.layers[1].act, torch.nn.SELU)  # classification
    assert net(torch.zeros(3, 1)).shape == (3, 1)


def test_build_loss_is_the_mixed_criterion_of_the_target_kinds():
    t = table(x=[0.5, 1.5, 2.5], r=[0.5, 2.5, 4.0], b=["p", "q", "p"], m=["u", "v", "w"])
    spec = TableSpec.infer(t, ["r", "b", "m"])
    criterion = build_loss(spec)
    assert isinstance(criterion, MixedCriterion)
    assert criterion.kinds == ["regression", "binary", 3]
    output = torch.tensor([[0.5, 0.0, 2.0, 0.0, 0.0]])
    expected = torch.tensor([[0.5, 0.5, *torch.softmax(torch.tensor([2.0, 0, 0]), 0).tolist()]])
    torch.testing.assert_close(criterion.postproc(output), expected)  # identity scaling
    target = torch.tensor([[np.nan, 1.0, 0.0]])
    manual = (
        torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(0.0), torch.tensor(1.0))
        + torch.nn.functional.cross_entropy(output[:, 2:], torch.tensor([0]))
    ) / 3  # a column without targets in the batch adds 0 (PytorchTrainer's sum / columns)
    torch.testing.assert_close(criterion(output, target), manual)


# ----- options, metrics, writing ---------------------------------------------------------------


def test_options_are_checked():
    with pytest.raises(TableError, match="--epochs must be a positive integer; received 0"):
        TableOptions(epochs=0)
    with pytest.raises(TableError, match="--lr must be positive; received -1"):
        TableOptions(lr=-1)
    with pytest.raises(TableError, match=r"--drop must be in \[0, 1\); received 1"):
        TableOptions(drop=1)
    with pytest.raises(TableError, match=r"--hidden widths must be positive; received \[0\]"):
        TableOptions(hidden=(0,))
    with pytest.raises(TableError, match=r"--val must be in \(0, 1\): the fraction of rows held"):
        TableOptions(val=0.0)


def test_split_rows_is_reproducible_and_keeps_a_training_row():
    a, b = split_rows(50, 0.2, seed=3)
    c, d = split_rows(50, 0.2, seed=3)
    assert np.array_equal(a, c)
    assert np.array_equal(b, d)
    assert len(b) == 10
    assert len(split_rows(1, 0.5, seed=0)[0]) == 1


def test_metrics_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    p = y + rng.normal(size=50)
    ours = regression_metrics(y, p)
    assert ours["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(y, p)))
    assert ours["mae"] == pytest.approx(metrics.mean_absolute_error(y, p))
    assert ours["r2"] == pytest.approx(metrics.r2_score(y, p))
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60), 1)  # ties
    assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    probabilities = rng.dirichlet([1, 1, 1], size=60)
    classes = rng.integers(0, 3, 60)
    ours = classification_metrics(classes, probabilities)
    assert ours["log_loss"] == pytest.approx(metrics.log_loss(classes, probabilities))
    assert ours["accuracy"] == pytest.approx(
        metrics.accuracy_score(classes, probabilities.argmax(1))
    )
    assert "auc" not in ours


def test_format_metrics_and_write_csv(tmp_path):
    text = format_metrics({"train": {"y": {"mae": 1.0}}, "val": {"y": {"mae": 2.0, "r2": 0.5}}})
    assert text.splitlines() == [
        "target  data   mae     r2",
        "y       train  1.0000",
        "y       val    2.0000  0.5000",
    ]
    write_csv({"a": np.array([0.1, 2.0]), "b": np.array(["x, y", None], dtype=object)},
              tmp_path / "sub" / "p.csv")  # fmt: skip
    assert (tmp_path / "sub" / "p.csv").read_text() == 'a,b\n0.1,"x, y"\n2.0,\n'
