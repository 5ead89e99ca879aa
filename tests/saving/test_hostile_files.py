"""`kiln.load` of files written to attack it: no import, no code, no memory a file cannot back.

Each hostile file is made as an attacker would: a real file saved by kiln, its dict edited and
written again with `torch.save` (or a safetensors export with edited metadata). A module with a
side effect (it writes a marker file when imported) lies on a temporary `sys.path`, to prove
that loading never imports it.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import kiln
from kiln.checkpoint import CheckpointError
from kiln.checkpoint.files import atomic_save, safe_load

X = torch.randn(24, 4)
Y = torch.randint(0, 3, (24,))

#: The devices the parameters of each `Spy` were created on, in order.
CREATED: list[str] = []


class Spy(nn.Module):
    """A model that records where its parameters were allocated."""

    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.layer = nn.Linear(size, size)
        self.head = nn.Linear(size, 3)
        CREATED.append(self.layer.weight.device.type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x))


def load(path: Path, **options: Any) -> kiln.Trainer:
    return kiln.load(path, device="cpu", progress=False, **options)


def saved(tmp_path: Path, model: nn.Module | None = None) -> dict[str, Any]:
    """The contents of a real trainer.save file, to be edited."""
    model = kiln.MLP(4, [8], 3) if model is None else model
    trainer = kiln.Trainer(model, loss="cross_entropy", device="cpu", progress=False)
    trainer.fit((X, Y), epochs=1, batch_size=8)
    return safe_load(trainer.save(tmp_path / "real.kiln"))


def written(contents: dict[str, Any], path: Path) -> Path:
    torch.save(contents, path)
    return path


@pytest.fixture
def side_effect_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on `sys.path`, not imported, whose import writes a marker file."""
    name = f"kiln_side_effect_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        "import pathlib\n"
        "import torch\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, input=4, hidden=(8,), output=3, **options):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(input, output)\n"
        "class Opt(torch.optim.SGD):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    return name, marker


def test_a_recipe_naming_a_module_never_imports_it(tmp_path, side_effect_module):
    name, marker = side_effect_module
    contents = saved(tmp_path)
    contents["recipe"] = {**contents["recipe"], "target": f"{name}:Net"}
    path = written(contents, tmp_path / "hostile.kiln")
    message = rf"{name}, which this program has not imported; kiln never imports.*classes=\[Net\]"
    with pytest.raises(ValueError, match=message):
        load(path)
    assert not marker.exists()
    assert name not in sys.modules


def test_the_zen_of_python_is_not_printed(tmp_path, capsys):
    contents = saved(tmp_path)
    contents["recipe"] = {**contents["recipe"], "target": "this:Zen"}
    with pytest.raises(ValueError, match=r"this\.Zen"):
        load(written(contents, tmp_path / "zen.kiln"))
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


def test_the_optimizer_record_never_imports_with_model_or_optimizer_given(
    tmp_path, side_effect_module
):
    name, marker = side_effect_module
    contents = saved(tmp_path)
    contents["optimizer"] = {**contents["optimizer"], "target": f"{name}:Opt"}
    path = written(contents, tmp_path / "hostile.kiln")
    with pytest.raises(ValueError, match=rf"{name}\.Opt.*has not imported.*optimizer=\.\.\."):
        load(path, model=kiln.MLP(4, [8], 3))
    assert not marker.exists()
    # A given optimizer is used as given: its record is not looked at, nor imported.
    loaded = load(path, optimizer="sgd", lr=0.1)
    assert type(loaded.optimizer).__name__ == "SGD"
    assert not marker.exists()
    assert name not in sys.modules


def test_a_safetensors_recipe_never_imports(tmp_path, side_effect_module):
    from safetensors.torch import save_file

    name, marker = side_effect_module
    recipe = {"kind": "class", "target": f"{name}:Net", "args": [], "kwargs": {}}
    path = tmp_path / "hostile.safetensors"
    weights = {"layer.weight": torch.ones(3, 4), "layer.bias": torch.ones(3)}
    save_file(weights, path, metadata={"kiln_recipe": json.dumps(recipe)})
    with pytest.raises(ValueError, match=rf"{name}, which this program has not imported"):
        load(path)
    assert not marker.exists()


def test_an_auto_preset_file_never_imports(tmp_path, side_effect_module):
    from kiln.presets import AutoTrainer
    from kiln.presets.files import auto_record

    name, marker = side_effect_module
    record = auto_record(kiln.MLP(4, [8], 3), None, epoch=1)
    record["recipe"] = {**record["recipe"], "target": f"{name}:Net"}
    atomic_save(record, tmp_path / "run.pt")
    message = r"has not imported.*AutoTrainer\.load\(name, builder=Net\)"
    with pytest.raises(ValueError, match=message):
        AutoTrainer.load(tmp_path / "run", device="cpu")
    assert not marker.exists()


def test_a_class_not_imported_loads_once_allowed(tmp_path, monkeypatch):
    """The error's way out works: import the class, or pass it with `classes=`."""
    name = f"kiln_nets_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, width):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(4, width)\n"
        "    def forward(self, x):\n"
        "        return self.layer(x)\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    module = __import__(name)
    trainer = kiln.Trainer(kiln.build(module.Net, 3), loss="cross_entropy", device="cpu")
    path = trainer.save(tmp_path / "net.kiln")
    monkeypatch.delitem(sys.modules, name)  # another program, that has not imported it
    with pytest.raises(ValueError, match=rf"from {name} import Net.*classes=\[Net\]"):
        load(path)
    assert name not in sys.modules
    loaded = load(path, classes=[module.Net])
    assert type(loaded.model) is module.Net
    assert torch.equal(loaded.predict(X), trainer.predict(X))


def test_a_script_saved_class_is_matched_by_name(tmp_path):
    """A model saved by a script is recorded as `__main__:Name`; `classes=` finds it by name."""
    contents = saved(tmp_path, kiln.build(Spy, 4))
    contents["recipe"] = {**contents["recipe"], "target": "__main__:Spy"}
    path = written(contents, tmp_path / "script.kiln")
    with pytest.raises(ValueError, match=r"defined by the script that saved.*classes=\[Spy\]"):
        load(path)
    assert type(load(path, classes=[Spy]).model) is Spy
    with pytest.raises(TypeError, match=r"`classes` lists the classes.*received 'Spy'"):
        load(path, classes=["Spy"])


def test_a_recipe_declaring_a_huge_model_allocates_nothing(tmp_path):
    """The recipe's model is built on the meta device and compared with the weights first."""
    contents = saved(tmp_path, kiln.build(Spy, 4))
    contents["recipe"] = {**contents["recipe"], "args": [4000]}  # 64 MB that no weight backs
    path = written(contents, tmp_path / "huge.kiln")
    assert path.stat().st_size < 40_000
    CREATED.clear()
    with pytest.raises(ValueError, match=r"do not fit Spy.*\(4000, 4000\) in the model"):
        load(path)
    assert CREATED == ["meta"]
    CREATED.clear()
    contents["recipe"]["args"] = [4]
    load(written(contents, tmp_path / "fits.kiln"))
    assert CREATED == ["meta", "cpu"]


def test_a_builder_is_checked_on_the_meta_device_too(tmp_path):
    contents = saved(tmp_path, kiln.build(Spy, 4))
    contents["recipe"] = {**contents["recipe"], "kind": "builder", "args": [4000]}
    CREATED.clear()
    with pytest.raises(ValueError, match=r"\(4000, 4000\) in the model"):
        load(written(contents, tmp_path / "huge.kiln"), builder=Spy)
    assert CREATED == ["meta"]


def damaged_files(tmp_path: Path) -> dict[str, Path]:
    """A real saved file damaged in each way a disk, a copy or a user damages files."""
    real = kiln.Trainer(kiln.MLP(4, [8], 3), loss="cross_entropy", device="cpu", progress=False)
    data = real.save(tmp_path / "real.kiln").read_bytes()
    files = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "text": b"epoch\tloss\n1\t0.5\n",
    }
    paths = {}
    for kind, content in files.items():
        paths[kind] = tmp_path / f"{kind}.kiln"
        paths[kind].write_bytes(content)
    paths["flipped"] = tmp_path / "flipped.kiln"
    paths["flipped"].write_bytes(flip_in_pickle(data))
    paths["list"] = written([1, 2, 3], tmp_path / "list.kiln")
    paths["directory"] = tmp_path / "directory.kiln"
    paths["directory"].mkdir()
    contents = torch.load(tmp_path / "real.kiln", weights_only=True)
    contents["trainer"]["state"] = [1, 2]  # a list where the counters' dict belongs
    paths["wrong part"] = written(contents, tmp_path / "part.kiln")
    return paths


def flip_in_pickle(data: bytes) -> bytes:
    """`data` with one bit flipped in the middle of its pickle (data.pkl)."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = next(m for m in archive.infolist() if m.filename.endswith("data.pkl"))
    name_length, extra_length = (
        int.from_bytes(data[member.header_offset + at : member.header_offset + at + 2], "little")
        for at in (26, 28)
    )
    start = member.header_offset + 30 + name_length + extra_length
    position = start + member.file_size // 2
    return data[:position] + bytes([data[position] ^ 0x10]) + data[position + 1 :]


@pytest.mark.parametrize(
    "kind", ["empty", "truncated", "text", "flipped", "list", "directory", "wrong part"]
)
def test_a_damaged_file_gives_one_error_that_names_it(tmp_path, kind):
    path = damaged_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as raised:
        load(path)
    message = str(raised.value)
    assert str(path) in message
    assert "is damaged" in message or "is a directory" in message or "not recognise" in message
    assert isinstance(raised.value, ValueError)  # caught as before, by `except ValueError`


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "directory"])
def test_a_damaged_safetensors_file_names_it(tmp_path, kind):
    path = tmp_path / f"{kind}.safetensors"
    kiln.Trainer(kiln.MLP(4, [8], 3), device="cpu").export(tmp_path / "real.safetensors")
    data = (tmp_path / "real.safetensors").read_bytes()
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes({"empty": b"", "truncated": data[:-20], "text": b"weights\n"}[kind])
    with pytest.raises(CheckpointError, match=rf"{path}"):
        load(path)
