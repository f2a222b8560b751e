"""Synapse tables (CAVE / neuPrint / generic conventions, CSV and HDF5) and their connectomes."""

import h5py
import numpy as np
import pytest

from mesojax.data import Connectome, ValidationError
from mesojax.data import tables as T


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ==================================================================== CAVE
CAVE_CSV = (
    "id,pre_pt_root_id,post_pt_root_id,size,ctr_pt_position\n"
    "1,864691135000000001,864691135000000002,100,[100 200 10]\n"
    "2,864691135000000002,864691135000000001,50,[300 200 20]\n"
    "3,864691135000000001,864691135000000002,25,\"[500, 600, 30]\"\n"
)


def test_cave_csv_bracket_points(tmp_path):
    table, report = T.load_synapse_table(_write(tmp_path, "syn.csv", CAVE_CSV))
    assert table.format == "cave" and table.n_rows == 3 and report.notes == ()
    assert table.pre_ids.dtype == np.int64 and table.pre_ids[0] == 864691135000000001
    np.testing.assert_allclose(table.xyz, [[0.4, 0.8, 0.4], [1.2, 0.8, 0.8], [2.0, 2.4, 1.2]], rtol=1e-6)
    np.testing.assert_array_equal(table.features["size"], [100, 50, 25])
    np.testing.assert_array_equal(table.count, [1, 1, 1])


def test_cave_split_columns_midpoint_and_voxel_size(tmp_path):
    text = ("pre_pt_root_id,post_pt_root_id,pre_pt_position_x,pre_pt_position_y,pre_pt_position_z,"
            "post_pt_position_x,post_pt_position_y,post_pt_position_z\n"
            "5,6,10,20,30,30,40,50\n6,5,0,0,0,2,2,2\n")
    table, report = T.load_synapse_table(_write(tmp_path, "syn.csv", text), voxel_nm=(1000, 1000, 1000))
    np.testing.assert_allclose(table.xyz, [[20, 30, 40], [1, 1, 1]])
    assert "midpoint" in report.notes[0] and table.features == {}


def test_cave_root_id_zero_rows_are_removed_and_reported(tmp_path):
    text = CAVE_CSV + "4,0,864691135000000002,10,[1 1 1]\n"
    table, report = T.load_synapse_table(_write(tmp_path, "syn.csv", text))
    assert table.n_rows == 3 and report.excluded["rows_with_root_id_0"] == (3,)


def test_cave_hdf5_group_of_columns(tmp_path):
    path = tmp_path / "syn.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("synapses")
        g["pre_pt_root_id"] = np.array([7, 8], np.uint64)
        g["post_pt_root_id"] = np.array([8, 7], np.uint64)
        g["ctr_pt_position"] = np.array([[10, 10, 1], [20, 20, 2]])
        g["size"] = np.array([3.0, 4.0])
    table, _ = T.load_synapse_table(path)
    np.testing.assert_allclose(table.xyz, [[0.04, 0.04, 0.04], [0.08, 0.08, 0.08]], rtol=1e-6)
    np.testing.assert_array_equal(table.post_ids, [8, 7])


# ==================================================================== neuPrint
def test_neuprint_synapse_level_csv(tmp_path):
    text = ("bodyId_pre,bodyId_post,x_pre,y_pre,z_pre,x_post,y_post,z_post,confidence_pre,confidence_post\n"
            "100,200,0,0,0,10,10,10,0.9,0.8\n200,300,100,100,100,100,100,100,0.5,0.99\n")
    table, _ = T.load_synapse_table(_write(tmp_path, "syn.csv", text))
    assert table.format == "neuprint"
    np.testing.assert_allclose(table.xyz, [[0.04, 0.04, 0.04], [0.8, 0.8, 0.8]], rtol=1e-6)
    assert set(table.features) == {"confidence_pre", "confidence_post"}
    con, _ = T.connectome_from_synapse_table(table)
    assert con.strength_names == ("confidence_pre", "confidence_post")
    np.testing.assert_allclose(con.synapse_weight("confidence_post"), [0.8, 0.99], rtol=1e-6)


def test_neuprint_connection_table_is_expanded_by_weight(tmp_path):
    text = "bodyId_pre,bodyId_post,weight\n1,2,5\n2,1,1\n1,3,0\n"
    table, report = T.load_synapse_table(_write(tmp_path, "adj.csv", text))
    assert table.xyz is None and report.excluded["rows_with_zero_count"] == (2,)
    with pytest.raises(ValidationError, match="no given position"):
        T.connectome_from_synapse_table(table)
    con, _ = T.connectome_from_synapse_table(table, ([1, 2], [[0, 0, 0], [1, 0, 0]]))
    assert con.n_synapses == 6
    np.testing.assert_array_equal(con.weighted(weight="count").toarray(), [[0, 5], [1, 0]])


def test_neuprint_ux_columns_and_compound_hdf5(tmp_path):
    path = tmp_path / "syn.h5"
    rows = np.array([(1, 2, 8, 16, 24), (2, 1, 0, 0, 8)],
                    dtype=[("bodyId_pre", "i8"), ("bodyId_post", "i8"),
                           ("ux", "f8"), ("uy", "f8"), ("uz", "f8")])
    with h5py.File(path, "w") as f:
        f["table"] = rows
    table, _ = T.load_synapse_table(path)
    np.testing.assert_allclose(table.xyz, [[0.064, 0.128, 0.192], [0, 0, 0.064]], rtol=1e-6)


# ==================================================================== generic + connectome building
def test_generic_string_ids_and_synapse_mean_positions(tmp_path):
    text = "pre,post,x,y,z,size\nAVAL,AVAR,0,0,0,1\nAVAR,AVAL,2,0,0,2\nAVAL,DB1,4,4,0,3\n"
    table, _ = T.load_synapse_table(_write(tmp_path, "syn.csv", text))
    assert table.format == "generic" and table.pre_ids.dtype.kind == "U"
    con, report = T.connectome_from_synapse_table(table, ([b"AVAL".decode()], [[10.0, 0, 0]]),
                                                  cell_type=(["AVAL", "AVAR"], ["AVA", "AVA"]))
    assert con.ids.tolist() == ["AVAL", "AVAR", "DB1"]
    # AVAL given; AVAR at the mean of its two synapses; DB1 at its only synapse.
    np.testing.assert_allclose(con.xyz, [[10, 0, 0], [1, 0, 0], [4, 4, 0]])
    assert con.cell_type.tolist() == ["AVA", "AVA", ""]
    assert report.excluded["neurons_at_synapse_mean"] == ("AVAR", "DB1")
    np.testing.assert_allclose(con.weighted(weight="size").toarray(), [[0, 1, 3], [2, 0, 0], [0, 0, 0]])


def test_isolated_neurons_from_position_table_are_kept(tmp_path):
    table, _ = T.load_synapse_table(_write(tmp_path, "syn.csv", "pre,post,x,y,z\n1,2,0,0,0\n"))
    con, report = T.connectome_from_synapse_table(table, ([1, 2, 9], np.eye(3)))
    assert con.ids.tolist() == [1, 2, 9] and con.n_synapses == 1 and report.notes == ()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("convention", ["cave_string", "cave_split", "neuprint", "hdf5"])
def test_round_trip_random_tables(tmp_path, seed, convention):
    """Write random synapses in one convention, read them back, compare with the connectome built directly."""
    rng = np.random.default_rng(seed)
    n, e = 7, 40
    ids = rng.choice(10**12, n, replace=False) + 1
    pre, post = rng.integers(0, n, e), rng.integers(0, n, e)
    vox = rng.integers(0, 5000, (e, 3))
    size = rng.integers(1, 500, e)
    voxel_nm = np.array([4.0, 4.0, 40.0]) if convention != "neuprint" else np.array([8.0, 8.0, 8.0])
    if convention == "cave_string":
        lines = ["pre_pt_root_id,post_pt_root_id,size,ctr_pt_position"]
        lines += [f"{ids[a]},{ids[b]},{s},[{x} {y} {z}]" for a, b, s, (x, y, z) in zip(pre, post, size, vox)]
        path = _write(tmp_path, "t.csv", "\n".join(lines) + "\n")
    elif convention == "cave_split":
        lines = ["pre_pt_root_id,post_pt_root_id,size,ctr_pt_position_x,ctr_pt_position_y,ctr_pt_position_z"]
        lines += [f"{ids[a]},{ids[b]},{s},{x},{y},{z}" for a, b, s, (x, y, z) in zip(pre, post, size, vox)]
        path = _write(tmp_path, "t.csv", "\n".join(lines) + "\n")
    elif convention == "neuprint":
        lines = ["bodyId_pre,bodyId_post,confidence,x,y,z"]
        lines += [f"{ids[a]},{ids[b]},{s},{x},{y},{z}" for a, b, s, (x, y, z) in zip(pre, post, size, vox)]
        path = _write(tmp_path, "t.csv", "\n".join(lines) + "\n")
    else:
        path = tmp_path / "t.h5"
        with h5py.File(path, "w") as f:
            f["pre_pt_root_id"], f["post_pt_root_id"] = ids[pre], ids[post]
            f["size"], f["ctr_pt_position"] = size, vox
    table, _ = T.load_synapse_table(path)
    feature = "confidence" if convention == "neuprint" else "size"
    con, _ = T.connectome_from_synapse_table(table)
    expected = Connectome.from_id_table(
        ids=np.unique(ids[np.r_[pre, post]]), xyz=np.zeros((len(np.unique(np.r_[pre, post])), 3)),
        cell_type=None,
        pre_ids=ids[pre], post_ids=ids[post], strength=size[:, None], strength_names=(feature,))
    np.testing.assert_array_equal(con.ids, expected.ids)
    np.testing.assert_allclose(con.weighted(weight=feature).toarray(),
                               expected.weighted(weight=feature).toarray())
    np.testing.assert_allclose(con.syn_xyz, vox * voxel_nm / 1000, rtol=1e-6)
    # Neuron positions: mean over the synapses touching each neuron, counted once as pre and once as post.
    ends = np.r_[con.pre, con.post]
    mean = np.stack([np.bincount(ends, np.r_[con.syn_xyz[:, a], con.syn_xyz[:, a]]) for a in range(3)], 1)
    np.testing.assert_allclose(con.xyz, mean / np.bincount(ends)[:, None], rtol=1e-5)


# ==================================================================== errors
@pytest.mark.parametrize("text, field, row, problem", [
    ("pre_pt_root_id,post_pt_root_id,ctr_pt_position\n1,2,[1 2 3]\nabc,2,[1 2 3]\n", "pre_pt_root_id", 1,
     "not an integer id"),
    ("pre_pt_root_id,post_pt_root_id,ctr_pt_position\n1,2,[1 2 3]\n2,1,[1 2]\n", "ctr_pt_position", 1,
     "expected a point"),
    ("pre_pt_root_id,post_pt_root_id,ctr_pt_position\n1,2,[1 2 x]\n", "ctr_pt_position", 0,
     "expected a point"),
    ("pre_pt_root_id,post_pt_root_id,ctr_pt_position,size\n1,2,[1 2 3],-4\n", "size", 0, "negative"),
    ("pre_pt_root_id,post_pt_root_id,ctr_pt_position,size\n1,2,[1 2 3],big\n", "size", 0, "not a number"),
    ("bodyId_pre,bodyId_post,x,y,z\n1,2,1,2,3\n1,2,1,,3\n", "position", 1, "non-finite"),
    ("bodyId_pre,bodyId_post,weight\n1,2,-3\n", "weight", 0, "negative"),
    ("bodyId_pre,bodyId_post\n1,2\n3\n", "row", 1, "1 fields"),
    ("source,target\n1,2\n", "header", None, "no known pre/post id columns"),
    ("pre,post\nA,\n", "post", 0, "empty neuron id"),
    ("", "header", None, "empty file"),
])
def test_synapse_table_errors(tmp_path, text, field, row, problem):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(ValidationError) as err:
        T.load_synapse_table(path)
    assert (err.value.source, err.value.field, err.value.row) == (str(path), field, row)
    assert problem in err.value.problem


def test_format_and_file_type_errors(tmp_path):
    path = _write(tmp_path, "syn.csv", CAVE_CSV)
    with pytest.raises(ValidationError, match="unknown format"):
        T.load_synapse_table(path, format="flywire")
    with pytest.raises(ValidationError, match="missing id column"):
        T.load_synapse_table(path, format="neuprint")
    with pytest.raises(ValidationError, match="unknown table file type"):
        T.load_synapse_table(_write(tmp_path, "syn.parquet", "x"))


def test_hdf5_layout_errors(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["pre_pt_root_id"] = np.arange(3)
        f["post_pt_root_id"] = np.arange(4)
    with pytest.raises(ValidationError) as err:
        T.load_synapse_table(path)
    assert err.value.field == "pre_pt_root_id"
    assert "length 3 does not match 'post_pt_root_id' length 4" in str(err.value)
    with pytest.raises(ValidationError, match="no group or dataset 'synapses'"):
        T.load_synapse_table(path, key="synapses")


def test_neuron_positions_errors(tmp_path):
    table, _ = T.load_synapse_table(_write(tmp_path, "syn.csv", "pre,post,x,y,z\n1,2,0,0,0\n"))
    with pytest.raises(ValidationError, match="non-finite"):
        T.connectome_from_synapse_table(table, ([1, 2], [[0, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(ValidationError, match="duplicate"):
        T.connectome_from_synapse_table(table, ([1, 1], np.zeros((2, 3))))
    with pytest.raises(ValidationError, match="id type"):
        T.connectome_from_synapse_table(table, (["a", "b"], np.zeros((2, 3))))


def test_load_report_text_and_merge():
    a = T.LoadReport("a.csv", ("dropped 2 rows",), {"rows": (1, 2)})
    b = T.LoadReport("b.csv", ("x",), {"names": ("n",), "rows": (7,)})
    merged = a.merge(b)
    assert merged.notes == ("dropped 2 rows", "b.csv: x")
    assert merged.excluded == {"rows": (1, 2, 7), "names": ("n",)}
    assert "nothing excluded or repaired" in str(T.LoadReport("c.csv"))
    assert "  - dropped 2 rows" in str(a)
