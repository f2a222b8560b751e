"""Storage: connectomes, recordings and calcium volumes as tensorstore (zarr) directories.

This is the only module of mesojax that talks to tensorstore; everything else sees numpy arrays and
:class:`TensorStoreArray`, a lazy ``[T, ...]`` array that reads only the chunks an index touches, so a
recording larger than memory is used window by window (``Recording.window``) without being loaded whole.

A store is a directory::

    store/
      meta.json          format, version, sizes, string ids / names / cell types, which fields exist
      <field>/           one zarr v3 array per numeric field (e.g. traces/, timestamps/, xyz/, pre/)

Every chunk is blosc-compressed and carries a CRC32C checksum (zarr v3 ``crc32c`` codec), so a flipped
bit on disk is an error naming the store, field, chunk and first row, never silently wrong values.
Stores of format version 1 (zarr v2 arrays, no checksums) are still read.

Safety: a store is always built in a hidden temporary sibling directory (``.<name>.mesojax-tmp-<hex>``)
and renamed onto ``path`` only when complete, so a crash or a failed write never leaves a half-written
store at ``path``. An existing ``path`` is refused unless ``overwrite=True``; it is then swapped out
atomically (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames through a backup name, which
never loses the old store) and only then deleted. Opening checks the metadata, every array's shape and
dtype and that no chunk file is missing; unreadable data raises one :class:`ValidationError` naming the
store path, the field, the first bad row and the problem.

Conventions: every µm triple (positions, centroids, voxel sizes, origins) is **x, y, z**; only volume
*array axes* are ``[T, Z, Y, X]``. Voxel ``(z, y, x)`` has its centre at
``origin_um + (x, y, z) * voxel_size_um``.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from mesojax.data import Recording
    >>> from mesojax.data import storage
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> rec = Recording(traces=np.ones((100, 4), np.float32), timestamps=np.arange(100) / 10.0)
    >>> storage.write_recording(root / "rec", rec, chunk_t=32)
    >>> lazy = storage.open_recording(root / "rec")
    >>> lazy.is_lazy, lazy.window(10, 20).traces.shape
    (True, (10, 4))
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import errno
import json
import math
import os
import pathlib
import shutil
import uuid
import weakref
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse
import tensorstore as ts

from mesojax.data import validation as V
from mesojax.data.connectome import Connectome
from mesojax.data.recording import Recording

PathLike = str | os.PathLike
FORMAT_VERSION = 2  # 2: zarr v3 arrays with checksummed chunks; 1: zarr v2 (read only)
READABLE_VERSIONS = (1, 2)
META_FILE = "meta.json"
CONNECTOME_FORMAT = "mesojax.connectome"
RECORDING_FORMAT = "mesojax.recording"
VOLUME_FORMAT = "mesojax.volume"

# Applied in order when writing: raw little-endian bytes, blosc (lz4 + byte shuffle), then a CRC32C
# checksum of the compressed chunk, verified on every read.
_CODECS = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}},
    {"name": "crc32c"},
]
_TMP_TAG = ".mesojax-tmp-"
_CHUNK_BYTES = 4 << 20  # target uncompressed chunk size: big enough for fast IO, small enough for windows
_EXTRACT_BYTES = 64 << 20  # default volume bytes read per time chunk in extract_point_sources
_MAX_PENDING_WRITES = 2  # writes still being compressed/flushed while the caller computes the next block


# =====================================================================================================
# Atomic publishing of a store directory
# =====================================================================================================

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _load_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _rename2(src: pathlib.Path, dst: pathlib.Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False when the call or the flag is unsupported here."""
    if _renameat2 is None:
        return False
    at_fdcwd = -100
    if _renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _fsync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def _refuse_existing(path: pathlib.Path, overwrite: bool) -> None:
    """Raise unless `path` is free, or `overwrite` and `path` is a mesojax store (never replace other data)."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise FileExistsError(f"{path}: already exists; pass overwrite=True to replace it")
    if not (path.is_dir() and (path / META_FILE).is_file()):
        raise FileExistsError(
            f"{path}: exists and is not a mesojax store (no {META_FILE}); refusing to replace it"
        )


def _staging_dir(path: pathlib.Path, overwrite: bool) -> pathlib.Path:
    """Create the hidden temporary sibling directory a store at `path` is built in."""
    _refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}{_TMP_TAG}{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    return tmp


def _publish(tmp: pathlib.Path, path: pathlib.Path, overwrite: bool) -> None:
    """Move the complete store `tmp` to `path` in one step; an old store there is swapped out, then deleted."""
    _refuse_existing(path, overwrite)
    if not os.path.lexists(path):
        try:
            if not _rename2(tmp, path, _RENAME_NOREPLACE):
                if os.path.lexists(path):
                    raise FileExistsError(errno.EEXIST, "exists", str(path))
                os.rename(tmp, path)
            _fsync_dir(path.parent)
            return
        except FileExistsError:
            _refuse_existing(path, overwrite)  # someone created it meanwhile: raise unless we may replace
    if _rename2(tmp, path, _RENAME_EXCHANGE):
        old = tmp  # after the exchange the temporary name holds the old store
    else:
        old = path.parent / f".{path.name}.mesojax-old-{uuid.uuid4().hex[:12]}"
        os.rename(path, old)  # the old store is never deleted before the new one is in place
        os.rename(tmp, path)
    _fsync_dir(path.parent)
    _remove(old)


def _write_meta(root: pathlib.Path, meta: dict) -> None:
    with open(root / META_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def _read_meta(path: pathlib.Path, expected_format: str) -> dict:
    src = str(path)
    if not path.is_dir():
        raise V.ValidationError(src, "path", None, "no store directory here" if not path.exists() else
                                "not a directory")
    try:
        with open(path / META_FILE, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise V.ValidationError(src, META_FILE, None, "missing (not a complete mesojax store)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise V.ValidationError(src, META_FILE, None, f"not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise V.ValidationError(src, META_FILE, None, "expected a JSON object")
    fmt = meta.get("format")
    if fmt != expected_format:
        raise V.ValidationError(src, "format", None, f"is {fmt!r}, expected {expected_format!r}")
    if meta.get("version") not in READABLE_VERSIONS:
        raise V.ValidationError(
            src, "version", None,
            f"unsupported format version {meta.get('version')!r} (this mesojax reads {list(READABLE_VERSIONS)})"
        )
    return meta


def _meta_get(meta: dict, key: str, source: str, kind: type | tuple[type, ...]) -> Any:
    if key not in meta:
        raise V.ValidationError(source, key, None, f"missing from {META_FILE}")
    value = meta[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise V.ValidationError(source, key, None, f"expected {kind} in {META_FILE}, got {value!r}")
    return value


def _meta_strings(meta: dict, key: str, source: str, length: int | None) -> list[str]:
    values = _meta_get(meta, key, source, list)
    if not all(isinstance(v, str) for v in values):
        row = next(i for i, v in enumerate(values) if not isinstance(v, str))
        raise V.ValidationError(source, key, row, f"expected a string, got {values[row]!r}")
    if length is not None and len(values) != length:
        raise V.ValidationError(source, key, None, f"has {len(values)} entries, expected {length}")
    return values


# =====================================================================================================
# zarr arrays through tensorstore
# =====================================================================================================


def _short(err: BaseException) -> str:
    """The useful part of a tensorstore error (drop the echoed spec)."""
    text = str(err).split(" [tensorstore_spec=")[0].split("\n")[0]
    return text if len(text) <= 300 else text[:300] + "..."


def _is_zarr(path: pathlib.Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zarray").is_file()


def _zarr_spec(path: pathlib.Path) -> dict:
    """The tensorstore spec of an existing array: zarr v3 (``zarr.json``) or v2 (``.zarray``)."""
    driver = "zarr3" if (path / "zarr.json").is_file() else "zarr"
    return {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}}


def _default_chunks(shape: Sequence[int], itemsize: int) -> list[int]:
    """Chunks that keep all trailing axes whole and about `_CHUNK_BYTES` per chunk along axis 0."""
    row_bytes = itemsize * math.prod(shape[1:])
    rows = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    return [max(1, min(shape[0], rows)) if shape else 1] + [max(1, s) for s in shape[1:]]


def _create_array(path: pathlib.Path, shape: Sequence[int], dtype: Any, chunks: Sequence[int] | None = None):
    """A new zarr v3 array at `path` with checksummed chunks; floats are NaN where never written, integers 0."""
    dtype = np.dtype(dtype)
    chunks = list(chunks) if chunks is not None else _default_chunks(shape, dtype.itemsize)
    chunks = [max(1, min(int(c), max(int(s), 1))) for c, s in zip(chunks, shape)]
    codecs = [dict(c) for c in _CODECS]
    codecs[1] = {"name": "blosc", "configuration": dict(_CODECS[1]["configuration"], typesize=dtype.itemsize)}
    metadata = {
        "shape": [int(s) for s in shape],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "data_type": dtype.name,
        "fill_value": "NaN" if dtype.kind == "f" else 0,
        "codecs": codecs,
    }
    # Store every chunk, even one equal to the fill value, so that a missing chunk file means corruption.
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}, "metadata": metadata,
            "store_data_equal_to_fill_value": True}
    return ts.open(spec, create=True).result()


def _write_array(root: pathlib.Path, name: str, array: np.ndarray, chunks: Sequence[int] | None = None) -> None:
    array = np.ascontiguousarray(array)
    store = _create_array(root / name, array.shape, array.dtype, chunks)
    if array.size:
        store.write(array).result()


def _chunk_rows(store) -> int:
    return int(store.chunk_layout.read_chunk.shape[0])


def _first_bad_row(store, t0: int, t1: int) -> int | None:
    """Re-read rows ``[t0, t1)`` chunk by chunk to find the first row of the first unreadable chunk."""
    step = _chunk_rows(store)
    for start in range((t0 // step) * step, t1, step):
        lo, hi = max(start, t0), min(start + step, t1)
        try:
            store[lo:hi].read().result()
        except ValueError:
            return lo
    return None


def _chunk_name(store, row: int) -> str:
    """The file (relative to the array) of the first chunk holding `row`, in the store's own layout."""
    index = [row // _chunk_rows(store)] + [0] * (store.rank - 1)
    if store.spec().to_json().get("driver") == "zarr3":
        return "c/" + "/".join(map(str, index))
    return ".".join(map(str, index))


def _read(store, key: tuple, *, source: str, field: str, rows: tuple[int, int]) -> np.ndarray:
    """``store[key]`` as numpy; a read failure becomes a ValidationError naming the chunk and first bad row."""
    try:
        return store[key].read().result()
    except ValueError as err:
        row = _first_bad_row(store, *rows) if store.rank else None
        where = f" in chunk file {_chunk_name(store, row)}" if row is not None else ""
        raise V.ValidationError(source, field, row, f"corrupt or unreadable data{where} (checksum or "
                                f"decompression failed): {_short(err)}") from None


def _chunk_files(folder: pathlib.Path, rank: int) -> Iterator[tuple[int, ...]]:
    """Chunk indices present in a zarr array folder: v3 ``c/i/j`` files or v2 ``i.j`` files."""
    if (folder / "zarr.json").is_file():
        base = folder / "c"
        if not base.is_dir():
            return
        for dirpath, _, files in os.walk(base):
            rel = pathlib.Path(dirpath).relative_to(base).parts
            for f in files:
                parts = (*rel, f)
                if len(parts) == rank and all(p.isdigit() for p in parts):
                    yield tuple(int(p) for p in parts)
        return
    for entry in os.listdir(folder):
        parts = entry.split(".")
        if len(parts) == rank and all(p.isdigit() for p in parts):
            yield tuple(int(p) for p in parts)


def _check_chunk_files(root: pathlib.Path, name: str, store, source: str) -> None:
    """Raise on the first chunk file missing from a mesojax-written zarr array (all chunks are stored)."""
    shape = tuple(store.shape)
    if not shape or 0 in shape:
        return
    chunks = tuple(store.chunk_layout.read_chunk.shape)
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks))
    present = np.zeros(grid, bool)
    for idx in _chunk_files(root / name, len(grid)):
        if all(i < g for i, g in zip(idx, grid)):
            present[idx] = True
    if not present.all():
        first = np.argwhere(~present)[0]
        v3 = (root / name / "zarr.json").is_file()
        file = ("c/" + "/".join(map(str, first))) if v3 else ".".join(map(str, first))
        raise V.ValidationError(
            source, name, int(first[0]) * chunks[0],
            f"chunk file {file} is missing (store truncated or partially copied)",
        )


def _open_array(
    root: pathlib.Path, name: str, *, source: str, shape: Sequence[int | None], dtype: Any,
    check_chunks: bool = True,
):
    """Open the zarr array `root/name` and check its shape (None = any) and dtype."""
    if not (root / name).is_dir():
        raise V.ValidationError(source, name, None, f"missing array (no zarr directory {root / name})")
    try:
        store = ts.open(_zarr_spec(root / name), open=True, read=True).result()
    except ValueError as err:
        raise V.ValidationError(source, name, None, f"unreadable zarr array: {_short(err)}") from None
    V.check_shape(source, name, store, shape)  # reads only `.shape`
    actual = np.dtype(store.dtype.numpy_dtype)
    if actual != np.dtype(dtype):
        raise V.ValidationError(source, name, None, f"expected dtype {np.dtype(dtype)}, stored {actual}")
    if check_chunks:
        _check_chunk_files(root, name, store, source)
    return store


def _read_all(root: pathlib.Path, name: str, *, source: str, shape: Sequence[int | None], dtype: Any) -> np.ndarray:
    store = _open_array(root, name, source=source, shape=shape, dtype=dtype)
    n = int(store.shape[0]) if store.rank else 0
    return _read(store, (), source=source, field=name, rows=(0, n))


# =====================================================================================================
# Lazy arrays
# =====================================================================================================


def _normalise_index(index: Any, shape: tuple[int, ...], source: str, field: str):
    """Split a numpy index into positive-step covering slices (read from disk) and a numpy index on the block.

    Applying the second part to the block read with the first reproduces numpy semantics exactly
    (negative indices and steps, integer arrays, boolean masks), while disk reads stay a box.
    """
    if not isinstance(index, tuple):
        index = (index,)
    n_ellipsis = sum(i is Ellipsis for i in index)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ellipsis:
        at = next(k for k, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    if len(index) > len(shape):
        raise IndexError(f"too many indices for {field} of rank {len(shape)}")
    index = index + (slice(None),) * (len(shape) - len(index))
    cover, post = [], []
    for axis, (idx, n) in enumerate(zip(index, shape)):
        if isinstance(idx, (int, np.integer)) and not isinstance(idx, (bool, np.bool_)):
            i = int(idx)
            if not -n <= i < n:
                raise IndexError(f"{source}: {field}: index {i} is out of bounds for axis {axis} with size {n}")
            i %= n
            cover.append(slice(i, i + 1))
            post.append(0)
        elif isinstance(idx, slice):
            start, stop, step = idx.indices(n)
            rng = range(start, stop, step)
            if len(rng) == 0:
                cover.append(slice(0, 0))
                post.append(slice(None))
            elif step > 0:
                cover.append(slice(rng[0], rng[-1] + 1, step) if step > 1 else slice(rng[0], rng[-1] + 1))
                post.append(slice(None))
            else:
                cover.append(slice(rng[-1], rng[0] + 1, -step) if step < -1 else slice(rng[-1], rng[0] + 1))
                post.append(slice(None, None, -1))
        elif idx is None:
            raise IndexError(f"{field}: np.newaxis is not supported on a stored array; index the result")
        else:
            arr = np.asarray(idx)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise IndexError(f"{field}: boolean index of shape {arr.shape} for axis {axis} of size {n}")
                arr = np.flatnonzero(arr)
            if arr.dtype.kind not in "iu":
                raise IndexError(f"{field}: unsupported index {idx!r} for axis {axis}")
            if arr.size and not ((arr >= -n) & (arr < n)).all():
                raise IndexError(f"{source}: {field}: index out of bounds for axis {axis} with size {n}")
            arr = arr % n if n else arr
            lo = int(arr.min()) if arr.size else 0
            hi = int(arr.max()) + 1 if arr.size else 0
            cover.append(slice(lo, hi))
            post.append(arr - lo)
    return tuple(cover), tuple(post)


class TensorStoreArray:
    """A lazily read array on disk: indexing reads only the chunks it touches and returns numpy.

    Satisfies :class:`mesojax.data.recording.TimeArray`, so it can be a ``Recording.traces``. Any numpy
    index works (ints, slices with any step, ``...``, integer arrays, boolean masks; not ``None``); the
    disk read is the box covering the index. ``np.asarray(a)`` reads the whole array (explicitly).

    Attributes:
      shape: the array shape, e.g. ``[T, Nr]``.
      dtype: the numpy dtype.
      source: the store path (named in errors).
      field: the stored field name (named in errors).

    Example:
        >>> rec = open_recording("run1.zarr")                    # doctest: +SKIP
        >>> rec.traces[1000:1064].shape                          # doctest: +SKIP
        (64, 100000)
    """

    def __init__(self, store: Any, *, source: str = "TensorStoreArray", field: str = "array"):
        self._store = store
        self.source = source
        self.field = field
        self.shape = tuple(int(s) for s in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def chunks(self) -> tuple[int, ...]:
        """The stored chunk shape (read windows aligned to ``chunks[0]`` touch the fewest files)."""
        return tuple(int(c) for c in self._store.chunk_layout.read_chunk.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        cover, post = _normalise_index(index, self.shape, self.source, self.field)
        rows = (cover[0].start, max(cover[0].start, cover[0].stop)) if cover else (0, 0)
        if any(c.start == c.stop for c in cover):
            shape = tuple(0 if c.start == c.stop else len(range(c.start, c.stop, c.step or 1)) for c in cover)
            block = np.empty(shape, self.dtype)
        else:
            block = _read(self._store, cover, source=self.source, field=self.field, rows=rows)
        return block[post]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def iter_chunks(
        self, chunk: int | None = None, *, box: tuple[slice, ...] = ()
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t0, self[t0:t0 + chunk, *box])`` along axis 0, keeping the next read in flight.

        Args:
          chunk: rows per block (default: the stored chunk rows, so each block touches whole chunks).
          box: basic non-negative, unit-step slices for the trailing axes (e.g. a volume's bounding box).
        """
        chunk = int(chunk or self.chunks[0])
        t = self.shape[0]
        box = tuple(slice(*sl.indices(n)[:2]) for sl, n in zip(box, self.shape[1:]))
        read = lambda t0: self._store[(slice(t0, min(t0 + chunk, t)),) + box].read()  # noqa: E731
        starts = range(0, t, chunk)
        future = read(0) if t else None
        for k, t0 in enumerate(starts):
            ahead = read(starts[k + 1]) if k + 1 < len(starts) else None
            try:
                block = future.result()
            except ValueError as err:
                row = _first_bad_row(self._store, t0, min(t0 + chunk, t))
                raise V.ValidationError(
                    self.source, self.field, row, f"corrupt or unreadable data: {_short(err)}"
                ) from None
            future = ahead
            yield t0, block

    def __repr__(self) -> str:
        return f"TensorStoreArray(shape={list(self.shape)}, dtype={self.dtype}, source={self.source!r})"


def io_counters() -> dict[str, int]:
    """Process-wide local-file IO counters of tensorstore (``bytes_read``, ``bytes_written``, ``reads``).

    Take the difference around a call to see what it read; used to check that window reads are local.
    """
    wanted = {"bytes_read": "bytes_read", "bytes_written": "bytes_written", "read": "reads"}
    out = {name: 0 for name in wanted.values()}
    for metric in ts.experimental_collect_matching_metrics("/tensorstore/kvstore/file/"):
        key = metric["name"].rsplit("/", 1)[-1]
        if key in wanted:
            out[wanted[key]] = int(sum(v.get("value", 0) for v in metric.get("values", [])))
    return out


# =====================================================================================================
# Connectome
# =====================================================================================================


def write_connectome(path: PathLike, connectome: Connectome, *, overwrite: bool = False) -> None:
    """Write `connectome` as a store directory at `path` (atomically; see the module docstring).

    Numeric fields become zarr arrays (``xyz, pre, post, sign, kind``, and ``syn_xyz, strength, ids`` when
    present / integer); string ids, cell types, strength names and the source go into ``meta.json``.

    Raises:
      FileExistsError: `path` exists and not `overwrite` (or is not a mesojax store).
    """
    path = pathlib.Path(path)
    tmp = _staging_dir(path, overwrite)
    try:
        c = connectome
        str_ids = c.ids.dtype.kind in "US"
        meta = {
            "format": CONNECTOME_FORMAT, "version": FORMAT_VERSION,
            "n_neurons": c.n_neurons, "n_synapses": c.n_synapses, "source": c.source,
            "id_dtype": "str" if str_ids else "int64",
            "ids": c.ids.tolist() if str_ids else None,
            "cell_type": c.cell_type.tolist(),
            "strength_names": list(c.strength_names),
            "has_syn_xyz": c.syn_xyz is not None, "has_strength": c.strength is not None,
        }
        if not str_ids:
            _write_array(tmp, "ids", c.ids)
        for name in ("xyz", "pre", "post", "sign", "kind", "syn_xyz", "strength"):
            if getattr(c, name) is not None:
                _write_array(tmp, name, getattr(c, name))
        _write_meta(tmp, meta)
        _publish(tmp, path, overwrite)
    except BaseException:
        _remove(tmp)
        raise


def open_connectome(path: PathLike) -> Connectome:
    """Read a connectome store written by :func:`write_connectome` (eagerly; a connectome fits in memory).

    Raises:
      ValidationError: naming the store path, field, row and problem for a missing/corrupt ``meta.json``,
        a missing, mis-shaped or unreadable array, or content the :class:`Connectome` checks reject.
    """
    path = pathlib.Path(path)
    src = str(path)
    meta = _read_meta(path, CONNECTOME_FORMAT)
    n = _meta_get(meta, "n_neurons", src, int)
    e = _meta_get(meta, "n_synapses", src, int)
    id_dtype = _meta_get(meta, "id_dtype", src, str)
    if id_dtype == "str":
        ids = np.asarray(_meta_strings(meta, "ids", src, n), dtype=str)
    elif id_dtype == "int64":
        ids = _read_all(path, "ids", source=src, shape=(n,), dtype=np.int64)
    else:
        raise V.ValidationError(src, "id_dtype", None, f"expected 'str' or 'int64', got {id_dtype!r}")
    cell_type = np.asarray(_meta_strings(meta, "cell_type", src, n), dtype=str)
    names = tuple(_meta_strings(meta, "strength_names", src, None))
    read = lambda name, shape, dtype: _read_all(path, name, source=src, shape=shape, dtype=dtype)  # noqa: E731
    fields = dict(
        xyz=read("xyz", (n, 3), np.float32), pre=read("pre", (e,), np.int32), post=read("post", (e,), np.int32),
        sign=read("sign", (e,), np.int8), kind=read("kind", (e,), np.int8),
        syn_xyz=read("syn_xyz", (e, 3), np.float32) if _meta_get(meta, "has_syn_xyz", src, bool) else None,
        strength=read("strength", (e, len(names)), np.float32) if _meta_get(meta, "has_strength", src, bool) else None,
    )
    try:
        return Connectome(
            ids=ids, cell_type=cell_type, strength_names=names, source=_meta_get(meta, "source", src, str), **fields
        )
    except V.ValidationError as err:
        raise V.ValidationError(src, err.field, err.row, err.problem) from None


# =====================================================================================================
# Streaming writers
# =====================================================================================================


class _ShapeOnly:
    """A shape/dtype stand-in for traces that are not written yet (lets Recording validate everything else)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.float32):
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        raise RuntimeError("traces are not written yet")


def _discard(tmp: pathlib.Path, pending: collections.deque) -> None:
    """Wait for in-flight writes (they would recreate files), then delete the staging directory."""
    while pending:
        try:
            pending.popleft()[2].result()
        except ValueError:
            pass
    _remove(tmp)


class _TimeSeriesWriter:
    """Streams a ``[T, ...]`` array into a staged store; publishes it only when every time row is written."""

    def __init__(self, path: pathlib.Path, tmp: pathlib.Path, field: str, store, meta: dict, overwrite: bool):
        self.path, self._tmp, self.field, self._store, self._meta = path, tmp, field, store, meta
        self._overwrite = overwrite
        self.shape = tuple(int(s) for s in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self._written = np.zeros((self.shape[0],), bool)
        self._pending: collections.deque = collections.deque()
        self._chunk_t = _chunk_rows(store)
        self._state = "open"
        # Remove the staging directory if the writer is dropped without commit/abort (e.g. a crash upstream).
        self._finalizer = weakref.finalize(self, _discard, tmp, self._pending)

    @property
    def n_timesteps(self) -> int:
        return self.shape[0]

    @property
    def rows_written(self) -> int:
        """Number of distinct time rows written so far."""
        return int(self._written.sum())

    def _fail(self, err: BaseException) -> None:
        self.abort()
        raise err

    def _drain(self, upto: int = 0, overlapping: tuple[int, int] | None = None) -> None:
        """Wait for pending writes until at most `upto` remain and none overlaps the time chunks `overlapping`."""
        while self._pending and (
            len(self._pending) > upto
            or (overlapping is not None and any(lo < overlapping[1] and overlapping[0] < hi
                                                for lo, hi, _ in self._pending))
        ):
            lo, _, future = self._pending.popleft()
            try:
                future.result()
            except ValueError as err:
                self._fail(V.ValidationError(str(self.path), self.field, lo * self._chunk_t,
                                             f"write failed: {_short(err)}"))

    def write(self, t0: int, block: np.ndarray) -> None:
        """Write ``block`` (``[t, *shape[1:]]``) at time rows ``t0 .. t0 + t - 1``.

        Blocks may come in any order and may be rewritten; writing is asynchronous (the block is copied,
        so the caller may reuse it), and errors of an earlier block surface at a later call.

        Raises:
          ValidationError: wrong shape / non-numeric block or rows outside ``[0, T)`` (the writer stays usable).
        """
        if self._state != "open":
            raise RuntimeError(f"{self.path}: writer is {self._state}; no more writes")
        src, field = str(self.path), self.field
        block = np.asarray(block)
        V.check_numeric(src, field, block)
        V.check_shape(src, field, block, (None,) + self.shape[1:])
        if not np.can_cast(block.dtype, self.dtype, "same_kind"):
            raise V.ValidationError(src, field, None, f"cannot store {block.dtype} data in a {self.dtype} array")
        t0 = int(t0)
        t1 = t0 + block.shape[0]
        if t0 < 0 or t1 > self.shape[0]:
            raise V.ValidationError(
                src, field, t0, f"block rows [{t0}, {t1}) are outside the {self.shape[0]} time rows of the store"
            )
        if t1 == t0:
            return
        chunks = (t0 // self._chunk_t, -(-t1 // self._chunk_t))
        self._drain(upto=_MAX_PENDING_WRITES - 1, overlapping=chunks)
        try:
            futures = self._store[t0:t1].write(block.astype(self.dtype, copy=False))
            futures.copy.result()
        except ValueError as err:
            self._fail(V.ValidationError(src, field, t0, f"write failed: {_short(err)}"))
        self._pending.append((chunks[0], chunks[1], futures.commit))
        self._written[t0:t1] = True

    def commit(self) -> pathlib.Path:
        """Check that every time row was written, then publish the store at `path` atomically.

        Raises:
          ValidationError: naming the first time row never written; nothing is left at `path`.
          FileExistsError: `path` appeared meanwhile and not `overwrite`.
        """
        if self._state == "committed":
            return self.path
        if self._state != "open":
            raise RuntimeError(f"{self.path}: writer is {self._state}; cannot commit")
        try:
            self._drain(upto=0)
            if not self._written.all():
                row = int(np.flatnonzero(~self._written)[0])
                missing = int((~self._written).sum())
                raise V.ValidationError(
                    str(self.path), self.field, row,
                    f"{missing} of {self.shape[0]} time rows were never written; nothing was published",
                )
            _write_meta(self._tmp, self._meta)
            _publish(self._tmp, self.path, self._overwrite)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self._finalizer.detach()
        return self.path

    close = commit

    def abort(self) -> None:
        """Discard everything written; `path` is left as it was."""
        if self._state == "committed":
            return
        self._state = "aborted"
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, shape={list(self.shape)}, "
                f"rows_written={self.rows_written}, {self._state})")


class RecordingWriter(_TimeSeriesWriter):
    """Streams traces ``[T, Nr]`` block by block into a recording store; see :func:`create_recording`."""


class VolumeWriter(_TimeSeriesWriter):
    """Streams a calcium volume ``[T, Z, Y, X]`` frame block by frame block; see :func:`create_volume`."""


# =====================================================================================================
# Recording
# =====================================================================================================


def _recording_chunks(
    source: str, t: int, nr: int, chunk_t: int | None, chunk_n: int | None
) -> tuple[int, int]:
    chunk_n = max(1, min(nr, 4096)) if chunk_n is None else int(chunk_n)
    chunk_t = max(1, _CHUNK_BYTES // (4 * max(chunk_n, 1))) if chunk_t is None else int(chunk_t)
    if chunk_t < 1 or chunk_n < 1:
        raise V.ValidationError(source, "chunks", None, f"chunk sizes must be >= 1, got {[chunk_t, chunk_n]}")
    return max(1, min(chunk_t, t)), max(1, min(chunk_n, nr))


def create_recording(
    path: PathLike,
    n_timesteps: int,
    n_sources: int,
    *,
    timestamps: np.ndarray,
    rate_hz: float | None = None,
    positions: np.ndarray | None = None,
    neuron_ids: np.ndarray | None = None,
    stimulus: np.ndarray | None = None,
    behaviour: np.ndarray | None = None,
    behaviour_names: Sequence[str] = (),
    modes: np.ndarray | None = None,
    mode_names: Sequence[str] = (),
    source: str | None = None,
    trial_starts: np.ndarray | None = None,
    stimulus_positions: np.ndarray | None = None,
    chunk_t: int | None = None,
    chunk_n: int | None = None,
    overwrite: bool = False,
) -> RecordingWriter:
    """Start a recording store whose ``[T, Nr]`` traces are streamed in with ``writer.write(t0, block)``.

    All small fields are given here and validated at once (as :class:`Recording` does), so a bad timestamp
    fails before any simulation time is spent. Nothing appears at `path` until ``commit()`` (or leaving
    the ``with`` block without an exception) finds every time row written.

    Args:
      path: the store directory to create.
      n_timesteps, n_sources: T and Nr.
      timestamps: ``[T]`` seconds, strictly increasing. Other fields as in :class:`Recording`.
      source: the recording's name (default: the path).
      chunk_t, chunk_n: chunk shape of the traces (default: all sources up to 4096 per chunk, ~4 MiB).
      overwrite: replace an existing store at `path` (atomically, on commit).

    Returns:
      A :class:`RecordingWriter` (a context manager).

    Example:
        >>> with create_recording(path, T, N, timestamps=ts, chunk_t=256) as w:   # doctest: +SKIP
        ...     for t0 in range(0, T, 256):
        ...         w.write(t0, simulate(t0, 256))
    """
    path = pathlib.Path(path)
    src = str(path)
    t, nr = int(n_timesteps), int(n_sources)
    if t < 1 or nr < 0:
        raise V.ValidationError(src, "traces", None, f"need T >= 1 and Nr >= 0, got T={t}, Nr={nr}")
    try:
        template = Recording(
            traces=_ShapeOnly((t, nr)), timestamps=timestamps, rate_hz=rate_hz, positions=positions,
            neuron_ids=neuron_ids, stimulus=stimulus, behaviour=behaviour, behaviour_names=tuple(behaviour_names),
            modes=modes, mode_names=tuple(mode_names), source=source or src, trial_starts=trial_starts,
            stimulus_positions=stimulus_positions,
        )
    except V.ValidationError as err:
        raise V.ValidationError(src, err.field, err.row, err.problem) from None
    chunks = _recording_chunks(src, t, nr, chunk_t, chunk_n)
    tmp = _staging_dir(path, overwrite)
    try:
        meta = _recording_meta(tmp, template)
        store = _create_array(tmp / "traces", (t, nr), np.float32, chunks)
        return RecordingWriter(path, tmp, "traces", store, meta, overwrite)
    except BaseException:
        _remove(tmp)
        raise


# Optional small arrays of a recording store (listed in meta.json's "fields" when present).
_OPTIONAL_FIELDS = ("positions", "stimulus", "behaviour", "modes", "trial_starts", "stimulus_positions")


def _recording_meta(root: pathlib.Path, r: Recording) -> dict:
    """Write the small arrays of `r` into `root` and return its meta.json content."""
    ids = r.neuron_ids
    id_dtype = None if ids is None else ("str" if ids.dtype.kind in "US" else "int64")
    _write_array(root, "timestamps", r.timestamps)
    for name in _OPTIONAL_FIELDS:
        if getattr(r, name) is not None:
            _write_array(root, name, getattr(r, name))
    if id_dtype == "int64":
        _write_array(root, "neuron_ids", ids.astype(np.int64))
    rate = float(r.rate_hz)
    return {
        "format": RECORDING_FORMAT, "version": FORMAT_VERSION,
        "n_timesteps": r.n_timesteps, "n_sources": r.n_sources, "source": r.source,
        "rate_hz": rate if math.isfinite(rate) else None,
        "neuron_id_dtype": id_dtype,
        "neuron_ids": ids.tolist() if id_dtype == "str" else None,
        "behaviour_names": list(r.behaviour_names), "mode_names": list(r.mode_names),
        "fields": sorted(n for n in _OPTIONAL_FIELDS if getattr(r, n) is not None),
    }


def write_recording(
    path: PathLike,
    recording: Recording,
    *,
    chunk_t: int | None = None,
    chunk_n: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write `recording` as a store at `path`; lazy traces are copied time chunk by time chunk.

    Args:
      path: the store directory to create (atomically; see the module docstring).
      recording: in-memory or lazy :class:`Recording`.
      chunk_t, chunk_n: chunk shape of the traces (see :func:`create_recording`).
      overwrite: replace an existing store at `path`.
    """
    r = recording
    writer = create_recording(
        path, r.n_timesteps, r.n_sources, timestamps=r.timestamps, rate_hz=r.rate_hz, positions=r.positions,
        neuron_ids=r.neuron_ids, stimulus=r.stimulus, behaviour=r.behaviour, behaviour_names=r.behaviour_names,
        modes=r.modes, mode_names=r.mode_names, source=r.source, trial_starts=r.trial_starts,
        stimulus_positions=r.stimulus_positions, chunk_t=chunk_t, chunk_n=chunk_n, overwrite=overwrite,
    )
    with writer:
        step = writer._chunk_t * max(1, _EXTRACT_BYTES // max(1, 4 * writer._chunk_t * max(r.n_sources, 1)))
        for t0 in range(0, r.n_timesteps, step):
            writer.write(t0, np.asarray(r.traces[t0:min(t0 + step, r.n_timesteps)], np.float32))


def open_recording(path: PathLike, *, lazy: bool = True) -> Recording:
    """Open a recording store; traces stay on disk as a :class:`TensorStoreArray` unless ``lazy=False``.

    Timestamps, positions, ids, stimulus, behaviour and modes are small and read eagerly.

    Raises:
      ValidationError: naming the store path, field, row and problem (missing/corrupt metadata, missing or
        mis-shaped arrays, missing chunk files, unreadable data, content the Recording checks reject).
    """
    path = pathlib.Path(path)
    src = str(path)
    meta = _read_meta(path, RECORDING_FORMAT)
    t = _meta_get(meta, "n_timesteps", src, int)
    nr = _meta_get(meta, "n_sources", src, int)
    fields = set(_meta_strings(meta, "fields", src, None))
    read = lambda name, shape, dtype: (  # noqa: E731
        _read_all(path, name, source=src, shape=shape, dtype=dtype) if name in fields else None
    )
    traces_store = _open_array(path, "traces", source=src, shape=(t, nr), dtype=np.float32)
    traces = TensorStoreArray(traces_store, source=src, field="traces")
    if not lazy:
        traces = traces[...]
    id_dtype = meta.get("neuron_id_dtype")
    if id_dtype is None:
        neuron_ids = None
    elif id_dtype == "str":
        neuron_ids = np.asarray(_meta_strings(meta, "neuron_ids", src, nr), dtype=str)
    elif id_dtype == "int64":
        neuron_ids = _read_all(path, "neuron_ids", source=src, shape=(nr,), dtype=np.int64)
    else:
        raise V.ValidationError(src, "neuron_id_dtype", None, f"expected 'str', 'int64' or null, got {id_dtype!r}")
    rate = meta.get("rate_hz")
    if rate is not None and not isinstance(rate, (int, float)):
        raise V.ValidationError(src, "rate_hz", None, f"expected a number or null, got {rate!r}")
    try:
        return Recording(
            traces=traces,
            timestamps=_read_all(path, "timestamps", source=src, shape=(t,), dtype=np.float64),
            rate_hz=rate, positions=read("positions", (nr, 3), np.float32), neuron_ids=neuron_ids,
            stimulus=read("stimulus", (t, None), np.float32), behaviour=read("behaviour", (t, None), np.float32),
            behaviour_names=tuple(_meta_strings(meta, "behaviour_names", src, None)),
            modes=read("modes", (t,), np.int32), mode_names=tuple(_meta_strings(meta, "mode_names", src, None)),
            source=_meta_get(meta, "source", src, str), trial_starts=read("trial_starts", (None,), np.int64),
            stimulus_positions=read("stimulus_positions", (None, 3), np.float32),
        )
    except V.ValidationError as err:
        raise V.ValidationError(src, err.field, err.row, err.problem) from None


# =====================================================================================================
# Calcium volumes and point-source extraction
# =====================================================================================================


@dataclasses.dataclass(frozen=True)
class Volume:
    """A calcium-imaging volume on disk.

    Attributes:
      data: ``[T, Z, Y, X]`` lazy array.
      voxel_size_um: ``[3]`` float64 voxel size in µm, ordered **x, y, z**.
      origin_um: ``[3]`` float64 position (x, y, z µm) of the centre of voxel ``(0, 0, 0)``.
      timestamps: ``[T]`` float64 seconds, or None.
      source: the store path.
    """

    data: TensorStoreArray
    voxel_size_um: np.ndarray
    origin_um: np.ndarray
    timestamps: np.ndarray | None
    source: str


def _xyz_triple(source: str, field: str, value: Any, *, positive: bool) -> np.ndarray:
    arr = np.asarray(value, np.float64)
    arr = np.full((3,), float(arr)) if arr.ndim == 0 else arr
    V.check_shape(source, field, arr, (3,))
    V.check_finite(source, field, arr)
    if positive and (arr <= 0).any():
        raise V.ValidationError(source, field, None, f"must be positive (x, y, z µm), got {arr.tolist()}")
    return arr


def create_volume(
    path: PathLike,
    shape: Sequence[int],
    voxel_size_um: float | Sequence[float],
    *,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    timestamps: np.ndarray | None = None,
    dtype: Any = np.float32,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> VolumeWriter:
    """Start a calcium-volume store ``[T, Z, Y, X]`` streamed in with ``writer.write(t0, frames)``.

    Args:
      path: the store directory to create.
      shape: ``(T, Z, Y, X)``.
      voxel_size_um: voxel size in µm ordered **(x, y, z)** (a scalar means isotropic).
      origin_um: (x, y, z) µm of the centre of voxel (0, 0, 0).
      timestamps: optional ``[T]`` seconds (used for recordings extracted from the volume).
      dtype: stored dtype (e.g. float32 or uint16).
      chunks: chunk shape ``(t, z, y, x)``; default spatial tiles of at most 32x128x128 voxels, ~4 MiB.
      overwrite: replace an existing store at `path` (atomically, on commit).

    Returns:
      A :class:`VolumeWriter` (a context manager).
    """
    path = pathlib.Path(path)
    src = str(path)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise V.ValidationError(src, "shape", None, f"expected (T, Z, Y, X) with all sizes >= 1, got {list(shape)}")
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise V.ValidationError(src, "dtype", None, f"expected a numeric dtype, got {dtype}")
    voxel = _xyz_triple(src, "voxel_size_um", voxel_size_um, positive=True)
    origin = _xyz_triple(src, "origin_um", origin_um, positive=False)
    if timestamps is not None:
        timestamps = np.asarray(timestamps)
        V.check_numeric(src, "timestamps", timestamps)
        timestamps = timestamps.astype(np.float64)
        V.check_shape(src, "timestamps", timestamps, (shape[0],))
        V.check_finite(src, "timestamps", timestamps)
        V.check_increasing(src, "timestamps", timestamps)
    if chunks is None:
        spatial = (min(shape[1], 32), min(shape[2], 128), min(shape[3], 128))
        chunks = (max(1, min(shape[0], _CHUNK_BYTES // (dtype.itemsize * math.prod(spatial)))),) + spatial
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) != 4 or min(chunks) < 1:
        raise V.ValidationError(src, "chunks", None, f"expected 4 chunk sizes >= 1, got {list(chunks)}")
    tmp = _staging_dir(path, overwrite)
    try:
        if timestamps is not None:
            _write_array(tmp, "timestamps", timestamps)
        store = _create_array(tmp / "volume", shape, dtype, chunks)
        meta = {
            "format": VOLUME_FORMAT, "version": FORMAT_VERSION, "shape": list(shape), "axes": ["t", "z", "y", "x"],
            "dtype": dtype.str, "voxel_size_um_xyz": voxel.tolist(), "origin_um_xyz": origin.tolist(),
            "has_timestamps": timestamps is not None,
        }
        return VolumeWriter(path, tmp, "volume", store, meta, overwrite)
    except BaseException:
        _remove(tmp)
        raise


def write_volume(
    path: PathLike,
    volume: np.ndarray,
    voxel_size_um: float | Sequence[float],
    *,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    timestamps: np.ndarray | None = None,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
) -> None:
    """Write an in-memory ``[T, Z, Y, X]`` volume (its dtype kept) as a store; see :func:`create_volume`."""
    volume = np.asarray(volume)
    with create_volume(
        path, volume.shape, voxel_size_um, origin_um=origin_um, timestamps=timestamps, dtype=volume.dtype,
        chunks=chunks, overwrite=overwrite,
    ) as writer:
        writer.write(0, volume)


def open_volume(
    path: PathLike,
    *,
    voxel_size_um: float | Sequence[float] | None = None,
    origin_um: Sequence[float] | None = None,
) -> Volume:
    """Open a volume written by :func:`create_volume`, or any zarr (v2 or v3) array ``[T, Z, Y, X]`` at `path`.

    For a plain zarr array `voxel_size_um` (x, y, z) is required and `origin_um` defaults to zero; for a
    mesojax volume store they come from its metadata and, if given, must agree with it.
    """
    path = pathlib.Path(path)
    src = str(path)
    if (path / META_FILE).is_file():
        meta = _read_meta(path, VOLUME_FORMAT)
        shape = _meta_get(meta, "shape", src, list)
        store = _open_array(path, "volume", source=src, shape=shape, dtype=_meta_get(meta, "dtype", src, str))
        voxel = _xyz_triple(src, "voxel_size_um_xyz", _meta_get(meta, "voxel_size_um_xyz", src, list), positive=True)
        origin = _xyz_triple(src, "origin_um_xyz", _meta_get(meta, "origin_um_xyz", src, list), positive=False)
        for name, given, stored in (("voxel_size_um", voxel_size_um, voxel), ("origin_um", origin_um, origin)):
            if given is not None and not np.allclose(_xyz_triple(src, name, given, positive=False), stored):
                raise V.ValidationError(src, name, None, f"given {np.asarray(given).tolist()} but the store has "
                                        f"{stored.tolist()} (x, y, z µm)")
        timestamps = (_read_all(path, "timestamps", source=src, shape=(shape[0],), dtype=np.float64)
                      if _meta_get(meta, "has_timestamps", src, bool) else None)
    else:
        if not _is_zarr(path):
            raise V.ValidationError(src, "path", None, f"neither a mesojax volume ({META_FILE}) nor a zarr array")
        try:
            store = ts.open(_zarr_spec(path), open=True, read=True).result()
        except ValueError as err:
            raise V.ValidationError(src, "volume", None, f"unreadable zarr array: {_short(err)}") from None
        if store.rank != 4:
            raise V.ValidationError(src, "volume", None, f"expected rank 4 [T, Z, Y, X], got shape {list(store.shape)}")
        if np.dtype(store.dtype.numpy_dtype).kind not in "iuf":
            raise V.ValidationError(src, "volume", None, f"expected a numeric dtype, got {store.dtype}")
        if voxel_size_um is None:
            raise V.ValidationError(src, "voxel_size_um", None, "required for a plain zarr volume (x, y, z µm)")
        voxel = _xyz_triple(src, "voxel_size_um", voxel_size_um, positive=True)
        origin = _xyz_triple(src, "origin_um", (0.0, 0.0, 0.0) if origin_um is None else origin_um, positive=False)
        timestamps = None
    return Volume(TensorStoreArray(store, source=src, field="volume"), voxel, origin, timestamps, src)


def ball_average_matrix(
    centroids_um: np.ndarray,
    radius_um: float,
    grid_shape: Sequence[int],
    voxel_size_um: float | Sequence[float],
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    source: str = "volume",
) -> tuple[scipy.sparse.csr_matrix, tuple[slice, slice, slice]]:
    """Sparse averaging matrix of the voxels within `radius_um` of each centroid, over the union's bounding box.

    ``A[r, v] = 1 / |B_r|`` for the voxels ``v`` of ``B_r = {v inside the grid : |p_v - c_r| <= radius}``,
    ``p_v = origin + (x, y, z)_v * voxel_size``; so traces are ``A @ frame[box].ravel()``. A centroid
    partly outside the grid averages its inside voxels only.

    Args:
      centroids_um: ``[Nr, 3]`` centroids, x, y, z µm.
      radius_um: ball radius in µm (> 0).
      grid_shape: ``(Z, Y, X)`` voxel grid shape.
      voxel_size_um: (x, y, z) µm voxel size (scalar = isotropic).
      origin_um: (x, y, z) µm centre of voxel (0, 0, 0).
      source: named in errors.

    Returns:
      ``(A, box)``: ``A`` CSR float32 ``[Nr, nz*ny*nx]`` over the box, and ``box`` the (z, y, x) slices of the
      grid it covers (C order, as ``frame[box].reshape(-1)``).

    Raises:
      ValidationError: bad centroids / radius, or naming the first centroid row with no voxel in its ball.
    """
    centroids = np.asarray(centroids_um)
    V.check_numeric(source, "centroids_um", centroids)
    centroids = centroids.astype(np.float64)
    V.check_shape(source, "centroids_um", centroids, (None, 3))
    V.check_finite(source, "centroids_um", centroids)
    radius = float(radius_um)
    if not (math.isfinite(radius) and radius > 0):
        raise V.ValidationError(source, "radius_um", None, f"must be a positive number of µm, got {radius_um}")
    grid = np.asarray(grid_shape, np.int64)
    vs = _xyz_triple(source, "voxel_size_um", voxel_size_um, positive=True)[::-1]  # -> z, y, x
    origin = _xyz_triple(source, "origin_um", origin_um, positive=False)[::-1]
    nr = len(centroids)
    pos = (centroids[:, ::-1] - origin) / vs  # fractional (z, y, x) voxel index of each centroid
    r_idx = radius / vs
    lo = np.ceil(pos - r_idx).astype(np.int64)  # [Nr, 3] first candidate voxel along z, y, x
    extent = np.floor(2 * r_idx).astype(np.int64) + 2  # ≥ the voxel count of any ball along each axis
    steps = [np.arange(e) for e in extent]
    # A few million candidate voxels at a time bounds the memory at fly scale without a per-source loop;
    # squared distances are separable, so each axis is an [b, n_axis] array broadcast to [b, nz, ny, nx].
    batch = max(1, (1 << 22) // int(extent.prod()))
    zyx: list[list[np.ndarray]] = [[], [], []]  # voxel coordinates of the kept (row, voxel) pairs, row-major
    counts = np.zeros((nr,), np.int64)
    r2 = radius * radius * (1 + 1e-9)  # inclusive, robust to rounding of exact ties
    for b0 in range(0, nr, batch):
        b1 = min(b0 + batch, nr)
        d2_axes = []
        for axis in range(3):
            idx = lo[b0:b1, axis, None] + steps[axis]  # [b, n_axis]
            d2 = ((idx - pos[b0:b1, axis, None]) * vs[axis]) ** 2
            d2_axes.append(np.where((idx >= 0) & (idx < grid[axis]), d2, np.inf))  # outside the grid: never in
        keep = (d2_axes[0][:, :, None, None] + d2_axes[1][:, None, :, None] + d2_axes[2][:, None, None, :]) <= r2
        counts[b0:b1] = keep.sum((1, 2, 3))
        r_b, *offs = np.nonzero(keep)
        for axis in range(3):
            zyx[axis].append((lo[b0:b1, axis][r_b] + offs[axis]).astype(np.int32))
    if nr and (counts == 0).any():
        row = int(np.flatnonzero(counts == 0)[0])
        hi = origin + (grid - 1) * vs
        raise V.ValidationError(
            source, "centroids_um", row,
            f"centroid {centroids[row].tolist()} µm has no voxel within {radius} µm inside the volume "
            f"(voxel centres span x[{origin[2]:.3g}, {hi[2]:.3g}] y[{origin[1]:.3g}, {hi[1]:.3g}] "
            f"z[{origin[0]:.3g}, {hi[0]:.3g}] µm)",
        )
    coords = [np.concatenate(c) if c else np.zeros((0,), np.int32) for c in zyx]
    b_lo = [int(c.min()) if c.size else 0 for c in coords]
    b_hi = [int(c.max()) + 1 if c.size else 0 for c in coords]
    ny, nx = b_hi[1] - b_lo[1], b_hi[2] - b_lo[2]
    flat = ((coords[0].astype(np.int64) - b_lo[0]) * ny + (coords[1] - b_lo[1])) * nx + (coords[2] - b_lo[2])
    # nonzero() emits each row's voxels in C order, rows in order: the arrays already are a canonical CSR.
    indptr = np.concatenate([[0], np.cumsum(counts)])
    weights = np.repeat((1.0 / np.maximum(counts, 1)).astype(np.float32), counts)
    n_box = (b_hi[0] - b_lo[0]) * ny * nx
    index_dtype = np.int32 if max(n_box, len(flat)) < 2**31 else np.int64
    matrix = scipy.sparse.csr_matrix(
        (weights, flat.astype(index_dtype), indptr.astype(index_dtype)), shape=(nr, n_box)
    )
    box = tuple(slice(a, b) for a, b in zip(b_lo, b_hi))
    return matrix, box


def extract_point_sources(
    volume_path: PathLike,
    centroids_um: np.ndarray,
    radius_um: float,
    *,
    voxel_size_um: float | Sequence[float] | None = None,
    origin_um: Sequence[float] | None = None,
    chunk_t: int | None = None,
    out_path: PathLike | None = None,
    timestamps: np.ndarray | None = None,
    neuron_ids: np.ndarray | None = None,
    overwrite: bool = False,
) -> np.ndarray | Recording:
    """Point-source traces from a calcium volume: the mean of the voxels within a ball around each centroid.

    ``trace[t, r] = mean_{v ∈ B_r} volume[t, v]`` with ``B_r`` as in :func:`ball_average_matrix` (a centroid
    partly outside the volume uses its inside voxels; NaN voxels give NaN). The volume is streamed in
    chunks of `chunk_t` frames, reading only the bounding box of all balls, one chunk ahead.

    Args:
      volume_path: a store from :func:`create_volume` / :func:`write_volume`, or a plain zarr ``[T, Z, Y, X]``.
      centroids_um: ``[Nr, 3]`` centroids, **x, y, z** µm.
      radius_um: ball radius in µm.
      voxel_size_um: (x, y, z) µm; required for a plain zarr volume, else checked against the store.
      origin_um: (x, y, z) µm of voxel (0, 0, 0)'s centre; as `voxel_size_um`.
      chunk_t: frames per read (default: ~64 MiB of the bounding box).
      out_path: if given, stream the traces into a recording store there (positions = centroids) and
        return it opened lazily; timestamps come from `timestamps` or the volume store.
      timestamps: ``[T]`` seconds for the output recording.
      neuron_ids: ``[Nr]`` ids for the output recording.
      overwrite: replace an existing store at `out_path`.

    Returns:
      ``[T, Nr]`` float32 traces, or the lazily opened :class:`Recording` at `out_path`.

    Raises:
      ValidationError: bad centroids/radius, a centroid row with no voxel in its ball, missing timestamps
        for `out_path`, or unreadable volume data (naming the frame).

    Example:
        >>> traces = extract_point_sources("vol.zarr", centroids, 2.0, chunk_t=16)   # doctest: +SKIP
    """
    vol = open_volume(volume_path, voxel_size_um=voxel_size_um, origin_um=origin_um)
    t = vol.data.shape[0]
    matrix, box = ball_average_matrix(
        centroids_um, radius_um, vol.data.shape[1:], vol.voxel_size_um, vol.origin_um, source=vol.source
    )
    n_box = matrix.shape[1]
    if chunk_t is None:
        chunk_t = max(1, _EXTRACT_BYTES // max(1, n_box * vol.data.dtype.itemsize))
        stored = vol.data.chunks[0]
        chunk_t = max(stored, (chunk_t // stored) * stored)
    chunk_t = int(chunk_t)
    if chunk_t < 1:
        raise V.ValidationError(vol.source, "chunk_t", None, f"must be >= 1, got {chunk_t}")
    nr = matrix.shape[0]

    writer = None
    if out_path is not None:
        stamps = timestamps if timestamps is not None else vol.timestamps
        if stamps is None:
            raise V.ValidationError(vol.source, "timestamps", None,
                                    "needed for out_path: pass timestamps= or store them with the volume")
        writer = create_recording(
            out_path, t, nr, timestamps=stamps, positions=np.asarray(centroids_um, np.float32),
            neuron_ids=neuron_ids, chunk_t=min(chunk_t, t), overwrite=overwrite,
        )
        out = None
    else:
        out = np.empty((t, nr), np.float32)
    try:
        for t0, block in vol.data.iter_chunks(chunk_t, box=box):
            frames = block.reshape(block.shape[0], -1).astype(np.float32, copy=False)
            traces = np.asarray((matrix @ frames.T).T, np.float32)
            if writer is not None:
                writer.write(t0, traces)
            else:
                out[t0:t0 + len(traces)] = traces
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        return out
    writer.commit()
    return open_recording(out_path)
