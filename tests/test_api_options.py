"""The settings' one table (`training.options.BOUNDS` and `CHOICES`): the API refuses a value out of it with a
ValueError naming the option as the API does, the command line with click's usage error naming its flag; and a
library error names options the API's way in the API and the command line's way on the command line."""

from __future__ import annotations

from dataclasses import fields

import pytest

import vistrain
from conftest import invoke, write_class_folders
from vistrain.cli.main import flag_of
from vistrain.core.errors import OptionError
from vistrain.training.options import BOUNDS, CHOICES, TrainOptions


def outside(name: str) -> object:
    """A value option `name` does not accept, from its entry in the table."""
    if name in CHOICES:
        return "nonsense"
    bounds = BOUNDS[name]
    if bounds.low is not None:
        return bounds.low if bounds.low_open else bounds.low - 1
    return 1.5  # an integer option without bounds (the seed) still takes integers only


REFUSED = sorted(set(BOUNDS) | set(CHOICES))


def test_every_field_with_a_table_entry_is_a_field():
    assert set(REFUSED) <= {field.name for field in fields(TrainOptions)}


@pytest.mark.parametrize("name", REFUSED)
def test_the_api_refuses_a_value_outside_the_table(name):
    with pytest.raises(ValueError, match=f"^{name} must be") as error:
        TrainOptions(**{name: outside(name)})
    assert "--" not in str(error.value)


@pytest.mark.parametrize("name", REFUSED)
def test_the_command_line_refuses_the_same_value(name, tmp_path):
    data = write_class_folders(tmp_path / "data", 2)
    result = invoke("train", data, flag_of(name), outside(name), "--out", tmp_path / "run")
    assert result.exit_code == 2 and f"Invalid value for '{flag_of(name)}'" in result.output, result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_the_bounds_themselves_are_accepted(name):
    bounds = BOUNDS[name]
    for value in (bounds.low, bounds.high):
        if value is not None and not (bounds.low_open if value == bounds.low else bounds.high_open):
            TrainOptions(**{name: int(value) if bounds.integer else float(value)})


def test_a_library_error_names_options_the_api_way_and_the_command_line_way(tmp_path):
    data = write_class_folders(tmp_path / "data", 2)
    with pytest.raises(OptionError) as error:
        vistrain.train(data, out=tmp_path / "run", budget="1m", fine_tune=1)
    assert str(error.value) == "budget decides itself what to fine-tune; drop fine_tune"
    result = invoke("train", data, "--out", tmp_path / "run", "--budget", "1m", "--fine-tune", "1")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: --budget decides itself what to fine-tune; drop --fine-tune"


def test_option_errors_keep_other_braces():
    error = OptionError("{learning_rate} {{x}} is odd")
    assert str(error) == "learning_rate {x} is odd" and error.spelled(flag_of) == "--lr {x} is odd"


def test_a_run_directory_in_use_is_named_as_the_api_names_it(tmp_path):
    """The library says `out` and `overwrite`; the command line says `--out` and `--overwrite`."""
    from vistrain.model.run_dir import RunError

    data = write_class_folders(tmp_path / "data", 4)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(RunError) as refused:
        vistrain.train(data, out=taken, epochs=1)
    assert isinstance(refused.value, OptionError)
    assert "choose another out or pass overwrite" in str(refused.value) and "--" not in str(refused.value)
    result = invoke("train", data, "--out", taken, "--epochs", "1")
    assert result.exit_code == 1 and "choose another --out or pass --overwrite" in result.stderr
