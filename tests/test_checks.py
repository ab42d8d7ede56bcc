"""The shared value checks of tf_lbsgd.checks: what each accepts, returns
and refuses, with the setting and the value named."""

import math

import pytest

from tf_lbsgd import checks


@pytest.mark.parametrize("value", [1, 7, 2**40])
def test_positive_int_returns_the_value(value):
    assert checks.positive_int("n", value) == value


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "3", None])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError) as error:
        checks.positive_int("train_lib.run.epochs", value)
    assert str(error.value) == (f"train_lib.run.epochs must be a positive "
                                f"integer, got {value!r}")


@pytest.mark.parametrize("check, value, expected", [
    (checks.finite_number, "2.5", 2.5),
    (checks.non_negative, 0, 0.0),
    (checks.positive, 1e-9, 1e-9),
    (checks.fraction, 0.0, 0.0),
    (checks.fraction, 0.9, 0.9),
])
def test_number_checks_return_floats(check, value, expected):
    result = check("x", value)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize("check, value, problem", [
    (checks.finite_number, "fast", "must be a number"),
    (checks.finite_number, None, "must be a number"),
    (checks.finite_number, True, "must be a finite number"),
    (checks.finite_number, math.nan, "must be a finite number"),
    (checks.non_negative, -math.inf, "must be a finite number"),
    (checks.non_negative, -1e-12, "must be >= 0"),
    (checks.positive, 0.0, "must be > 0"),
    (checks.fraction, 1.0, "must be in [0, 1)"),
    (checks.fraction, -0.1, "must be in [0, 1)"),
])
def test_number_checks_name_the_setting_and_value(check, value, problem):
    with pytest.raises(ValueError) as error:
        check("momentum", value)
    assert str(error.value) == f"momentum {problem}, got {value!r}"


def test_one_of_lists_what_is_allowed():
    assert checks.one_of("warmup", "gradual", ("gradual", "none")) == "gradual"
    with pytest.raises(ValueError) as error:
        checks.one_of("warmup", "linear", ("gradual", "none"))
    assert str(error.value) == ("unknown warmup 'linear'; expected one of "
                                "'gradual', 'none'")
