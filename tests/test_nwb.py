"""NWB optical-physiology import from hand-built NWB-layout HDF5 files (h5py only, no pynwb)."""

import h5py
import numpy as np
import pytest

from mesojax.data import ValidationError
from mesojax.data import nwb as N

T_, X_, Y_, Z_ = 30, 8, 6, 3
# Three ROIs given by their mask pixels (x, y[, z]) and weights; expected centroids computed by hand below.
ROI_PIXELS = [
    [((1, 1, 0), 1.0), ((3, 1, 0), 1.0)],                       # centroid (2, 1, 0)
    [((5, 4, 2), 3.0), ((5, 2, 2), 1.0)],                       # centroid (5, 3.5, 2)
    [((0, 5, 1), 2.0)],                                         # centroid (0, 5, 1)
]
CENTROID_INDEX = np.array([[2, 1, 0], [5, 3.5, 2], [0, 5, 1]], float)
NEURON_IDS = np.array([b"AVAL", b"AVAR", b"RIML"])


def _str_attr(obj, name, value):
    obj.attrs[name] = value


def write_nwb(path, *, mask="image_mask", dims=2, calibration="grid", time="timestamps", rois=(0, 1, 2),
              with_ref=True, data=None, extra_series=False, empty_roi=False, unit="meters"):
    rng = np.random.default_rng(0)
    rois = np.asarray(rois)
    with h5py.File(path, "w") as f:
        plane = f.create_group("general/optophysiology/ImagingPlane")
        _str_attr(plane, "neurodata_type", "ImagingPlane")
        if calibration == "grid":
            gs = plane.create_dataset("grid_spacing", data=np.array([0.5, 0.25, 2.0][:dims]) * 1e-6)
            oc = plane.create_dataset("origin_coords", data=np.array([100.0, 200.0, 10.0][:dims]) * 1e-6)
            gs.attrs["unit"] = unit
            oc.attrs["unit"] = unit
        elif calibration == "manifold":
            yy, xx = np.meshgrid(np.arange(Y_), np.arange(X_), indexing="ij")
            man = np.stack([1000 + 2.0 * xx, 3.0 * yy, np.full_like(xx, 7.0)], axis=-1)  # mm * 1e-3 below
            m = plane.create_dataset("manifold", data=man.astype(np.float32))
            m.attrs["conversion"] = 1e-3
            m.attrs["unit"] = "millimeters"
        seg = f.create_group("processing/ophys/ImageSegmentation/PlaneSegmentation")
        _str_attr(seg, "neurodata_type", "PlaneSegmentation")
        seg["imaging_plane"] = h5py.SoftLink("/general/optophysiology/ImagingPlane")
        seg["id"] = np.arange(len(ROI_PIXELS))
        seg["neuron_id"] = NEURON_IDS
        pixels = [list(p) for p in ROI_PIXELS]
        if empty_roi:
            pixels[1] = [((5, 4, 2), 0.0)]
        if mask == "image_mask":
            shape = (len(pixels), X_, Y_) + ((Z_,) if dims == 3 else ())
            im = np.zeros(shape)
            for r, pix in enumerate(pixels):
                for (x, y, z), w in pix:
                    im[(r, x, y) + ((z,) if dims == 3 else ())] = w
            seg["image_mask"] = im
        else:
            axes = ["x", "y", "z"][: (3 if mask == "voxel_mask" else 2)]
            dtype = [(a, "u4") for a in axes] + [("weight", "f4")]
            rows = [tuple(c[: len(axes)]) + (w,) for pix in pixels for c, w in pix]
            seg[mask] = np.array(rows, dtype=dtype)
            seg[f"{mask}_index"] = np.cumsum([len(p) for p in pixels])
        ophys = f["processing/ophys"]
        names = ["Fluorescence/RoiResponseSeries"] + (["DfOverF/RoiResponseSeries"] if extra_series else [])
        for name in names:
            s = ophys.create_group(name)
            _str_attr(s, "neurodata_type", "RoiResponseSeries")
            d = s.create_dataset("data", data=rng.normal(size=(T_, len(rois))) if data is None else data)
            d.attrs["conversion"] = 2.0
            d.attrs["offset"] = 1.0
            if time == "timestamps":
                s["timestamps"] = 5.0 + 0.1 * np.arange(T_)
            elif time == "rate":
                st = s.create_dataset("starting_time", data=5.0)
                st.attrs["rate"] = 10.0
            r = s.create_dataset("rois", data=rois)
            if with_ref:
                r.attrs["table"] = seg.ref
    return path


def expected_um(dims=2, calibration="grid"):
    idx = CENTROID_INDEX.copy()
    if calibration == "manifold":
        # The manifold holds mm × 1e-3 (conversion) in "millimeters": its numbers are µm.
        return np.stack([1000 + 2 * idx[:, 0], 3 * idx[:, 1], np.full(3, 7.0)], axis=1)
    spacing = np.array([0.5, 0.25, 2.0])
    origin = np.array([100.0, 200.0, 10.0])
    if dims == 2:
        idx[:, 2] = 0
        spacing[2], origin[2] = 0, 0
    return origin + idx * spacing


@pytest.mark.parametrize("mask, dims", [
    ("image_mask", 2), ("image_mask", 3), ("pixel_mask", 2), ("voxel_mask", 3)])
def test_centroids_and_traces(tmp_path, mask, dims):
    path = write_nwb(tmp_path / "s.nwb", mask=mask, dims=dims)
    rec, report = N.load_nwb_ophys(path, id_column="neuron_id")
    np.testing.assert_allclose(rec.positions, expected_um(dims), rtol=1e-5, atol=1e-6)
    with h5py.File(path) as f:
        raw = f["processing/ophys/Fluorescence/RoiResponseSeries/data"][()]
    np.testing.assert_allclose(rec.traces, raw * 2.0 + 1.0, rtol=1e-6)
    np.testing.assert_allclose(rec.timestamps, 5.0 + 0.1 * np.arange(T_))
    assert rec.neuron_ids.tolist() == ["AVAL", "AVAR", "RIML"]
    assert any("z = 0" in n for n in report.notes) == (dims == 2)


@pytest.mark.parametrize("mask", ["image_mask", "pixel_mask"])
def test_manifold_calibration(tmp_path, mask):
    rec, _ = N.load_nwb_ophys(write_nwb(tmp_path / "s.nwb", mask=mask, calibration="manifold"))
    np.testing.assert_allclose(rec.positions, expected_um(calibration="manifold"), rtol=1e-5)


@pytest.mark.parametrize("mask", ["pixel_mask", "image_mask"])
@pytest.mark.parametrize("rois", [(2, 0), (1,), (2, 1, 0)])
def test_rois_region_selects_and_orders_rows(tmp_path, rois, mask):
    path = write_nwb(tmp_path / "s.nwb", rois=rois, mask=mask, with_ref=False)
    rec, _ = N.load_nwb_ophys(path, id_column="neuron_id")
    np.testing.assert_allclose(rec.positions, expected_um()[list(rois)], rtol=1e-5, atol=1e-6)
    assert rec.neuron_ids.tolist() == [NEURON_IDS[r].decode() for r in rois]


def test_starting_time_rate_and_pixel_size(tmp_path):
    path = write_nwb(tmp_path / "s.nwb", time="rate", calibration=None)
    with pytest.raises(ValidationError, match="pass pixel_size_um"):
        N.load_nwb_ophys(path)
    rec, report = N.load_nwb_ophys(path, pixel_size_um=(2.0, 3.0, 1.0))
    assert rec.rate_hz == 10.0
    np.testing.assert_allclose(rec.timestamps, 5.0 + np.arange(T_) / 10.0)
    np.testing.assert_allclose(rec.positions, CENTROID_INDEX * [2, 3, 0], atol=1e-9)
    assert "pixel_size_um" in report.notes[0]
    rec, report = N.load_nwb_ophys(path, positions=False)
    assert rec.positions is None and "positions not read" in str(report)


def test_series_selection(tmp_path):
    path = write_nwb(tmp_path / "s.nwb", extra_series=True)
    assert N.list_roi_response_series(path) == ["/processing/ophys/DfOverF/RoiResponseSeries",
                                                "/processing/ophys/Fluorescence/RoiResponseSeries"]
    with pytest.raises(ValidationError, match="several RoiResponseSeries"):
        N.load_nwb_ophys(path)
    rec, _ = N.load_nwb_ophys(path, series="DfOverF/RoiResponseSeries")
    assert rec.source.endswith("DfOverF/RoiResponseSeries") and rec.n_sources == 3
    with pytest.raises(ValidationError, match="matches 2"):
        N.load_nwb_ophys(path, series="RoiResponseSeries")


@pytest.mark.parametrize("kwargs, load_kwargs, field, problem", [
    (dict(data=np.zeros((T_, 2))), {}, "/processing/ophys/Fluorescence/RoiResponseSeries/data",
     "R = len(rois) = 3"),
    (dict(data=np.zeros((3, T_))), {}, "/processing/ophys/Fluorescence/RoiResponseSeries/data", "not [T, R]"),
    (dict(time=None), {}, "/processing/ophys/Fluorescence/RoiResponseSeries", "neither 'timestamps'"),
    (dict(rois=(0, 5, 1)), {}, "/processing/ophys/Fluorescence/RoiResponseSeries/rois", "out of range"),
    (dict(empty_roi=True, mask="pixel_mask"), {},
     "/processing/ophys/ImageSegmentation/PlaneSegmentation/pixel_mask", "empty"),
    (dict(unit="furlongs"), {}, "/general/optophysiology/ImagingPlane/grid_spacing", "unknown length unit"),
    ({}, dict(id_column="cell"), "/processing/ophys/ImageSegmentation/PlaneSegmentation/cell", "no such"),
])
def test_errors(tmp_path, kwargs, load_kwargs, field, problem):
    path = write_nwb(tmp_path / "s.nwb", **kwargs)
    with pytest.raises(ValidationError) as err:
        N.load_nwb_ophys(path, **load_kwargs)
    assert err.value.source == str(path) and err.value.field == field and problem in err.value.problem
    if kwargs.get("empty_roi"):
        assert err.value.row == 1


def test_no_series_and_no_masks(tmp_path):
    path = tmp_path / "empty.nwb"
    with h5py.File(path, "w") as f:
        f.create_group("processing/ophys")
    with pytest.raises(ValidationError, match="no RoiResponseSeries"):
        N.load_nwb_ophys(path)
    path = write_nwb(tmp_path / "s.nwb", mask="pixel_mask")
    with h5py.File(path, "a") as f:
        del f["processing/ophys/ImageSegmentation/PlaneSegmentation/pixel_mask"]
    with pytest.raises(ValidationError, match="no image_mask, pixel_mask or voxel_mask"):
        N.load_nwb_ophys(path)
