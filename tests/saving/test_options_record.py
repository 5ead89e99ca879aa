"""The loop options through trainer.save / kiln.load (`kiln.saving.options_record`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import kiln
from kiln.checkpoint.files import atomic_save, safe_load
from kiln.options import LoopOptions
from kiln.saving.trainer_file import save_trainer

X = torch.randn(48, 4)
Y = torch.randint(0, 3, (48,))
#: Three batches an epoch, in the same order every pass: a group of two and a shorter one.
DATA = kiln.Data((X, Y), batch_size=16, shuffle=False)
#: A norm small enough that every step is clipped, so losing it changes the weights.
OPTIONS = {"accumulate": 2, "clip_norm": 0.05}


def fitted(epochs: int, **options: Any) -> kiln.Trainer:
    torch.manual_seed(0)  # the same initial weights for every run
    trainer = kiln.Trainer(
        kiln.MLP(4, [8], 3), loss="cross_entropy", device="cpu", progress=False, **options
    )
    trainer.fit(DATA, epochs=epochs)
    return trainer


def load(path: Path, **options: Any) -> kiln.Trainer:
    return kiln.load(path, device="cpu", progress=False, **options)


def options_of(trainer: kiln.Trainer) -> LoopOptions:
    options: LoopOptions = trainer.options
    return options


def same_weights(one: kiln.Trainer, other: kiln.Trainer) -> bool:
    pairs = zip(one.model.parameters(), other.model.parameters(), strict=True)
    return all(torch.equal(mine, theirs) for mine, theirs in pairs)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, kiln.Trainer]:
    """A 2-epoch run with accumulation and clipping, saved; and the same run for 3 epochs."""
    path = save_trainer(fitted(2, **OPTIONS), tmp_path_factory.mktemp("steps") / "run.kiln")
    return path, fitted(3, **OPTIONS)


def crafted(path: Path, tmp_path: Path, step: Any) -> Path:
    contents = safe_load(path)
    if step is None:
        del contents["step"]
    else:
        contents["step"] = step
    return atomic_save(contents, tmp_path / "crafted.kiln")


def test_the_file_records_the_options_as_plain_data(run_files: tuple[Path, kiln.Trainer]) -> None:
    contents = torch.load(run_files[0], weights_only=True)
    assert contents["step"] == {
        "precision": "32",
        "accumulate": 2,
        "clip_norm": 0.05,
        "clip_value": None,
        "nonfinite": "raise",
    }
    assert contents["format"] == 1  # an optional key: files without it still load


def test_fit_after_load_continues_bit_for_bit(run_files: tuple[Path, kiln.Trainer]) -> None:
    path, uninterrupted = run_files
    loaded = load(path)
    assert options_of(loaded) == options_of(uninterrupted)
    loaded.fit(DATA, epochs=1)
    assert loaded.state.epoch == uninterrupted.state.epoch == 3
    assert loaded.state.step == uninterrupted.state.step == 6  # two steps an epoch
    assert loaded.history.loss == uninterrupted.history.loss
    assert same_weights(loaded, uninterrupted)


def test_a_run_continued_with_defaults_differs(run_files: tuple[Path, kiln.Trainer]) -> None:
    """What the test above guards against: the same file continued without its options."""
    path, uninterrupted = run_files
    for changed in ({"accumulate": 1}, {"clip_norm": None}):
        loaded = load(path, **changed)
        loaded.fit(DATA, epochs=1)
        assert not same_weights(loaded, uninterrupted), changed


def test_options_passed_to_load_win(run_files: tuple[Path, kiln.Trainer]) -> None:
    path = run_files[0]
    loaded = load(path, accumulate=3, nonfinite="skip", precision="bf16")
    assert options_of(loaded) == LoopOptions("bf16", 3, 0.05, None, "skip")
    assert options_of(load(path, clip_norm=None)) == LoopOptions(accumulate=2)
    # Clipping is one choice: a value clip replaces the recorded norm clip.
    assert options_of(load(path, clip_value=0.5)) == LoopOptions(accumulate=2, clip_value=0.5)
    with pytest.raises(ValueError, match=r"`accumulate` must be a positive integer"):
        load(path, accumulate=0)


def test_bf16_comes_back(tmp_path: Path) -> None:
    path = save_trainer(fitted(1, precision="bf16", nonfinite="skip"), tmp_path / "bf16.kiln")
    loaded = load(path)
    assert options_of(loaded).precision == "bf16"
    assert options_of(loaded).nonfinite == "skip"
    loaded.fit(DATA, epochs=1)
    assert loaded.state.epoch == 2


def test_a_file_without_the_record_loads_with_defaults(
    run_files: tuple[Path, kiln.Trainer], tmp_path: Path
) -> None:
    older = crafted(run_files[0], tmp_path, step=None)  # as trainer.save wrote before
    assert options_of(load(older)) == LoopOptions()
    assert options_of(load(older, accumulate=2)) == LoopOptions(accumulate=2)


def test_a_run_checkpoint_and_a_state_dict_load_with_defaults(tmp_path: Path) -> None:
    trainer = kiln.Trainer(
        kiln.MLP(4, [8], 3),
        loss="cross_entropy",
        device="cpu",
        progress=False,
        dir=tmp_path / "run",
        accumulate=2,
    )
    trainer.fit(DATA, epochs=1)
    model = kiln.MLP(4, [8], 3)
    assert options_of(load(tmp_path / "run" / "last.ckpt", model=model)) == LoopOptions()
    weights = trainer.export(tmp_path / "net.pt")
    assert options_of(load(weights, model=model, clip_value=1.0)) == LoopOptions(clip_value=1.0)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"precision": "fp8"}, r"records the loop option precision='fp8'.*precision=\.\.\."),
        ({"accumulate": 0}, r"records the loop option accumulate=0.*accumulate=\.\.\."),
        ({"nonfinite": "ignore"}, r"nonfinite='ignore'.*'raise'.*kiln\.load\(path, nonfinite="),
        ({"clip_value": 1.0}, r"records both clip_norm=0\.05 and clip_value=1\.0"),
        ({"compile": True}, r"options this kiln does not know \(compile\).*version that wrote"),
    ],
)
def test_a_bad_recorded_value_names_the_file(
    run_files: tuple[Path, kiln.Trainer], tmp_path: Path, step: dict[str, Any], message: str
) -> None:
    record = {**safe_load(run_files[0])["step"], **step}
    path = crafted(run_files[0], tmp_path, step=record)
    with pytest.raises(ValueError, match=rf"crafted\.kiln.*{message}"):
        load(path)


def test_a_bad_value_is_overridden_and_a_damaged_record_is_not(
    run_files: tuple[Path, kiln.Trainer], tmp_path: Path
) -> None:
    record = {**safe_load(run_files[0])["step"], "accumulate": "four"}
    assert options_of(load(crafted(run_files[0], tmp_path, record), accumulate=4)).accumulate == 4
    for damaged in ("bf16", {"precision": "32"}):
        with pytest.raises(ValueError, match=r"loop options recorded in .*crafted\.kiln.*damaged"):
            load(crafted(run_files[0], tmp_path, damaged), accumulate=4)


def test_fp16_recorded_loads_off_cuda_in_full_precision_with_a_warning(
    run_files: tuple[Path, kiln.Trainer], tmp_path: Path
) -> None:
    record = {**safe_load(run_files[0])["step"], "precision": "fp16"}
    path = crafted(run_files[0], tmp_path, record)
    with pytest.warns(UserWarning, match=r"recorded precision='fp16'.*CUDA only.*full precision"):
        loaded = load(path)
    assert loaded.options.precision == "32"
    assert torch.equal(loaded.predict(X), load(run_files[0]).predict(X))
    with pytest.raises(ValueError, match="CUDA"):  # asked for explicitly: refused, as in Trainer
        load(path, precision="fp16")
