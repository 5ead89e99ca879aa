"""`trainer.export` for serving: ONNX files run in onnxruntime, `.pt2` programs in torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import kiln
from kiln.losses import MixedCriterion
from kiln.saving.serving import example_of, export_program

X = torch.randn(64, 4)
Y = torch.stack([X[:, 0] * 2 + 5, (X[:, 1] > 0).float()], 1)  # a regression, a binary column
NEW = torch.randn(5, 4)  # another batch size than the example's (2 rows)


def run_onnx(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in inputs.items()}
    return torch.from_numpy(np.asarray(session.run(None, feed)[0]))


def run_program(path: Path, *args: Any, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(path).module()(*args, **kwargs)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def trained() -> kiln.Trainer:
    """A trainer whose loss post-processes (un-scaling, a sigmoid): what `predict` returns."""
    torch.manual_seed(0)
    criterion = MixedCriterion(kinds=["regression", "binary"], scale=[[5.0, 0.0], [2.0, 1.0]])
    trainer = kiln.Trainer(kiln.MLP(4, [8], 2), loss=criterion, device="cpu", progress=False)
    trainer.fit((X, Y), epochs=2, batch_size=16)
    return trainer


@pytest.fixture(scope="module")
def onnx_file(trained: kiln.Trainer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxscript")
    return trained.export(tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_onnx_export_matches_predict_for_another_batch_size(trained, onnx_file):
    output = run_onnx(onnx_file, {"input": NEW})
    expected = trained.predict(NEW)
    assert output.shape == (5, 2)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)


def test_pt2_export_matches_predict_for_another_batch_size(trained, tmp_path):
    path = trained.export(tmp_path / "model.pt2")
    for rows in (NEW, NEW[:1], torch.randn(300, 4)):  # one row too: the batch stays dynamic
        torch.testing.assert_close(
            run_program(path, rows), trained.predict(rows), atol=1e-5, rtol=1e-5
        )


def test_export_without_postproc_is_the_raw_output_and_differs_from_predict(trained, tmp_path):
    path = trained.export(tmp_path / "raw.pt2", postproc=False)
    raw = run_program(path, NEW)
    with torch.no_grad():
        torch.testing.assert_close(raw, trained.model(NEW), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(raw, trained.predict(NEW), atol=1e-3)  # the counter-test


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.a(x) * self.b(z)


@pytest.mark.parametrize("keywords", [False, True], ids=["tuple", "dict"])
def test_an_example_given_by_the_user_for_several_inputs(tmp_path, keywords):
    pytest.importorskip("onnxscript")
    trainer = kiln.Trainer(TwoInputs(), device="cpu", progress=False)  # has seen no data
    x, z = torch.randn(7, 4), torch.randn(7, 2)
    example: Any = {"z": z[:1], "x": x[:1]} if keywords else (x[:1], z[:1])  # a batch of one
    onnx_path = trainer.export(tmp_path / "two.onnx", example=example)
    program_path = trainer.export(tmp_path / "two.pt2", example=example)
    expected = trainer.predict({"x": x, "z": z} if keywords else (x, z))
    torch.testing.assert_close(run_onnx(onnx_path, {"x": x, "z": z}), expected)
    program = run_program(program_path, x=x, z=z) if keywords else run_program(program_path, x, z)
    torch.testing.assert_close(program, expected)


def test_export_without_any_example_says_to_pass_one(tmp_path):
    trainer = kiln.Trainer(kiln.MLP(4, [8], 2), loss="mse", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"no example input.*example=torch\.randn"):
        trainer.export(tmp_path / "model.pt2")
    assert list(tmp_path.iterdir()) == []


def test_predict_provides_the_example(tmp_path):
    trainer = kiln.Trainer(kiln.MLP(4, [8], 2), device="cpu", progress=False)
    trainer.predict(NEW)
    path = trainer.export(tmp_path / "model.pt2")
    torch.testing.assert_close(run_program(path, X), trainer.predict(X))


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.linear(x)
        return -self.linear(x)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Branchy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 2


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_data_dependent_control_flow_is_named_not_traced(tmp_path, suffix, capfd):
    if suffix == ".onnx":
        pytest.importorskip("onnxscript")
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"previous")
    trainer = kiln.Trainer(Outer(), loss="mse", device="cpu", progress=False)
    trainer.fit((X, torch.randn(64, 2)), epochs=1)
    with pytest.raises(ValueError, match="data-dependent control flow") as caught:
        trainer.export(path)
    message = str(caught.value)
    assert "Cannot export Outer" in message
    assert "Branchy.forward" in message  # the part
    assert "if x.sum() > 0:" in message  # the line
    assert caught.value.__cause__ is None  # no torch trace above the message
    assert caught.value.__suppress_context__
    assert "def forward(self, arg0_1" not in capfd.readouterr().err  # torch's partial graph
    assert path.read_bytes() == b"previous"  # untouched, and no temporary file left
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


class FixedBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1)


def test_a_model_that_fixes_the_batch_size_is_explained(tmp_path):
    with pytest.raises(ValueError, match=r"FixedBatch with a dynamic batch size.*x\.shape\[0\]"):
        export_program(FixedBatch(), tmp_path / "fixed.pt2", torch.randn(2, 4))


def test_bad_suffix_and_bad_examples(tmp_path):
    net = kiln.MLP(4, [8], 2)
    with pytest.raises(ValueError, match=r"'\.tflite' names no serving format.*\.onnx or \.pt2"):
        export_program(net, tmp_path / "net.tflite", torch.randn(2, 4))
    trainer = kiln.Trainer(net, device="cpu", progress=False)
    weights_message = r"no known format.*safetensors.*\.onnx or \.pt2"
    with pytest.raises(ValueError, match=weights_message):
        trainer.export(tmp_path / "net.tflite")
    with pytest.raises(ValueError, match="holds str"):
        trainer.export(tmp_path / "net.pt2", example=("text",))
    with pytest.raises(ValueError, match="one non-zero batch size"):
        trainer.export(tmp_path / "net.pt2", example=(torch.randn(2, 4), torch.randn(3, 4)))


def test_example_of_reads_the_inputs_of_a_batch():
    x, y = torch.randn(8, 3), torch.randn(8)
    assert example_of((x, y)).shape == (2, 3)
    assert example_of((x, torch.ones(8), y)).shape == (2, 3)  # (x, w, y)
    assert example_of({"ids": x})["ids"].shape == (2, 3)
    assert example_of((x, y, y, y)) is None  # a batch only a custom training_step reads


def test_the_model_is_left_in_training_mode(tmp_path):
    net = kiln.MLP(4, [8], 2)
    export_program(net, tmp_path / "net.pt2", torch.randn(3, 4))
    assert net.training
