"""Input validation for the data layer: one clear error naming the source, field, row and problem.

Every loader and constructor in `mesojax.data` funnels its checks through these helpers so that
errors read the same everywhere, e.g.::

    ValidationError: connectome.json: field 'pre', row 17: unknown neuron id 'AVX'

Nothing is silently dropped: a check either passes or raises.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np


class ValidationError(ValueError):
    """Bad input data. The message names the source, the field, the row (when there is one) and the problem.

    Attributes:
      source: file name or object the data came from (e.g. ``"witvliet_2020_8.json"`` or ``"Connectome"``).
      field: the field/column/dataset at fault.
      row: index of the first offending row, or ``None`` when the problem is not row-specific.
      problem: what is wrong, in words.
    """

    def __init__(self, source: str, field: str, row: int | None, problem: str):
        self.source, self.field, self.row, self.problem = source, field, row, problem
        where = f"field '{field}'" + (f", row {row}" if row is not None else "")
        super().__init__(f"{source}: {where}: {problem}")


@contextlib.contextmanager
def file_errors(source: str, field: str = "file", what: str = "file") -> Iterator[None]:
    """Turn a reader's own error (h5py, json, OS) inside the block into one :class:`ValidationError`.

    A damaged, truncated or unreadable file otherwise surfaces as a bare ``OSError``/``KeyError`` from
    the library, often without the file name. ValidationErrors raised inside pass through unchanged.
    """
    try:
        yield
    except ValidationError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as err:
        text = " ".join(str(err).split())[:200]
        raise ValidationError(source, field, None, f"cannot read the {what} (missing, damaged or truncated?): "
                              f"{type(err).__name__}: {text}") from None


def show(value: Any) -> str:
    """Readable repr of a value for an error message (numpy scalars shown as plain Python values)."""
    if isinstance(value, np.ndarray):
        return repr(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def first_row(mask: np.ndarray) -> int:
    """Index of the first True entry along the leading axis of `mask` (any trailing axes are reduced)."""
    mask = np.asarray(mask)
    if mask.ndim > 1:
        mask = mask.reshape(mask.shape[0], -1).any(axis=1)
    return int(np.flatnonzero(mask)[0])


def check_name(source: str, field: str, name: Any) -> str:
    """Raise unless `name` is a plain name that is safe to join into a path (no folder, no ``..``).

    Animal uids, connectome names and held-out animals become file and folder names; a separator or a
    ``..`` would read or write outside the data directory or the workdir.
    """
    text = str(name)
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text
            or text != text.strip()):
        raise ValidationError(source, field, None, f"{text!r} is not a plain name: it must be non-empty, "
                              "without '/', '\\', surrounding spaces or NUL, and not '.' or '..'")
    return text


def check_shape(source: str, field: str, array: Any, shape: Sequence[int | None]) -> None:
    """Raise unless `array.shape` matches `shape` (``None`` matches any length)."""
    actual = tuple(np.shape(array))
    ok = len(actual) == len(shape) and all(s is None or s == a for s, a in zip(shape, actual))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValidationError(source, field, None, f"expected shape {want}, got {list(actual)}")


def check_numeric(source: str, field: str, array: np.ndarray) -> None:
    """Raise unless `array` has a real numeric (integer, unsigned or float) dtype."""
    kind = np.asarray(array).dtype.kind
    if kind not in "iuf":
        raise ValidationError(
            source, field, None, f"expected a numeric array, got dtype {np.asarray(array).dtype}"
        )


def check_finite(source: str, field: str, array: np.ndarray) -> None:
    """Raise on the first row holding NaN or +-inf."""
    array = np.asarray(array)
    bad = ~np.isfinite(array)
    if bad.any():
        row = first_row(bad)
        raise ValidationError(source, field, row, f"non-finite value {show(array[row])}")


def check_unique(source: str, field: str, values: np.ndarray) -> None:
    """Raise on the first value that repeats an earlier one."""
    values = np.asarray(values)
    if values.size == 0:
        return
    _, first_index, counts = np.unique(values, return_index=True, return_counts=True)
    if (counts > 1).any():
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        dup_positions = order[1:][sorted_values[1:] == sorted_values[:-1]]
        row = int(dup_positions.min())
        first = int(np.flatnonzero(values == values[row])[0])
        raise ValidationError(
            source, field, row, f"duplicate value {show(values[row])} (first seen at row {first})"
        )


def check_index_range(source: str, field: str, index: np.ndarray, size: int) -> None:
    """Raise on the first integer index outside ``[0, size)``."""
    index = np.asarray(index)
    bad = (index < 0) | (index >= size)
    if bad.any():
        row = first_row(bad)
        value = index.reshape(len(index), -1)[row][bad.reshape(len(index), -1)[row]][0]
        raise ValidationError(source, field, row, f"index {int(value)} out of range for {size} neurons")


def check_in_set(source: str, field: str, values: np.ndarray, allowed: Sequence[Any]) -> None:
    """Raise on the first value not in `allowed`."""
    values = np.asarray(values)
    bad = ~np.isin(values, np.asarray(allowed))
    if bad.any():
        row = first_row(bad)
        raise ValidationError(
            source, field, row, f"value {show(values[row])} not in allowed set {list(allowed)}"
        )


def check_increasing(source: str, field: str, values: np.ndarray) -> None:
    """Raise on the first row where a 1-D sequence does not strictly increase."""
    values = np.asarray(values)
    bad = np.diff(values) <= 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise ValidationError(
            source,
            field,
            row,
            f"not strictly increasing: {show(values[row])} follows {show(values[row - 1])}",
        )


def check_nonnegative(source: str, field: str, values: np.ndarray) -> None:
    """Raise on the first negative entry."""
    values = np.asarray(values)
    bad = values < 0
    if bad.any():
        row = first_row(bad)
        raise ValidationError(source, field, row, f"negative value {show(values[row])}")


def check_same_length(source: str, fields: dict[str, Any]) -> None:
    """Raise unless all arrays in `fields` share the same leading length."""
    lengths = {name: len(value) for name, value in fields.items() if value is not None}
    if len(set(lengths.values())) > 1:
        (ref_name, ref_len), *rest = lengths.items()
        for name, length in rest:
            if length != ref_len:
                raise ValidationError(
                    source,
                    name,
                    None,
                    f"length {length} does not match '{ref_name}' length {ref_len}",
                )


def check_edges(source: str, pre: Any, post: Any, n_neurons: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate an edge list ``pre[e] → post[e]`` of neuron indices and return it as int64 arrays.

    Checks, in order: integer dtype and 1-D shape of each of ``pre`` and ``post``, equal lengths, and every
    index in ``[0, n_neurons)``. An empty list counts as integer (``np.asarray([])`` is float64).

    Args:
      source: named in errors.
      pre, post: ``[E]`` integer neuron indices (array-like).
      n_neurons: ``N``.

    Returns:
      ``(pre [E] int64, post [E] int64)``.

    Raises:
      ValidationError: naming the field (``'pre'``/``'post'``) and, for an out-of-range index, its row.

    Example:
      >>> check_edges("example", [0, 2], [1, 0], 3)[1].tolist()
      [1, 0]
    """
    edges = {}
    for name, value in (("pre", pre), ("post", post)):
        value = np.asarray(value)
        if value.dtype.kind not in "iu" and value.size > 0:
            raise ValidationError(
                source, name, None, f"expected integer neuron indices, got dtype {value.dtype}"
            )
        check_shape(source, name, value, (None,))
        edges[name] = value
    check_same_length(source, edges)
    for name, value in edges.items():
        check_index_range(source, name, value, n_neurons)
    return edges["pre"].astype(np.int64), edges["post"].astype(np.int64)
