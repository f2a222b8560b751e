"""NWB optical physiology: an ``RoiResponseSeries`` and its ``PlaneSegmentation`` as a :class:`Recording`.

Read with h5py only (no pynwb needed). The NWB layout that is understood (schema ``core/nwb.ophys``):

* ``RoiResponseSeries`` — any group tagged ``neurodata_type = "RoiResponseSeries"`` (usually
  ``processing/ophys/{Fluorescence,DfOverF}/<name>``): ``data`` ``[T, R]`` (× ``conversion`` + ``offset``
  attributes), ``timestamps`` ``[T]`` or ``starting_time`` with a ``rate`` attribute, and ``rois``, a
  ``DynamicTableRegion`` (row indices) whose ``table`` attribute references the ``PlaneSegmentation``;
* ``PlaneSegmentation`` — ROI masks as ``image_mask`` ``[n_rows, X, Y(, Z)]`` or ``pixel_mask`` /
  ``voxel_mask`` (compound ``x, y[, z], weight``, ragged through ``*_mask_index``);
* ``ImagingPlane`` (the segmentation's ``imaging_plane`` link) — ``grid_spacing`` and ``origin_coords``
  (attribute ``unit``, default meters) or the deprecated ``manifold`` ``[height, width(, depth), 3]``
  (attributes ``conversion``, ``unit``).

Each ROI becomes one point source at its mask centroid, weighted by the mask:
``p_r = Σ_k w_rk · pos(k) / Σ_k w_rk`` with ``pos(k) = origin + index(k) · spacing`` (grid) or
``manifold[y, x]`` (per pixel), converted to µm. Mask axes follow the schema: ``image_mask`` is
``[roi, x, y(, z)]`` and ``manifold`` is ``[y, x(, z), 3]``. A 2-D plane without a third coordinate gets
``z = 0`` (reported). Stimulus and behaviour are not read.

Example:
    >>> rec, report = load_nwb_ophys("session.nwb", id_column="neuron_id")  # doctest: +SKIP
    >>> rec.traces.shape, rec.positions.shape                               # doctest: +SKIP
    ((1000, 120), (120, 3))
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import h5py
import numpy as np

from mesojax.data import validation as V
from mesojax.data.recording import Recording
from mesojax.data.tables import LoadReport, _Notes

PathLike = str | os.PathLike

_TO_UM = {
    "meters": 1e6, "meter": 1e6, "m": 1e6,
    "millimeters": 1e3, "millimeter": 1e3, "mm": 1e3,
    "micrometers": 1.0, "micrometer": 1.0, "microns": 1.0, "micron": 1.0, "um": 1.0, "µm": 1.0, "μm": 1.0,
    "nanometers": 1e-3, "nanometer": 1e-3, "nm": 1e-3,
}
_CHUNK_ROIS = 64  # image masks are read this many ROIs at a time to bound memory


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _type(obj: h5py.HLObject) -> str:
    return _text(obj.attrs.get("neurodata_type", ""))


def list_roi_response_series(path: PathLike) -> list[str]:
    """HDF5 paths of the ROI response series in an NWB file (tagged groups, else groups with data + rois)."""
    found, untagged = [], []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Group):
            if _type(obj) == "RoiResponseSeries":
                found.append("/" + name)
            elif "data" in obj and "rois" in obj and not _type(obj):
                untagged.append("/" + name)

    with V.file_errors(str(path), what="NWB file"), h5py.File(path, "r") as f:
        f.visititems(visit)
    return sorted(found) or sorted(untagged)


def _pick_series(source: str, paths: list[str], series: str | None) -> str:
    if not paths:
        raise V.ValidationError(source, "RoiResponseSeries", None,
                                "no RoiResponseSeries in the file (e.g. processing/ophys/Fluorescence/...)")
    if series is None:
        if len(paths) > 1:
            raise V.ValidationError(source, "series", None,
                                    f"several RoiResponseSeries, pick one with series=: {paths}")
        return paths[0]
    key = "/" + series.strip("/")
    match = [p for p in paths if p == key or p.endswith(key)]
    if len(match) != 1:
        raise V.ValidationError(source, "series", None,
                                f"{series!r} matches {len(match)} of the RoiResponseSeries {paths}")
    return match[0]


def _unit_scale(source: str, field: str, obj: h5py.HLObject, default: str = "meters") -> float:
    unit = _text(obj.attrs.get("unit", default)).strip().lower()
    if unit not in _TO_UM:
        raise V.ValidationError(source, field, None, f"unknown length unit {unit!r}; known: {sorted(_TO_UM)}")
    return _TO_UM[unit]


def _timestamps(source: str, group: h5py.Group, t: int) -> tuple[np.ndarray, float | None]:
    name = group.name
    if "timestamps" in group:
        ts = group["timestamps"][()]
        V.check_numeric(source, f"{name}/timestamps", ts)
        if ts.shape != (t,):
            raise V.ValidationError(source, f"{name}/timestamps", None,
                                    f"shape {list(ts.shape)} does not match data length T={t}")
        return ts.astype(np.float64), None
    if "starting_time" in group:
        start = group["starting_time"]
        rate = start.attrs.get("rate")
        if rate is None or not np.isfinite(rate) or rate <= 0:
            raise V.ValidationError(source, f"{name}/starting_time", None,
                                    f"needs a positive 'rate' attribute, got {rate}")
        return float(start[()]) + np.arange(t) / float(rate), float(rate)
    raise V.ValidationError(source, f"{name}", None, "neither 'timestamps' nor 'starting_time' present")


def _segmentation(source: str, f: h5py.File, series: h5py.Group) -> h5py.Group:
    """The PlaneSegmentation that the series' ``rois`` region points into."""
    rois = series["rois"]
    ref = rois.attrs.get("table")
    if isinstance(ref, h5py.Reference) and ref:
        return f[ref]
    # No reference attribute: fall back to the file's only PlaneSegmentation.
    planes = []
    f.visititems(lambda n, o: planes.append(o) if isinstance(o, h5py.Group)
                 and _type(o) == "PlaneSegmentation" else None)
    if len(planes) != 1:
        raise V.ValidationError(source, rois.name, None,
                                f"'rois' has no 'table' reference and the file holds {len(planes)} "
                                "PlaneSegmentations")
    return planes[0]


def _ragged_mask(source: str, plane: h5py.Group, name: str, n_rows: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row [P], coords [P, D], weight [P])`` of a pixel/voxel mask with its VectorIndex."""
    data = plane[name][()]
    axes = [a for a in ("x", "y", "z") if data.dtype.names and a in data.dtype.names]
    if not data.dtype.names or "weight" not in data.dtype.names or axes[:2] != ["x", "y"]:
        raise V.ValidationError(source, f"{plane.name}/{name}", None,
                                f"expected a compound dataset with x, y[, z], weight; got dtype {data.dtype}")
    index_name = f"{name}_index"
    if index_name not in plane:
        raise V.ValidationError(source, f"{plane.name}/{index_name}", None,
                                "missing (needed to split the mask per ROI)")
    ends = plane[index_name][()].astype(np.int64)
    if ends.shape != (n_rows,):
        raise V.ValidationError(source, f"{plane.name}/{index_name}", None,
                                f"shape {list(ends.shape)} does not match {n_rows} segmentation rows")
    bad = np.diff(np.r_[0, ends]) < 0
    if bad.any() or (n_rows and ends[-1] != len(data)):
        row = V.first_row(bad) if bad.any() else n_rows - 1
        raise V.ValidationError(source, f"{plane.name}/{index_name}", row,
                                f"index must be non-decreasing and end at the mask length {len(data)}")
    row = np.repeat(np.arange(n_rows), np.diff(np.r_[0, ends]))
    coords = np.stack([data[a].astype(np.float64) for a in axes], axis=1)
    return row, coords, data["weight"].astype(np.float64)


def _calibration(source: str, plane: h5py.Group, pixel_size_um: Any, notes: _Notes):
    """How mask indices become µm: ``("grid", origin [3], spacing [3])`` or ``("manifold", values, None)``.

    An explicit `pixel_size_um` wins; else the imaging plane's grid_spacing/origin_coords; else its manifold.
    """
    if pixel_size_um is not None:
        size = np.broadcast_to(np.asarray(pixel_size_um, np.float64), (3,))
        notes.add(f"positions from pixel_size_um={size.tolist()} (origin 0), not from the file")
        return ("grid", np.zeros(3), size)
    imaging = plane.get("imaging_plane")
    if imaging is None:
        raise V.ValidationError(source, f"{plane.name}/imaging_plane", None,
                                "no imaging plane link: positions cannot be calibrated; pass pixel_size_um")
    if "grid_spacing" in imaging:
        gs = imaging["grid_spacing"]
        spacing = gs[()].astype(np.float64) * _unit_scale(source, gs.name, gs)
        origin = np.zeros(len(spacing))
        if "origin_coords" in imaging:
            oc = imaging["origin_coords"]
            origin = oc[()].astype(np.float64) * _unit_scale(source, oc.name, oc)
        if spacing.shape not in ((2,), (3,)) or origin.shape not in ((2,), (3,)):
            raise V.ValidationError(source, gs.name, None,
                                    f"expected 2 or 3 values, got {spacing.shape}/{origin.shape}")
        V.check_finite(source, gs.name, spacing)
        V.check_finite(source, f"{imaging.name}/origin_coords", origin)
        origin3 = np.zeros(3)
        origin3[: len(origin)] = origin
        spacing3 = np.zeros(3)
        spacing3[: len(spacing)] = spacing
        if len(origin) == 2 and len(spacing) == 2:
            notes.add("2-D imaging plane without a z coordinate: ROI positions have z = 0")
        return ("grid", origin3, spacing3)
    if "manifold" in imaging:
        man = imaging["manifold"]
        scale = float(man.attrs.get("conversion", 1.0)) * _unit_scale(source, man.name, man)
        values = man[()].astype(np.float64) * scale
        if values.shape[-1] != 3 or values.ndim not in (3, 4):
            raise V.ValidationError(source, man.name, None,
                                    f"expected [height, width(, depth), 3], got {list(values.shape)}")
        flat = values.reshape(-1, 3)
        if np.ptp(flat, axis=0).max() == 0:
            raise V.ValidationError(source, man.name, None,
                                    "manifold is constant (placeholder); pass pixel_size_um")
        V.check_finite(source, man.name, flat)
        return ("manifold", values, None)
    raise V.ValidationError(source, imaging.name, None,
                            "no grid_spacing or manifold: positions cannot be calibrated; pass pixel_size_um")


def _centroids(source: str, plane: h5py.Group, rows: np.ndarray, calib) -> np.ndarray:
    """``[R, 3]`` µm centroid of each selected segmentation row."""
    n_rows = _n_rows(source, plane)
    mode, a, b = calib
    if "image_mask" in plane:
        mask = plane["image_mask"]
        if mask.ndim not in (3, 4) or mask.shape[0] != n_rows:
            raise V.ValidationError(source, mask.name, None,
                                    f"expected [{n_rows}, X, Y(, Z)], got {list(mask.shape)}")
        d = mask.ndim - 1
        grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in mask.shape[1:]], indexing="ij")
        total = np.zeros((len(rows),))
        acc = np.zeros((len(rows), 3))
        order = np.argsort(rows, kind="stable")
        for k in range(0, len(rows), _CHUNK_ROIS):
            sel = order[k:k + _CHUNK_ROIS]
            uniq, inv = np.unique(rows[sel], return_inverse=True)  # h5py needs increasing unique indices
            w = mask[uniq.tolist()].astype(np.float64)[inv].reshape(len(sel), -1)
            total[sel] = w.sum(1)
            if mode == "grid":
                idx = np.stack([g.ravel() for g in grids], axis=1)  # [P, d]
                acc[sel, :d] = w @ idx
            else:
                man = np.swapaxes(a, 0, 1)  # manifold is [y, x(, z), 3]; masks are [x, y(, z)]
                if man.shape[:-1] != mask.shape[1:]:
                    raise V.ValidationError(source, "manifold", None,
                                            f"shape {list(a.shape)} does not match image_mask "
                                            f"{list(mask.shape)}")
                acc[sel] = w @ man.reshape(-1, 3)
        _check_weights(source, f"{plane.name}/image_mask", total, rows)
        idx_mean = acc / total[:, None]
    else:
        name = "voxel_mask" if "voxel_mask" in plane else "pixel_mask" if "pixel_mask" in plane else None
        if name is None:
            raise V.ValidationError(source, plane.name, None, "no image_mask, pixel_mask or voxel_mask")
        row, coords, weight = _ragged_mask(source, plane, name, n_rows)
        total_all = np.bincount(row, weight, minlength=n_rows)
        if mode == "grid":
            pts = np.zeros((len(row), 3))
            pts[:, : coords.shape[1]] = coords
        else:
            ci = coords.astype(np.int64)
            if ci.shape[1] != a.ndim - 1 or (ci >= np.asarray(a.shape[:-1])[[1, 0, 2][: ci.shape[1]]]).any():
                raise V.ValidationError(source, f"{plane.name}/{name}", None,
                                        "mask coordinates outside the manifold")
            pts = a[(ci[:, 1], ci[:, 0]) + tuple(ci[:, 2:].T)]
        sums = np.stack([np.bincount(row, weight * pts[:, c], minlength=n_rows) for c in range(3)], axis=1)
        total = total_all[rows]
        _check_weights(source, f"{plane.name}/{name}", total, rows)
        idx_mean = sums[rows] / total[:, None]
    return (a + idx_mean * b) if mode == "grid" else idx_mean


def _check_weights(source: str, field: str, total: np.ndarray, rows: np.ndarray) -> None:
    bad = ~(np.abs(total) > 0) | ~np.isfinite(total)
    if bad.any():
        k = V.first_row(bad)
        raise V.ValidationError(source, field, int(rows[k]), "ROI mask is empty (zero total weight)")


def _n_rows(source: str, plane: h5py.Group) -> int:
    for name in ("id", "image_mask", "pixel_mask_index", "voxel_mask_index"):
        if name in plane:
            return int(plane[name].shape[0])
    raise V.ValidationError(source, plane.name, None, "PlaneSegmentation has no 'id' column")


def load_nwb_ophys(
    path: PathLike,
    *,
    series: str | None = None,
    pixel_size_um: float | Sequence[float] | None = None,
    id_column: str | None = None,
    positions: bool = True,
) -> tuple[Recording, LoadReport]:
    """Read one ROI response series of an NWB file and its ROI positions as a :class:`Recording`.

    Args:
      path: the ``.nwb`` (HDF5) file.
      series: which RoiResponseSeries (its name, a path suffix like ``"DfOverF/plane0"``, or the full
        path); needed only when the file holds several (see :func:`list_roi_response_series`).
      pixel_size_um: µm per mask index along x, y(, z) (scalar or 3 values, origin 0); overrides the
        file's calibration, and is required when the imaging plane has none.
      id_column: a PlaneSegmentation column holding each ROI's connectome neuron id (e.g. a cell name
        or a segment id); its values become ``neuron_ids``.
      positions: read mask centroids (False: ``positions`` is None, no calibration needed).

    Returns:
      ``(recording, report)``: traces ``[T, R]`` float32 (data × conversion + offset), timestamps ``[T]`` s,
      positions ``[R, 3]`` µm (the ROIs in series order), neuron ids from `id_column`.

    Raises:
      ValidationError: no (or ambiguous) series, data not ``[T, R]`` with ``R = len(rois)``, missing time
        base, ROI index out of range, no masks or calibration, an empty mask — naming the HDF5 path.
    """
    source = str(path)
    notes = _Notes(source)
    name = _pick_series(source, list_roi_response_series(path), series)
    with V.file_errors(source, name, what="NWB file"), h5py.File(path, "r") as f:
        group = f[name]
        for key in ("data", "rois"):
            if key not in group:
                raise V.ValidationError(source, f"{name}/{key}", None, "missing dataset")
        data = group["data"]
        rois = group["rois"][()]
        V.check_numeric(source, f"{name}/rois", rois)
        if rois.ndim != 1:
            raise V.ValidationError(source, f"{name}/rois", None,
                                    f"expected [R] row indices, got {list(rois.shape)}")
        r = len(rois)
        shape = data.shape
        if len(shape) == 1 and r == 1:
            shape = (shape[0], 1)
        if len(shape) != 2 or shape[1] != r:
            raise V.ValidationError(source, f"{name}/data", None,
                                    f"shape {list(data.shape)} is not [T, R] with R = len(rois) = {r}")
        traces = data[()].reshape(shape)
        V.check_numeric(source, f"{name}/data", traces)
        conversion, offset = float(data.attrs.get("conversion", 1.0)), float(data.attrs.get("offset", 0.0))
        traces = traces.astype(np.float64) * conversion + offset
        timestamps, rate = _timestamps(source, group, shape[0])
        plane = _segmentation(source, f, group)
        n_rows = _n_rows(source, plane)
        try:
            V.check_index_range(source, f"{name}/rois", rois, n_rows)
        except V.ValidationError as err:
            raise V.ValidationError(source, err.field, err.row,
                                    f"row {int(rois[err.row])} out of range for {n_rows} segmentation rows"
                                    ) from None
        rows = rois.astype(np.int64)
        xyz = None
        if positions:
            xyz = _centroids(source, plane, rows, _calibration(source, plane, pixel_size_um, notes))
        ids = None
        if id_column is not None:
            if id_column not in plane or not isinstance(plane[id_column], h5py.Dataset):
                raise V.ValidationError(source, f"{plane.name}/{id_column}", None,
                                        "no such PlaneSegmentation column")
            if f"{id_column}_index" in plane:
                raise V.ValidationError(source, f"{plane.name}/{id_column}", None,
                                        "ragged column cannot be a neuron id")
            column = plane[id_column][()]
            if len(column) != n_rows:
                raise V.ValidationError(source, f"{plane.name}/{id_column}", None,
                                        f"length {len(column)} does not match {n_rows} segmentation rows")
            if column.dtype.kind in "OS":
                column = np.asarray([_text(c) for c in column], dtype=str)
            ids = column[rows]
    if not positions:
        notes.add("positions not read (positions=False)")
    recording = Recording(traces=traces, timestamps=timestamps, rate_hz=rate, positions=xyz, neuron_ids=ids,
                          source=f"{source}:{name}")
    return recording, notes.report()
