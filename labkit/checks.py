"""Checks of values a user passes in, worded once for the whole package."""

from __future__ import annotations

from numbers import Integral

from labkit.errors import LabkitError, ParameterError


def whole(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    error: type[LabkitError] = ParameterError,
) -> int:
    """``value`` as an int if it is a whole number (numpy integers too, never a bool) within
    ``minimum`` and ``maximum``; otherwise ``error`` naming ``name`` and the value."""
    if minimum is not None and maximum is not None:
        wanted = f"a whole number between {minimum} and {maximum}"
    elif minimum is not None:
        wanted = f"a whole number >= {minimum}"
    else:
        wanted = "a whole number"
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        raise error(f"{name} must be {wanted}, got {value!r}")
    return int(value)
