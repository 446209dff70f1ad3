"""One wording for whole-number checks, with each caller's error class."""

import numpy as np
import pytest

from labkit.checks import whole
from labkit.errors import ParameterError, UnsupportedOperation, UnsupportedOperationError


def test_whole_numbers_pass_as_ints_and_everything_else_is_named():
    assert whole("n", np.int64(3), 1) == 3
    for bad, wording in ((True, ">= 0"), (1.5, ">= 0"), (-1, ">= 0")):
        with pytest.raises(ParameterError, match=f"n must be a whole number {wording}, got"):
            whole("n", bad, 0)
    with pytest.raises(ParameterError, match="k must be a whole number between 1 and 5, got 6"):
        whole("k", 6, 1, 5)
    with pytest.raises(UnsupportedOperationError, match="workers must be a whole number, got"):
        whole("workers", "two", error=UnsupportedOperationError)


def test_the_old_error_name_still_works():
    assert UnsupportedOperation is UnsupportedOperationError
