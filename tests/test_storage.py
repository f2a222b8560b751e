"""Tests for mesojax.data.storage: round trips, lazy windows, streaming writers, atomicity, errors, volumes."""

import gc
import json
import os
import pathlib
import pickle
import shutil
import tracemalloc

import numpy as np
import pytest

from mesojax.data import Connectome, Recording, ValidationError
from mesojax.data import storage as S


# ----------------------------------------------------------------------------------------------- builders


def make_connectome(id_kind: str, optional: bool, n: int = 12, e: int = 30, seed: int = 0) -> Connectome:
    rng = np.random.default_rng(seed)
    ids = np.arange(100, 100 + n) * 7 if id_kind == "int" else np.asarray([f"N{k:03d}" for k in range(n)])
    return Connectome(
        ids=ids,
        xyz=rng.normal(size=(n, 3)) * 10,
        cell_type=rng.choice(["sensory", "inter", "motor", ""], size=n),
        pre=rng.integers(0, n, e),
        post=rng.integers(0, n, e),
        syn_xyz=rng.normal(size=(e, 3)) if optional else None,
        strength=rng.uniform(0, 3, size=(e, 2)) if optional else None,
        strength_names=("count", "size") if optional else (),
        sign=rng.choice([-1, 0, 1], e),
        kind=rng.choice([0, 1], e),
        source=f"phantom-{id_kind}-{optional}",
    )


def make_recording(id_kind: str | None, optional: bool, t: int = 50, nr: int = 6, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    traces = rng.normal(size=(t, nr)).astype(np.float32)
    traces[3, 2] = np.nan  # missing samples must survive the round trip
    ids = None
    if id_kind == "int":
        ids = np.asarray([5, -1, 9, 11, 2, 40][:nr])
    elif id_kind == "str":
        ids = np.asarray(["AVAL", "", "AVAR", "RIML", "SMDV", "X"][:nr])
    return Recording(
        traces=traces,
        timestamps=0.25 + np.arange(t) / 4.0 + rng.uniform(0, 0.01, t),
        positions=rng.normal(size=(nr, 3)) if optional else None,
        neuron_ids=ids,
        stimulus=rng.normal(size=(t, 2)) if optional else None,
        behaviour=np.where(rng.random((t, 3)) < 0.1, np.nan, rng.normal(size=(t, 3))) if optional else None,
        behaviour_names=("speed", "turn", "head") if optional else (),
        modes=rng.integers(-1, 3, t) if optional else None,
        mode_names=("fwd", "rev", "quiet") if optional else (),
        source=f"rec-{id_kind}-{optional}",
    )


def assert_connectomes_equal(a: Connectome, b: Connectome) -> None:
    for name in ("ids", "xyz", "cell_type", "pre", "post", "syn_xyz", "strength", "sign", "kind"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype.kind == y.dtype.kind and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.strength_names == b.strength_names and a.source == b.source


def assert_recordings_equal(a: Recording, b: Recording) -> None:
    np.testing.assert_array_equal(np.asarray(a.traces), np.asarray(b.traces))  # NaN == NaN here
    for name in ("timestamps", "positions", "neuron_ids", "stimulus", "behaviour", "modes"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype.kind == y.dtype.kind and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.rate_hz == b.rate_hz
    assert (a.behaviour_names, a.mode_names, a.source) == (b.behaviour_names, b.mode_names, b.source)


def siblings(path: pathlib.Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def chunk_file(store: pathlib.Path, field: str, *index: int) -> pathlib.Path:
    return store / field / "c" / pathlib.Path(*map(str, index))


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> tuple[pathlib.Path, Recording]:
    """A 64-frame recording stored in chunks of 8 frames x all sources (8 chunk files)."""
    rec = make_recording("int", True, t=64, nr=6, seed=3)
    path = tmp_path_factory.mktemp("big") / "rec"
    S.write_recording(path, rec, chunk_t=8)
    return path, rec


# ----------------------------------------------------------------------------------------------- connectome


@pytest.mark.parametrize("optional", [False, True])
@pytest.mark.parametrize("id_kind", ["int", "str"])
def test_connectome_round_trip(tmp_path, id_kind, optional):
    c = make_connectome(id_kind, optional)
    S.write_connectome(tmp_path / "c", c)
    back = S.open_connectome(tmp_path / "c")
    assert_connectomes_equal(c, back)
    np.testing.assert_array_equal(back.weighted().toarray(), c.weighted().toarray())
    assert siblings(tmp_path / "c") == ["c"]  # no staging directory left behind


def test_connectome_without_synapses_round_trips(tmp_path):
    c = Connectome(ids=[3, 1], xyz=np.zeros((2, 3)), cell_type=None, pre=np.zeros(0, int), post=np.zeros(0, int))
    S.write_connectome(tmp_path / "c", c)
    back = S.open_connectome(tmp_path / "c")
    assert back.n_synapses == 0
    assert_connectomes_equal(c, back)


# ----------------------------------------------------------------------------------------------- recording


@pytest.mark.parametrize("optional", [False, True])
@pytest.mark.parametrize("id_kind", [None, "int", "str"])
def test_recording_round_trip(tmp_path, id_kind, optional):
    rec = make_recording(id_kind, optional)
    S.write_recording(tmp_path / "r", rec, chunk_t=16, chunk_n=4)
    lazy = S.open_recording(tmp_path / "r")
    assert lazy.is_lazy and isinstance(lazy.traces, S.TensorStoreArray)
    assert lazy.traces.shape == (50, 6) and lazy.traces.dtype == np.float32 and lazy.traces.chunks == (16, 4)
    assert_recordings_equal(rec, lazy)
    eager = S.open_recording(tmp_path / "r", lazy=False)
    assert isinstance(eager.traces, np.ndarray)
    assert_recordings_equal(rec, eager)


def test_recording_copy_from_lazy_store(tmp_path, big_store):
    path, rec = big_store
    S.write_recording(tmp_path / "copy", S.open_recording(path), chunk_t=5)  # lazy source, other chunking
    assert_recordings_equal(rec, S.open_recording(tmp_path / "copy"))


@pytest.mark.parametrize("t0,t1", [(0, 1), (0, 64), (5, 13), (16, 32), (63, 64), (7, 58)])
def test_window_equals_in_memory_window(big_store, t0, t1):
    path, rec = big_store
    lazy_window = S.open_recording(path).window(t0, t1)
    assert_recordings_equal(rec.window(t0, t1), lazy_window)


INDICES = [
    (slice(3, 17),), (5,), (-1,), (slice(None, None, 3),), (slice(50, 2, -7),), (slice(None, None, -1), 2),
    (Ellipsis, 4), (slice(10, 10),), (np.array([40, 3, 3, -2]),), (slice(2, 9), [5, 0, 5]),
    (np.arange(64) % 3 == 0, slice(1, 4)), (7, np.array([True, False, True, False, False, True])),
    (np.array([1, 4]), np.array([0, 5])), (),
]


@pytest.mark.parametrize("index", INDICES, ids=[repr(i)[:40] for i in INDICES])
def test_tensorstore_array_indexing_matches_numpy(big_store, index):
    path, rec = big_store
    traces = S.open_recording(path).traces
    expected = rec.traces[index]
    got = traces[index]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("index", [64, -65, (slice(None), 6), (0, 0, 0), np.array([0, 64]), None])
def test_tensorstore_array_bad_index_raises(big_store, index):
    traces = S.open_recording(big_store[0]).traces
    with pytest.raises(IndexError):
        traces[index]


def test_window_read_touches_only_its_chunks(tmp_path, big_store):
    """A window read opens only the chunk files it covers: all other chunks are garbage and it still works."""
    path, rec = big_store
    store = tmp_path / "rec"
    shutil.copytree(path, store)
    window_files = [chunk_file(store, "traces", k, 0) for k in (2, 3)]  # rows [16, 32)
    for k in range(8):
        if k not in (2, 3):
            chunk_file(store, "traces", k, 0).write_bytes(b"not a blosc chunk")
    traces = S.open_recording(store).traces
    before = S.io_counters()
    window = traces[16:32]
    read = S.io_counters()["bytes_read"] - before["bytes_read"]
    np.testing.assert_array_equal(window, rec.traces[16:32])
    assert 0 < read <= sum(f.stat().st_size for f in window_files)
    with pytest.raises(ValidationError) as info:
        traces[30:41]  # rows 30, 31 are fine; the chunk starting at 32 is not
    assert (info.value.source, info.value.field, info.value.row) == (str(store), "traces", 32)
    assert "corrupt" in info.value.problem


def test_lazy_traces_pickle_for_worker_processes(big_store):
    path, rec = big_store
    traces = pickle.loads(pickle.dumps(S.open_recording(path).traces))
    assert isinstance(traces, S.TensorStoreArray) and traces.source == str(path)
    np.testing.assert_array_equal(traces[40:48], rec.traces[40:48])


def test_iter_chunks_streams_whole_array(big_store):
    path, rec = big_store
    traces = S.open_recording(path).traces
    blocks = list(traces.iter_chunks(24, box=(slice(1, 5),)))
    assert [t0 for t0, _ in blocks] == [0, 24, 48]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), rec.traces[:, 1:5])


# ----------------------------------------------------------------------------------------------- streaming writer


def test_streaming_writer_equals_one_shot(tmp_path):
    rec = make_recording("str", True, t=50, nr=6, seed=1)
    S.write_recording(tmp_path / "one", rec, chunk_t=8)
    writer = S.create_recording(
        tmp_path / "stream", rec.n_timesteps, rec.n_sources, timestamps=rec.timestamps, rate_hz=rec.rate_hz,
        positions=rec.positions, neuron_ids=rec.neuron_ids, stimulus=rec.stimulus, behaviour=rec.behaviour,
        behaviour_names=rec.behaviour_names, modes=rec.modes, mode_names=rec.mode_names, source=rec.source,
        chunk_t=8,
    )
    starts = list(range(0, 50, 7))  # blocks not aligned to the 8-frame chunks, written out of order
    with writer:
        for t0 in reversed(starts):
            block = rec.traces[t0:t0 + 7].copy()
            writer.write(t0, block)
            block[:] = 1e9  # the writer copied the block: reusing the buffer must not change the store
        writer.write(10, rec.traces[10:12])  # rewriting rows is allowed
        assert writer.rows_written == 50
    one, stream = S.open_recording(tmp_path / "one"), S.open_recording(tmp_path / "stream")
    assert_recordings_equal(one, stream)
    assert_recordings_equal(rec, stream)


def test_streaming_writer_stays_within_memory_budget(tmp_path):
    """Stream 32 MiB of traces in 256 KiB blocks while Python-side allocations stay under 2 MiB."""
    t, nr, rows = 4096, 2048, 32
    columns = np.arange(nr, dtype=np.float32) * np.float32(0.01)

    def block(t0: int) -> np.ndarray:
        return np.sin(np.arange(t0, t0 + rows, dtype=np.float32)[:, None] * np.float32(0.001) + columns)

    budget = 2 << 20
    assert t * nr * 4 >= 16 * budget
    tracemalloc.start()
    try:
        with S.create_recording(tmp_path / "big", t, nr, timestamps=np.arange(t) * 0.1, chunk_t=64) as writer:
            for t0 in range(0, t, rows):
                writer.write(t0, block(t0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget, f"peak Python allocation {peak} B while streaming"
    traces = S.open_recording(tmp_path / "big").traces
    for t0 in (0, 1984, t - rows):
        np.testing.assert_array_equal(traces[t0:t0 + rows], block(t0))


@pytest.mark.parametrize("how", ["missing_rows", "exception", "dropped", "abort"])
def test_incomplete_writer_leaves_nothing(tmp_path, how):
    path = tmp_path / "rec"
    writer = S.create_recording(path, 20, 3, timestamps=np.arange(20.0), chunk_t=4)
    writer.write(0, np.ones((9, 3)))
    writer.write(12, np.ones((8, 3)))
    if how == "missing_rows":
        with pytest.raises(ValidationError) as info:
            writer.commit()
        assert (info.value.source, info.value.field, info.value.row) == (str(path), "traces", 9)
        assert "3 of 20 time rows were never written" in info.value.problem
    elif how == "exception":
        with pytest.raises(KeyboardInterrupt):
            with writer:
                writer.write(9, np.ones((3, 3)))  # now complete, but the block fails before commit
                raise KeyboardInterrupt
    elif how == "dropped":
        del writer
        gc.collect()
    else:
        writer.abort()
        with pytest.raises(RuntimeError, match="aborted"):
            writer.write(0, np.ones((1, 3)))
    assert siblings(path) == []  # neither the store nor its staging directory


def test_writer_rejects_bad_blocks_and_stays_usable(tmp_path):
    path = tmp_path / "rec"
    with S.create_recording(path, 10, 3, timestamps=np.arange(10.0), chunk_t=4) as writer:
        with pytest.raises(ValidationError, match=r"field 'traces': expected shape \[\*, 3\], got \[2, 4\]"):
            writer.write(0, np.ones((2, 4)))
        with pytest.raises(ValidationError) as info:
            writer.write(8, np.ones((3, 3)))
        assert (info.value.field, info.value.row) == ("traces", 8) and "outside the 10 time rows" in str(info.value)
        with pytest.raises(ValidationError, match="numeric"):
            writer.write(0, np.full((2, 3), "x"))
        writer.write(0, np.arange(30.0).reshape(10, 3))
    np.testing.assert_array_equal(S.open_recording(path).traces[:], np.arange(30.0).reshape(10, 3))


def test_create_recording_validates_fields_before_writing(tmp_path):
    stamps = np.arange(10.0)
    stamps[6] = stamps[4]
    with pytest.raises(ValidationError) as info:
        S.create_recording(tmp_path / "rec", 10, 3, timestamps=stamps)
    assert (info.value.source, info.value.field, info.value.row) == (str(tmp_path / "rec"), "timestamps", 6)
    with pytest.raises(ValidationError, match="'positions'"):
        S.create_recording(tmp_path / "rec", 10, 3, timestamps=np.arange(10.0), positions=np.zeros((2, 3)))
    assert siblings(tmp_path / "rec") == []


# ----------------------------------------------------------------------------------------------- overwrite


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_overwrite_protection(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(S, "_renameat2", None)
    elif S._renameat2 is None:
        pytest.skip("renameat2 unavailable on this platform")
    path = tmp_path / "rec"
    first, second = make_recording("int", False, seed=1), make_recording("int", True, seed=2)
    S.write_recording(path, first)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        S.write_recording(path, second)
    with pytest.raises(FileExistsError):
        S.create_recording(path, 5, 2, timestamps=np.arange(5.0))
    assert_recordings_equal(first, S.open_recording(path, lazy=False))

    S.write_recording(path, second, overwrite=True)
    assert_recordings_equal(second, S.open_recording(path, lazy=False))
    assert siblings(path) == ["rec"]  # the old store was removed, no staging left

    writer = S.create_recording(path, 5, 2, timestamps=np.arange(5.0), overwrite=True)
    writer.write(0, np.zeros((4, 2)))
    with pytest.raises(ValidationError, match="never written"):
        writer.commit()
    assert_recordings_equal(second, S.open_recording(path, lazy=False))  # a failed replacement keeps the old
    assert siblings(path) == ["rec"]


def test_overwrite_refuses_foreign_data(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a mesojax store"):
        S.write_connectome(tmp_path / "mine", make_connectome("int", False), overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert siblings(tmp_path / "mine") == ["mine"]


def test_connectome_overwrite(tmp_path):
    a, b = make_connectome("int", False, seed=1), make_connectome("str", True, seed=2)
    S.write_connectome(tmp_path / "c", a)
    with pytest.raises(FileExistsError):
        S.write_connectome(tmp_path / "c", b)
    S.write_connectome(tmp_path / "c", b, overwrite=True)
    assert_connectomes_equal(b, S.open_connectome(tmp_path / "c"))


# ----------------------------------------------------------------------------------------------- corrupt stores


def _edit_meta(store: pathlib.Path, **changes) -> None:
    meta = json.loads((store / "meta.json").read_text())
    meta.update(changes)
    (store / "meta.json").write_text(json.dumps(meta))


def _copy_field_from(store: pathlib.Path, field: str, other: pathlib.Path) -> None:
    shutil.rmtree(store / field)
    shutil.copytree(other / field, store / field)


CORRUPTIONS = {
    # name: (how to damage the recording store, field named, row named, words in the problem)
    "no_meta": (lambda s, o: (s / "meta.json").unlink(), "meta.json", None, "missing"),
    "bad_json": (lambda s, o: (s / "meta.json").write_text("{truncated"), "meta.json", None, "not valid JSON"),
    "wrong_format": (lambda s, o: _edit_meta(s, format="mesojax.volume"), "format", None, "expected"),
    "no_array": (lambda s, o: shutil.rmtree(s / "timestamps"), "timestamps", None, "missing array"),
    "bad_zarray": (lambda s, o: (s / "stimulus" / "zarr.json").write_text("]"), "stimulus", None, "unreadable"),
    "wrong_shape": (lambda s, o: _copy_field_from(s, "positions", o), "positions", None, "expected shape [6, 3]"),
    "missing_chunk": (lambda s, o: chunk_file(s, "traces", 3, 0).unlink(), "traces", 24, "chunk file c/3/0 is missing"),
    "corrupt_eager": (lambda s, o: chunk_file(s, "behaviour", 0, 0).write_bytes(b"xx"), "behaviour", 0, "corrupt"),
    "bad_content": (lambda s, o: _edit_meta(s, mode_names=["fwd"]), "modes", None, "not in allowed set"),
    "names_type": (lambda s, o: _edit_meta(s, behaviour_names=["a", 3, "c"]), "behaviour_names", 1, "string"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_recording_store_raises_one_clear_error(tmp_path, big_store, name):
    damage, field, row, words = CORRUPTIONS[name]
    store = tmp_path / "rec"
    shutil.copytree(big_store[0], store)
    other = tmp_path / "other"
    S.write_recording(other, make_recording(None, True, t=64, nr=4))
    damage(store, other)
    with pytest.raises(ValidationError) as info:
        S.open_recording(store)
    err = info.value
    assert err.source == str(store) and str(store) in str(err)
    assert err.field == field
    if name == "bad_content":  # the row is that of the first mode label now out of range
        assert err.row == int(np.flatnonzero(big_store[1].modes > 0)[0])
    else:
        assert err.row == row
    assert words in err.problem


def test_corrupt_connectome_store_errors(tmp_path):
    c = make_connectome("str", True)
    store = tmp_path / "c"
    S.write_connectome(store, c)
    _edit_meta(store, cell_type=["x"] * 3)
    with pytest.raises(ValidationError, match=r"field 'cell_type': has 3 entries, expected 12") as info:
        S.open_connectome(store)
    assert info.value.source == str(store)
    S.write_connectome(store, c, overwrite=True)
    shutil.rmtree(store / "strength")
    with pytest.raises(ValidationError, match="field 'strength': missing array"):
        S.open_connectome(store)
    with pytest.raises(ValidationError, match=r"field 'path': no store directory"):
        S.open_connectome(tmp_path / "nowhere")
    S.write_connectome(store, c, overwrite=True)
    ids = json.loads((store / "meta.json").read_text())["ids"]
    _edit_meta(store, ids=ids[:5] + [ids[2]] + ids[6:])
    with pytest.raises(ValidationError) as info:
        S.open_connectome(store)
    assert (info.value.source, info.value.field, info.value.row) == (str(store), "ids", 5)
    assert "duplicate" in info.value.problem
    with pytest.raises(ValidationError, match="is 'mesojax.connectome', expected 'mesojax.recording'"):
        S.open_recording(store)


# ----------------------------------------------------------------------------------------------- volumes


VOXEL_XYZ = (1.0, 1.5, 2.0)
ORIGIN_XYZ = (0.5, -1.0, 2.0)
# Inside, on a voxel centre, at a corner (partly outside), and at the far face (partly outside).
CENTROIDS = np.array([[3.2, 4.1, 7.3], [4.5, 2.0, 6.0], [0.3, -1.2, 2.1], [8.6, 7.9, 12.4], [5.0, 3.7, 9.9]])


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> tuple[pathlib.Path, np.ndarray]:
    rng = np.random.default_rng(7)
    data = rng.normal(size=(9, 6, 7, 9)).astype(np.float32)  # [T, Z, Y, X]
    path = tmp_path_factory.mktemp("vol") / "vol"
    S.write_volume(path, data, VOXEL_XYZ, origin_um=ORIGIN_XYZ, timestamps=np.arange(9) * 0.5, chunks=(2, 3, 4, 5))
    return path, data


def brute_force_ball_mean(data: np.ndarray, centroids: np.ndarray, radius: float) -> np.ndarray:
    z, y, x = np.indices(data.shape[1:])
    centres = np.stack([x, y, z], -1) * np.asarray(VOXEL_XYZ) + np.asarray(ORIGIN_XYZ)  # [Z, Y, X, 3] µm
    out = []
    for c in centroids:
        inside = ((centres - c) ** 2).sum(-1) <= radius**2
        out.append(data[:, inside].mean(axis=1))
    return np.stack(out, axis=1)


@pytest.mark.parametrize("radius", [1.2, 2.5])
def test_extract_point_sources_matches_brute_force(volume, radius):
    path, data = volume
    got = S.extract_point_sources(path, CENTROIDS, radius)
    np.testing.assert_allclose(got, brute_force_ball_mean(data, CENTROIDS, radius), rtol=1e-5, atol=1e-6)


def test_ball_average_matrix_is_an_average_over_a_tight_box():
    matrix, box = S.ball_average_matrix(CENTROIDS, 2.5, (6, 7, 9), VOXEL_XYZ, ORIGIN_XYZ)
    assert matrix.has_canonical_format  # built directly as CSR: sorted, duplicate-free column indices
    np.testing.assert_allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    z, y, x = np.indices((6, 7, 9))
    centres = np.stack([x, y, z], -1) * np.asarray(VOXEL_XYZ) + np.asarray(ORIGIN_XYZ)
    union = np.zeros((6, 7, 9), bool)
    for c in CENTROIDS:
        union |= ((centres - c) ** 2).sum(-1) <= 2.5**2
    assert box == tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(union))
    counts = np.diff(matrix.indptr)
    np.testing.assert_array_equal(counts, [(((centres - c) ** 2).sum(-1) <= 2.5**2).sum() for c in CENTROIDS])


@pytest.mark.parametrize("chunk_t", [1, 2, 4, 9])
def test_chunked_extraction_equals_unchunked(volume, chunk_t):
    path, _ = volume
    whole = S.extract_point_sources(path, CENTROIDS, 2.0, chunk_t=100)
    np.testing.assert_array_equal(S.extract_point_sources(path, CENTROIDS, 2.0, chunk_t=chunk_t), whole)


def test_extraction_to_recording_store(tmp_path, volume):
    path, data = volume
    rec = S.extract_point_sources(path, CENTROIDS, 2.0, chunk_t=4, out_path=tmp_path / "rec",
                                  neuron_ids=["a", "b", "c", "d", "e"])
    assert rec.is_lazy and rec.traces.shape == (9, 5)
    np.testing.assert_allclose(rec.traces[:], brute_force_ball_mean(data, CENTROIDS, 2.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rec.timestamps, np.arange(9) * 0.5)
    np.testing.assert_array_equal(rec.positions, CENTROIDS.astype(np.float32))
    assert rec.neuron_ids.tolist() == ["a", "b", "c", "d", "e"]


def test_extraction_from_plain_zarr_and_uint16(tmp_path, volume):
    path, data = volume
    plain = path / "volume"  # the volume array inside a store is a plain zarr v2 array
    with pytest.raises(ValidationError, match="field 'voxel_size_um': required"):
        S.extract_point_sources(plain, CENTROIDS, 2.0)
    got = S.extract_point_sources(plain, CENTROIDS, 2.0, voxel_size_um=VOXEL_XYZ, origin_um=ORIGIN_XYZ)
    np.testing.assert_array_equal(got, S.extract_point_sources(path, CENTROIDS, 2.0))
    counts = (np.abs(data) * 1000).astype(np.uint16)
    S.write_volume(tmp_path / "u16", counts, VOXEL_XYZ, origin_um=ORIGIN_XYZ)
    assert S.open_volume(tmp_path / "u16").data.dtype == np.uint16
    np.testing.assert_allclose(
        S.extract_point_sources(tmp_path / "u16", CENTROIDS, 2.0),
        brute_force_ball_mean(counts.astype(np.float64), CENTROIDS, 2.0), rtol=1e-5,
    )


def test_extraction_errors(tmp_path, volume):
    path, _ = volume
    outside = CENTROIDS.copy()
    outside[3] = [100.0, 0.0, 5.0]
    with pytest.raises(ValidationError) as info:
        S.extract_point_sources(path, outside, 2.0)
    assert (info.value.source, info.value.field, info.value.row) == (str(path), "centroids_um", 3)
    assert "no voxel within 2.0 µm inside the volume" in info.value.problem
    with pytest.raises(ValidationError, match="field 'voxel_size_um': given"):
        S.extract_point_sources(path, CENTROIDS, 2.0, voxel_size_um=1.0)
    with pytest.raises(ValidationError, match="field 'radius_um'"):
        S.extract_point_sources(path, CENTROIDS, 0.0)
    nan_row = CENTROIDS.copy()
    nan_row[1, 2] = np.nan
    with pytest.raises(ValidationError, match="field 'centroids_um', row 1: non-finite"):
        S.extract_point_sources(path, nan_row, 2.0)
    with pytest.raises(ValidationError, match="field 'timestamps': needed for out_path"):
        S.extract_point_sources(
            path / "volume", CENTROIDS, 2.0, voxel_size_um=VOXEL_XYZ, origin_um=ORIGIN_XYZ, out_path=tmp_path / "r"
        )
    assert not os.path.lexists(tmp_path / "r")
    damaged = tmp_path / "damaged"
    shutil.copytree(path, damaged)
    chunk_file(damaged, "volume", 2, 0, 0, 0).write_bytes(b"garbage")  # frames 4-5
    with pytest.raises(ValidationError) as info:
        S.extract_point_sources(damaged, CENTROIDS, 2.0, chunk_t=3, out_path=tmp_path / "r")
    assert (info.value.field, info.value.row) == ("volume", 4)
    assert siblings(tmp_path / "r") == ["damaged"]  # the half-extracted recording was discarded


def test_volume_writer_refuses_unsafe_cast(tmp_path):
    with S.create_volume(tmp_path / "v", (2, 2, 2, 2), 1.0, dtype=np.uint16) as writer:
        with pytest.raises(ValidationError, match="cannot store float64 data in a uint16 array"):
            writer.write(0, np.full((2, 2, 2, 2), 0.5))
        writer.write(0, np.ones((2, 2, 2, 2), np.uint8))
    np.testing.assert_array_equal(np.asarray(S.open_volume(tmp_path / "v").data), 1)
