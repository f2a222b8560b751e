"""Registration: map a recording's point sources to connectome neurons, by id or by position.

Matching is one-to-one. By id, each identified source maps to the neuron with the same id. By position,
candidate pairs are the (source, neuron) pairs closer than a tolerance, and pairs are accepted greedily
in order of increasing distance, so each source and each neuron is used at most once and the closest
pairs win conflicts. Unmatched sources are kept (index -1) and reported, never dropped.

Example:
    >>> import numpy as np
    >>> from mesojax.data import Connectome, Recording, register_by_position
    >>> c = Connectome(ids=[10, 11], xyz=[[0, 0, 0], [5, 0, 0]], cell_type=None, pre=[0], post=[1])
    >>> r = Recording(traces=np.zeros((3, 2)), timestamps=[0., 1., 2.],
    ...               positions=[[5.2, 0, 0], [40, 0, 0]])
    >>> reg = register_by_position(r, c, tol_um=1.0)
    >>> reg.neuron.tolist(), reg.n_matched
    ([1, -1], 1)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.spatial

from mesojax.data import validation as V
from mesojax.data.connectome import Connectome, index_ids
from mesojax.data.recording import Recording, _missing_id


class Registration(NamedTuple):
    """Result of registering point sources to connectome neurons.

    Attributes:
      neuron: ``[Nr]`` int64 connectome row of each source, -1 when unmatched.
      distance_um: ``[Nr]`` float32 source-to-neuron distance (0 for id matches, NaN when unmatched).
      method: "id" or "position".
      unmatched_reason: ``[Nr]`` str, why a source is unmatched ("" when matched).
    """

    neuron: np.ndarray
    distance_um: np.ndarray
    method: str
    unmatched_reason: np.ndarray

    @property
    def n_matched(self) -> int:
        return int((self.neuron >= 0).sum())

    def report(self) -> str:
        """One line per reason for unmatched sources, plus the match count."""
        lines = [f"registered {self.n_matched}/{len(self.neuron)} sources by {self.method}"]
        reasons, counts = np.unique(self.unmatched_reason[self.neuron < 0], return_counts=True)
        lines += [f"  unmatched ({c}): {r}" for r, c in zip(reasons, counts)]
        return "\n".join(lines)


def register_by_id(recording: Recording, connectome: Connectome, *, strict: bool = False) -> Registration:
    """Match each identified source to the connectome neuron with the same id.

    Args:
      recording: must have ``neuron_ids`` ("" / -1 marks an unidentified source).
      connectome: the neurons to match against.
      strict: raise on an identified source whose id is not in the connectome (default: report it).

    Returns:
      A :class:`Registration`; unidentified sources and unknown ids map to -1 with a reason.
    """
    if recording.neuron_ids is None:
        raise V.ValidationError(recording.source, "neuron_ids", None, "registration by id needs neuron ids")
    ids = recording.neuron_ids
    missing = _missing_id(ids)
    neuron = np.full((len(ids),), -1, np.int64)
    reason = np.where(missing, "source has no neuron id", "").astype(object)
    rows = np.flatnonzero(~missing)
    if rows.size:
        query = ids[rows]
        if connectome.ids.dtype.kind != query.dtype.kind and not (
            connectome.ids.dtype.kind in "iu" and query.dtype.kind in "iu"
        ):
            raise V.ValidationError(
                recording.source, "neuron_ids", int(rows[0]),
                f"id type {query.dtype} does not match connectome id type {connectome.ids.dtype}",
            )
        found = index_ids(connectome.ids, query, source=recording.source, field="neuron_ids", missing_ok=True)
        if strict and (found < 0).any():
            row = int(rows[np.flatnonzero(found < 0)[0]])
            raise V.ValidationError(
                recording.source, "neuron_ids", row, f"id {V.show(ids[row])} is not a neuron of '{connectome.source}'"
            )
        neuron[rows] = found
        reason[rows[found < 0]] = f"id not in connectome '{connectome.source}'"
    distance = np.where(neuron >= 0, 0.0, np.nan).astype(np.float32)
    return Registration(neuron, distance, "id", reason.astype(str))


def register_by_position(recording: Recording, connectome: Connectome, *, tol_um: float) -> Registration:
    """Match sources to neurons one-to-one by proximity within `tol_um` (greedy, closest pairs first).

    Args:
      recording: must have ``positions`` ``[Nr, 3]`` µm in the connectome's frame.
      connectome: the neurons to match against.
      tol_um: largest accepted source-to-neuron distance.

    Returns:
      A :class:`Registration`; sources with no free neuron within `tol_um` map to -1 with a reason.
    """
    if recording.positions is None:
        raise V.ValidationError(recording.source, "positions", None, "registration by position needs positions")
    if not tol_um > 0:
        raise V.ValidationError(recording.source, "tol_um", None, f"tolerance must be positive, got {tol_um}")
    nr = recording.n_sources
    placed = np.flatnonzero(connectome.placed)  # neurons without a position can match no source
    tree = scipy.spatial.cKDTree(connectome.xyz[placed])
    pairs = tree.sparse_distance_matrix(
        scipy.spatial.cKDTree(recording.positions), max_distance=tol_um, output_type="ndarray"
    )
    # The "ndarray" output keeps exact-zero distances (a coo/dok matrix would drop them).
    neuron_idx, source_idx, dist = placed[pairs["i"].astype(np.int64)], pairs["j"].astype(np.int64), pairs["v"]
    order = np.lexsort((neuron_idx, source_idx, dist))
    neuron = np.full((nr,), -1, np.int64)
    distance = np.full((nr,), np.nan, np.float32)
    used = np.zeros((connectome.n_neurons,), bool)
    # Greedy acceptance is inherently sequential but touches only pairs within tolerance (few per source).
    for k in order:
        s, n = source_idx[k], neuron_idx[k]
        if neuron[s] < 0 and not used[n]:
            neuron[s], distance[s], used[n] = n, dist[k], True
    had_candidate = np.zeros((nr,), bool)
    had_candidate[source_idx] = True
    reason = np.where(
        neuron >= 0, "",
        np.where(had_candidate, f"all neurons within {tol_um} µm claimed by closer sources",
                 f"no neuron within {tol_um} µm"),
    )
    return Registration(neuron, distance, "position", reason.astype(str))


def matched_ids(reg: Registration, connectome: Connectome) -> np.ndarray:
    """``[R]`` the connectome id each source registered to, in the connectome's id type; unregistered
    sources get the missing-id marker (-1 for integer ids, "" for names)."""
    known = reg.neuron >= 0
    picked = connectome.ids[np.maximum(reg.neuron, 0)]
    if connectome.ids.dtype.kind in "iu":
        return np.where(known, picked, -1).astype(np.int64)
    return np.where(known, picked.astype(str), "")
