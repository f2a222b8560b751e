"""C. elegans loaders: the real WormWideWeb / Flavell-lab files, and small corrupted copies for errors."""

import csv
import json
import re

import h5py
import numpy as np
import pytest

from mesojax.data import ELECTRICAL, CHEMICAL, ValidationError, register_by_id
from mesojax.data import celegans as C

CONNECTOMES = ("witvliet_2020_8", "cook_jarrell_2019_h", "white_1986_whole")
UIDS = ("2022-07-26-31", "2022-07-26-38", "2022-07-27-31", "2022-07-27-38", "2022-07-27-45")


# ==================================================================== fixtures (real files, loaded once)
@pytest.fixture(scope="module")
def dataset(celegans_dir):
    return C.load_dataset(celegans_dir)


@pytest.fixture(scope="module")
def connectomes(celegans_dir):
    return {name: C.load_celegans_connectome(celegans_dir, name) for name in CONNECTOMES}


@pytest.fixture(scope="module")
def label_rows(celegans_dir):
    with open(celegans_dir / "recordings" / "neuron_labels.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def atlas(celegans_dir):
    return C.load_positions(celegans_dir / "positions" / "neuron_positions_um.csv")


# ==================================================================== names
@pytest.mark.parametrize("raw, expected", [
    ("VB02", "VB2"), ("DD01", "DD1"), ("CP00", "CP0"), ("AS10", "AS10"), ("DA9", "DA9"),
    ("IL1DL", "IL1DL"), ("I2L", "I2L"), ("BWM-DL01", "BWM-DL1"), (" AVAL ", "AVAL"), ("SAAD?", "SAAD?"),
    ("VB02?", "VB2?"), ("mc1DL", "mc1DL"),
])
def test_normalize_name(raw, expected):
    assert C.normalize_name(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("RMDD?", ("RMDD", True)), ("VB02", ("VB2", False)), ("AIY? ", ("AIY", True))])
def test_split_uncertain(raw, expected):
    assert C.split_uncertain(raw) == expected


def test_normalization_on_real_names_is_idempotent_and_unifies_padding(celegans_dir, label_rows):
    names = {r["name"] for r in csv.DictReader(open(celegans_dir / "connectome" / "connectome_neurons.csv"))}
    names |= {r["label"] for r in label_rows}
    for stem in CONNECTOMES:
        edges = json.load(open(celegans_dir / "connectome" / f"{stem}.json"))
        names |= {e["pre"] for e in edges} | {e["post"] for e in edges}
    normalized = C.normalize_names(sorted(names))
    np.testing.assert_array_equal(C.normalize_names(normalized), normalized)
    # Padded and unpadded spellings in the real files collapse to one name, and only those do.
    assert {"VB02", "AS01", "DD01"} <= names and {"AS1", "DD1"} <= names
    groups = {}
    for raw, norm in zip(sorted(names), normalized.tolist()):
        groups.setdefault(norm, set()).add(raw.strip())
    merged = {k: v for k, v in groups.items() if len(v) > 1}
    assert {"VB2", "AS1", "DD1"} <= set(merged)
    assert all(len({n.replace("0", "") for n in v}) == 1 for v in merged.values())  # only padding differs
    assert not any(re.search(r"[A-Za-z]0\d", n) for n in normalized.tolist())


# ==================================================================== positions
def test_load_positions_real(atlas, celegans_dir):
    names, xyz = atlas
    raw = [line.split(",") for line in open(celegans_dir / "positions" / "neuron_positions_um.csv")]
    assert len(names) == len(raw) == 300 and xyz.shape == (300, 3) and xyz.dtype == np.float32
    assert len(set(names.tolist())) == 300
    k = names.tolist().index("AVAL")
    row = next(r for r in raw if r[0] == "AVAL")
    np.testing.assert_allclose(xyz[k], [float(v) for v in row[1:]], rtol=1e-6)
    assert 0 <= xyz[:, 0].min() and xyz[:, 0].max() <= 800


def test_load_positions_with_header(tmp_path):
    path = tmp_path / "pos.csv"
    path.write_text("name,x,y,z\nVB02,1,2,3\nAVAL,4,5,6.5\n")
    names, xyz = C.load_positions(path)
    assert names.tolist() == ["VB2", "AVAL"]
    np.testing.assert_array_equal(xyz, [[1, 2, 3], [4, 5, 6.5]])


@pytest.mark.parametrize("text, field, row, problem", [
    ("AVAL,1,2,3\nAVAR,1,oops,3\n", "y", 1, "not a number"),
    ("AVAL,1,2,3\nAVAR,1,2\n", "row", 1, "3 fields"),
    ("AVAL,1,2,3\nAVAR,1,2,nan\n", "xyz", 1, "non-finite"),
    ("VB2,1,2,3\nVB02,1,2,3\n", "name", 1, "duplicate value 'VB2'"),
    ("AVAL,1,2,3\n ,1,2,3\n", "name", 1, "empty neuron name"),
])
def test_load_positions_errors(tmp_path, text, field, row, problem):
    path = tmp_path / "pos.csv"
    path.write_text(text)
    with pytest.raises(ValidationError) as err:
        C.load_positions(path)
    assert (err.value.source, err.value.field, err.value.row) == (str(path), field, row)
    assert problem in err.value.problem


# ==================================================================== connectome (real)
def _expected_counts(path, keep_names, typ):
    """Counts per (pre, post) straight from the JSON, for edges between `keep_names` of JSON type `typ`."""
    out = {}
    for e in json.load(open(path)):
        pre, post = C.normalize_name(e["pre"]), C.normalize_name(e["post"])
        if e["typ"] == typ and pre in keep_names and post in keep_names:
            out[(pre, post)] = out.get((pre, post), 0) + sum(e["syn"])
    return out


@pytest.mark.parametrize("stem", CONNECTOMES)
@pytest.mark.parametrize("kind, typ", [(CHEMICAL, 0), (ELECTRICAL, 2)])
def test_connectome_counts_match_json(connectomes, celegans_dir, atlas, stem, kind, typ):
    con, _ = connectomes[stem]
    path = celegans_dir / "connectome" / f"{stem}.json"
    assert set(con.ids.tolist()) <= set(atlas[0].tolist())
    expected = _expected_counts(path, set(con.ids.tolist()), typ)
    w = con.weighted(weight="count", kind=kind).tocoo()
    got = {(con.ids[i], con.ids[j]): v for i, j, v in zip(w.row, w.col, w.data)}
    assert got == pytest.approx(expected)
    assert int((con.kind == kind).sum()) == sum(expected.values())
    assert (con.sign == 0).all() and con.syn_xyz is None


@pytest.mark.parametrize("stem", CONNECTOMES)
def test_connectome_positions_and_exclusion_report(connectomes, celegans_dir, atlas, stem):
    con, report = connectomes[stem]
    edges = json.load(open(celegans_dir / "connectome" / f"{stem}.json"))
    all_names = {C.normalize_name(e[k]) for e in edges for k in ("pre", "post")}
    atlas_names = dict(zip(atlas[0].tolist(), atlas[1]))
    assert set(con.ids.tolist()) == all_names & set(atlas_names)
    assert set(report.excluded["neurons_without_position"]) == all_names - set(atlas_names)
    np.testing.assert_array_equal(con.xyz, np.stack([atlas_names[n] for n in con.ids.tolist()]))
    assert any("no position and were excluded" in n for n in report.notes)


def test_cook_gap_junctions_symmetric_and_cell_types(connectomes):
    con, _ = connectomes["cook_jarrell_2019_h"]
    w = con.weighted(kind=ELECTRICAL)
    assert abs(w - w.T).sum() == 0 and w.nnz > 0
    cell_type = dict(zip(con.ids.tolist(), con.cell_type.tolist()))
    assert cell_type["AVAL"] == "AVA" and cell_type["VB2"] == "VB"


def test_connectome_include_and_no_positions(celegans_dir):
    path = celegans_dir / "connectome" / "white_1986_whole.json"
    chem, report = C.load_connectome(path, include=("chemical",))
    edges = json.load(open(path))
    assert (chem.kind == CHEMICAL).all()
    assert chem.n_synapses == sum(sum(e["syn"]) for e in edges if e["typ"] == 0)
    assert (chem.xyz == 0).all() and any("origin" in n for n in report.notes)
    assert any("typ 2" in n for n in report.notes)


def test_connectome_strict_and_missing_position_error_on_real(celegans_dir):
    root = celegans_dir / "connectome"
    with pytest.raises(ValidationError) as err:
        C.load_connectome(root / "cook_jarrell_2019_h.json", neurons_csv=root / "connectome_neurons.csv",
                          strict=True)
    assert err.value.field in ("pre", "post") and "unknown neuron" in err.value.problem
    with pytest.raises(ValidationError, match="has no position"):
        C.load_celegans_connectome(celegans_dir, "witvliet_2020_8", missing_position="error")


# ==================================================================== recordings (real)
def _identified_from_csv(label_rows, uid, confidence, allow_uncertain):
    best = {}
    for r in label_rows:
        if r["dataset_uid"] != uid or float(r["confidence"]) < confidence:
            continue
        if r["label"].endswith("?") and not allow_uncertain:
            continue
        name = C.normalize_name(r["label"].rstrip("?"))
        best.setdefault(name, []).append((float(r["confidence"]), int(r["trace_col_0based"])))
    out = {}
    for name, calls in best.items():
        calls.sort(reverse=True)
        if len(calls) == 1 or calls[0][0] > calls[1][0]:
            out[calls[0][1]] = name
    return out


@pytest.mark.parametrize("uid", UIDS)
def test_recording_matches_files(dataset, celegans_dir, label_rows, uid):
    rec, report = dataset.recordings[uid], dataset.reports[uid]
    with h5py.File(celegans_dir / "recordings" / f"{uid}-data.h5", "r") as f:
        np.testing.assert_array_equal(rec.traces, f["gcamp/trace_array"][()].astype(np.float32))
        np.testing.assert_array_equal(rec.timestamps, f["timing/timestamp_confocal"][()])
        np.testing.assert_array_equal(rec.modes, f["behavior/reversal_vec"][()])
        np.testing.assert_array_equal(rec.behaviour[:, rec.behaviour_names.index("velocity")],
                                      f["behavior/velocity"][()].astype(np.float32))
        np.testing.assert_array_equal(rec.behaviour[:, rec.behaviour_names.index("body_angle_29")],
                                      f["behavior/body_angle"][:, 29].astype(np.float32))
    assert rec.n_timesteps == 800 and abs(rec.rate_hz - 1 / 0.6) < 0.05
    assert rec.mode_names == ("forward", "reversal") and rec.positions is None
    assert "pumping" not in rec.behaviour_names and len(rec.behaviour_names) == 4 + 30
    assert report.excluded["behaviour_all_nan"] == ("pumping",)
    expected = _identified_from_csv(label_rows, uid, 3.0, False)
    got = {int(i): n for i, n in enumerate(rec.neuron_ids.tolist()) if n}
    assert got == expected


def test_recording_identified_counts(dataset):
    counts = {uid: int((r.neuron_ids != "").sum()) for uid, r in dataset.recordings.items()}
    assert counts == {"2022-07-26-31": 91, "2022-07-26-38": 78, "2022-07-27-31": 89,
                      "2022-07-27-38": 82, "2022-07-27-45": 95}
    assert {uid: r.n_sources for uid, r in dataset.recordings.items()} == {
        "2022-07-26-31": 146, "2022-07-26-38": 141, "2022-07-27-31": 145, "2022-07-27-38": 135,
        "2022-07-27-45": 140}


@pytest.mark.parametrize("uid", UIDS)
def test_identified_neurons_register_to_cook_and_white(celegans_dir, dataset, uid):
    rec = dataset.recordings[uid]
    n_identified = int((rec.neuron_ids != "").sum())
    for stem in ("cook_jarrell_2019_h", "white_1986_whole"):
        con, _ = C.load_connectome(celegans_dir / "connectome" / f"{stem}.json")
        assert register_by_id(rec, con).n_matched == n_identified
    # Witvliet 2020 is the brain (nerve ring) only: pharyngeal neurons such as MI/NSM are not in it.
    reg = register_by_id(rec, dataset.connectome)
    assert 0.8 * n_identified < reg.n_matched < n_identified
    unmatched = set(rec.neuron_ids[(reg.neuron < 0) & (rec.neuron_ids != "")].tolist())
    assert unmatched & {"MI", "NSML", "I2L", "M3L", "M3R", "NSMR", "I1L", "M4", "MCL"}


def test_vb02_label_is_matched_to_vb2(celegans_dir, dataset, atlas, label_rows):
    row = next(r for r in label_rows if r["label"] == "VB02" and float(r["confidence"]) >= 3)
    rec = dataset.recordings[row["dataset_uid"]]
    assert rec.neuron_ids[int(row["trace_col_0based"])] == "VB2" and "VB2" in atlas[0]
    cook, _ = C.load_celegans_connectome(celegans_dir, "cook_jarrell_2019_h")
    assert register_by_id(rec, cook).neuron[int(row["trace_col_0based"])] == cook.index(["VB2"])[0]


@pytest.mark.parametrize("confidence", [1.0, 3.0, 4.0, 5.0])
@pytest.mark.parametrize("allow_uncertain", [False, True])
def test_confidence_threshold(celegans_dir, label_rows, confidence, allow_uncertain):
    uid = "2022-07-27-38"
    rec, report = C.load_animal(celegans_dir, uid, confidence=confidence, allow_uncertain=allow_uncertain,
                                behaviour=("velocity",))
    got = {int(i): n for i, n in enumerate(rec.neuron_ids.tolist()) if n}
    assert got == _identified_from_csv(label_rows, uid, confidence, allow_uncertain)
    if confidence <= 3.0:  # URADL is called twice (conf 5 and 3): the conf-5 column wins and it is reported
        assert got[7] == "URADL" and 46 not in got
        assert "URADL@col46(conf 3)" in report.excluded["labels_duplicate"]
    if confidence <= 2.0 and allow_uncertain:  # SAAD? twice at conf 2: a tie identifies neither column
        assert {"SAAD?@col104(conf 2)", "SAAD?@col134(conf 2)"} <= set(report.excluded["labels_duplicate"])
        assert "SAAD" not in got.values() and got[103] == "RMDD"


def test_trace_choice_and_list_animals(celegans_dir):
    assert C.list_animals(celegans_dir) == list(UIDS)
    rec, _ = C.load_animal(celegans_dir, UIDS[0], trace="traces_array_F_F20", behaviour=())
    with h5py.File(celegans_dir / "recordings" / f"{UIDS[0]}-data.h5", "r") as f:
        np.testing.assert_array_equal(rec.traces, f["gcamp/traces_array_F_F20"][()].astype(np.float32))
    assert rec.behaviour is None
    with pytest.raises(ValidationError, match="unknown trace"):
        C.load_animal(celegans_dir, UIDS[0], trace="nope")
    with pytest.raises(ValidationError, match="no recording for animal"):
        C.load_animal(celegans_dir, "2000-01-01-01")


# ==================================================================== corrupted small copies
T_SMALL, N_SMALL = 12, 4
LABELS = ("dataset_uid,trace_col_0based,label,confidence\n"
          "a1,0,AVAL,5.0\na1,1,VB02,4.0\na1,2,RMDD?,4.0\na1,3,AVAR,2.0\n")


def _write_h5(path, **override):
    rng = np.random.default_rng(0)
    fields = {
        "gcamp/trace_array": rng.normal(size=(T_SMALL, N_SMALL)),
        "timing/timestamp_confocal": 100 + 0.6 * np.arange(T_SMALL),
        "behavior/reversal_vec": (np.arange(T_SMALL) % 5 == 0).astype(np.int64),
        "behavior/velocity": rng.normal(size=T_SMALL),
        "behavior/pumping": np.full(T_SMALL, np.nan),
        "behavior/body_angle": rng.normal(size=(T_SMALL, 3)),
    }
    fields.update(override)
    with h5py.File(path, "w") as f:
        for name, value in fields.items():
            if value is not None:
                f[name] = value
    return path


@pytest.fixture()
def small(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(LABELS)
    return _write_h5(tmp_path / "a1-data.h5"), labels


def test_small_recording(small):
    h5, labels = small
    rec, report = C.load_recording(h5, labels, behaviour=("velocity", "pumping", "body_angle"))
    assert rec.neuron_ids.tolist() == ["AVAL", "VB2", "", ""]
    assert rec.behaviour_names == ("velocity", "body_angle_0", "body_angle_1", "body_angle_2")
    assert report.excluded["labels_uncertain"] == ("RMDD?",)
    assert report.excluded["labels_below_confidence"] == ("AVAR",)
    rec2, _ = C.load_recording(h5, labels, allow_uncertain=True, confidence=2, behaviour=())
    assert rec2.neuron_ids.tolist() == ["AVAL", "VB2", "RMDD", "AVAR"]
    rec3, report3 = C.load_recording(h5, None, behaviour=())
    assert rec3.neuron_ids is None and "no label table" in str(report3)


@pytest.mark.parametrize("override, field, problem", [
    ({"behavior/velocity": None}, "behavior/velocity", "missing dataset"),
    ({"gcamp/trace_array": None}, "gcamp/trace_array", "missing dataset"),
    ({"timing/timestamp_confocal": np.arange(T_SMALL - 1.0)}, "timing/timestamp_confocal", "T=12"),
    ({"behavior/velocity": np.zeros(T_SMALL + 2)}, "behavior/velocity", "T=12"),
    ({"behavior/reversal_vec": np.full(T_SMALL, 2)}, "behavior/reversal_vec", "not in allowed set"),
    ({"timing/timestamp_confocal": np.r_[np.arange(T_SMALL - 1.0), 3.0]}, "timestamps",
     "not strictly increasing"),
    ({"gcamp/trace_array": np.array([b"x"] * T_SMALL)}, "gcamp/trace_array", "numeric"),
])
def test_recording_h5_errors(tmp_path, override, field, problem):
    h5 = _write_h5(tmp_path / "a1-data.h5", **override)
    labels = tmp_path / "labels.csv"
    labels.write_text(LABELS)
    with pytest.raises(ValidationError) as err:
        C.load_recording(h5, labels, behaviour=("velocity",))
    assert err.value.field == field and problem in err.value.problem
    assert err.value.source == str(h5)


@pytest.mark.parametrize("text, field, row, problem", [
    ("dataset_uid,trace_col_0based,label,confidence\na1,0,AVAL,high\n", "confidence", 0, "not a number"),
    ("dataset_uid,trace_col_0based,label,confidence\na1,0,AVAL,5\na1,9,AVAR,5\n", "trace_col_0based", 1,
     "past the last"),
    ("dataset_uid,trace_col_0based,label,confidence\nb2,0,X,5\na1,0,AVAL,5\na1,0,AVAR,5\n",
     "trace_col_0based", 2, "duplicate"),
    ("dataset_uid,trace_col_0based,label,confidence\na1,0,?,5\n", "label", 0, "empty label"),
    ("dataset_uid,trace_col_0based,label,confidence\na1,0,AVAL\n", "row", 0, "3 fields"),
    ("dataset_uid,trace_col_0based,label\na1,0,AVAL\n", "confidence", None, "missing column"),
    ("dataset_uid,trace_col_0based,label,confidence\nb2,0,AVAL,5\n", "dataset_uid", None, "no label rows"),
    ("dataset_uid,trace_col_0based,label,confidence\na1,x,AVAL,5\n", "trace_col_0based", 0, "not an integer"),
])
def test_label_table_errors(tmp_path, text, field, row, problem):
    h5 = _write_h5(tmp_path / "a1-data.h5")
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    with pytest.raises(ValidationError) as err:
        C.load_recording(h5, labels, behaviour=())
    assert (err.value.source, err.value.field, err.value.row) == (str(labels), field, row)
    assert problem in err.value.problem


def _write_json(path, edges):
    path.write_text(json.dumps(edges))
    return path


GOOD_EDGES = [{"pre": "AVAL", "post": "VB02", "syn": [2, 1], "typ": 0},
              {"pre": "AVAL", "post": "AVAR", "syn": [3], "typ": 2},
              {"pre": "AVAR", "post": "AVAL", "syn": [3], "typ": 2},
              {"pre": "VB2", "post": "AVAR", "syn": [1], "typ": 0}]


def test_small_connectome_rows_per_synapse(tmp_path):
    pos = tmp_path / "pos.csv"
    pos.write_text("AVAL,1,0,0\nAVAR,2,0,0\nVB2,3,0,0\n")
    con, report = C.load_connectome(_write_json(tmp_path / "c.json", GOOD_EDGES), pos)
    assert con.ids.tolist() == ["AVAL", "AVAR", "VB2"]
    assert con.n_synapses == 3 + 3 + 3 + 1
    np.testing.assert_array_equal(con.weighted(kind=CHEMICAL).toarray(), [[0, 0, 3], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(con.weighted(kind=ELECTRICAL).toarray(), [[0, 3, 0], [3, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(con.xyz[:, 0], [1, 2, 3])
    assert report.notes == ()


@pytest.mark.parametrize("edges, field, row, problem", [
    (GOOD_EDGES + [{"pre": "AVAL", "syn": [1], "typ": 0}], "post", 4, "no 'post'"),
    (GOOD_EDGES + [{"pre": "AVAL", "post": "", "syn": [1], "typ": 0}], "post", 4, "non-empty string"),
    (GOOD_EDGES + [{"pre": "AVAL", "post": "AVAR", "syn": [-1], "typ": 0}], "syn", 4, "non-negative"),
    (GOOD_EDGES + [{"pre": "AVAL", "post": "AVAR", "syn": ["2"], "typ": 0}], "syn", 4, "non-negative"),
    (GOOD_EDGES + [{"pre": "AVAL", "post": "AVAR", "syn": [1], "typ": 1}], "typ", 4, "unknown synapse type"),
    ([["AVAL", "AVAR"]], "edge", 0, "expected an object"),
])
def test_connectome_json_errors(tmp_path, edges, field, row, problem):
    path = _write_json(tmp_path / "c.json", edges)
    with pytest.raises(ValidationError) as err:
        C.load_connectome(path)
    assert (err.value.source, err.value.field, err.value.row) == (str(path), field, row)
    assert problem in err.value.problem


def test_connectome_unknown_neuron_and_missing_position(tmp_path):
    extra = {"pre": "AVAL", "post": "XYZ9", "syn": [1], "typ": 0}
    path = _write_json(tmp_path / "c.json", GOOD_EDGES + [extra])
    neurons = tmp_path / "neurons.csv"
    neurons.write_text("name,class,type\nAVAL,AVA,inter\nAVAR,AVA,inter\nVB02,VB,motor\n")
    with pytest.raises(ValidationError) as err:
        C.load_connectome(path, neurons_csv=neurons, strict=True)
    assert (err.value.field, err.value.row) == ("post", 4) and "'XYZ9'" in err.value.problem
    con, report = C.load_connectome(path, neurons_csv=neurons)
    assert dict(zip(con.ids, con.cell_type)) == {"AVAL": "AVA", "AVAR": "AVA", "VB2": "VB", "XYZ9": ""}
    assert report.excluded["neurons_without_cell_type"] == ("XYZ9",)
    pos = tmp_path / "pos.csv"
    pos.write_text("AVAL,1,0,0\nAVAR,2,0,0\nVB2,3,0,0\n")
    con, report = C.load_connectome(path, pos)
    assert "XYZ9" not in con.ids and report.excluded["neurons_without_position"] == ("XYZ9",)
    assert con.n_synapses == 10 and "1 synapses (1 edges)" in report.notes[0]
    with pytest.raises(ValidationError) as err:
        C.load_connectome(path, pos, missing_position="error")
    assert (err.value.field, err.value.row) == ("post", 4)


def test_connectome_bad_json_and_arguments(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ValidationError, match="not valid JSON"):
        C.load_connectome(path)
    path = _write_json(tmp_path / "d.json", GOOD_EDGES)
    with pytest.raises(ValidationError, match="unknown synapse kind"):
        C.load_connectome(path, include=("chemical", "gap"))
