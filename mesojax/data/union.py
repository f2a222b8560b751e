"""Circuits the model runs on: one neuron per recorded source, and disjoint unions of several of them.

A model neuron is a recorded point source. :func:`source_circuit` turns a recording registered to a
connectome into that circuit: a registered source takes its neuron's id, position, cell type and the
synapses among registered sources; an unregistered one (an unidentified neuron, or a name the
connectome lacks) is kept as a neuron *without* position or synapses (an all-NaN ``xyz`` row), which
the model predicts from its own history.

:func:`disjoint_union` puts several circuits (animals) side by side in one circuit, the way a batch of
graphs becomes one graph: positions are shifted along x so that no receptive field spans two of them,
ids are prefixed with the part's name, and traces are aligned frame by frame (parts are independent,
so only the frame index matters). One model then shares its basis filters across all parts while every
part keeps its own interfaces and assignment.

Example:
    >>> import numpy as np
    >>> from mesojax.data import Connectome, Recording
    >>> c = Connectome(ids=["A", "B"], xyz=[[0, 0, 0], [5, 0, 0]], cell_type=["s", "m"], pre=[0], post=[1])
    >>> r = Recording(traces=np.zeros((4, 3)), timestamps=np.arange(4.0), neuron_ids=["B", "", "A"])
    >>> circuit, rec, report = source_circuit(r, c)
    >>> circuit.ids.tolist(), circuit.placed.tolist(), (circuit.pre.tolist(), circuit.post.tolist())
    (['B', 'unidentified_1', 'A'], [True, False, True], ([2], [0]))
    >>> u = disjoint_union([("w1", circuit, rec), ("w2", circuit, rec)], gap_um=50.0)
    >>> u.connectome.n_neurons, u.neuron_group.tolist()
    (6, [0, 0, 0, 1, 1, 1])
"""

from __future__ import annotations

import dataclasses

from typing import NamedTuple, Sequence

import numpy as np

from mesojax.data import validation as V
from mesojax.data.connectome import Connectome
from mesojax.data.recording import Recording, _missing_id
from mesojax.data.registration import register_by_id
from mesojax.data.tables import LoadReport, preview

UNIDENTIFIED = "unidentified"
"""Cell type of a source that is not registered to a connectome neuron."""


def source_circuit(recording: Recording, connectome: Connectome) -> tuple[Connectome, Recording, LoadReport]:
    """The circuit of a recording's sources, registered to `connectome` by neuron id.

    Args:
      recording: with ``neuron_ids`` ("" = unidentified).
      connectome: neurons with positions, cell types and synapses.

    Returns:
      ``(circuit, recording, report)``: the circuit has one neuron per source (same order as the
      traces); ``ids`` are the registered names, or ``unidentified_<column>`` (resp. the unknown name)
      for the others, whose ``xyz`` row is NaN and whose cell type is :data:`UNIDENTIFIED`. Synapses
      are the connectome's among registered sources, with all their attributes. The recording is
      returned with the circuit ids as ``neuron_ids`` (1:1 to the circuit). The report lists the
      sources kept without a position, and the connectome synapses left out because one end was not
      recorded.
    """
    reg = register_by_id(recording, connectome)
    neuron = reg.neuron
    ok = neuron >= 0
    unidentified = _missing_id(np.asarray(recording.neuron_ids))  # "" or -1
    raw_ids = np.asarray(recording.neuron_ids).astype(str)
    taken = set(raw_ids[~unidentified].tolist())
    ids = raw_ids.astype(object)
    for k in np.flatnonzero(unidentified):
        name = f"{UNIDENTIFIED}_{k}"
        while name in taken:  # never collide with a real id
            name += "'"
        ids[k] = name
    ids = ids.astype(str)
    xyz = np.full((len(neuron), 3), np.nan, np.float32)
    xyz[ok] = connectome.xyz[neuron[ok]]
    cell_type = np.where(ok, connectome.cell_type[np.maximum(neuron, 0)], UNIDENTIFIED)

    # Source index of every connectome neuron (-1: not recorded), then the synapses among recorded ones.
    source_of = np.full(connectome.n_neurons, -1, np.int64)
    source_of[neuron[ok]] = np.flatnonzero(ok)
    keep = (source_of[connectome.pre] >= 0) & (source_of[connectome.post] >= 0)
    opt = lambda a: None if a is None else a[keep]  # noqa: E731
    circuit = Connectome(
        ids=ids, xyz=xyz, cell_type=cell_type, pre=source_of[connectome.pre[keep]],
        post=source_of[connectome.post[keep]], syn_xyz=opt(connectome.syn_xyz), strength=opt(connectome.strength),
        strength_names=connectome.strength_names if connectome.strength is not None else (),
        sign=connectome.sign[keep], kind=connectome.kind[keep], source=f"{recording.source} ∩ {connectome.source}",
    )
    notes, excluded = [reg.report().replace("\n", ";")], {}
    unknown = ~ok & ~unidentified
    if unknown.any():
        notes.append(f"{int(unknown.sum())} identified sources are not in the connectome and are kept without "
                     f"position or synapses: {preview(raw_ids[unknown])}")
        excluded["sources_not_in_connectome"] = tuple(raw_ids[unknown].tolist())
    if unidentified.any():
        notes.append(f"{int(unidentified.sum())} unidentified sources are kept without position or synapses")
    if (~ok).any():
        excluded["sources_without_position"] = tuple(np.flatnonzero(~ok).tolist())
    notes.append(f"{int(keep.sum())} of {connectome.n_synapses} connectome synapses join two recorded neurons; "
                 "the others are left out of the circuit")
    # Every other field (trials, stimulus positions, ...) carries over unchanged.
    renamed = dataclasses.replace(recording, neuron_ids=ids)
    return circuit, renamed, LoadReport(recording.source, tuple(notes), excluded)


class Union(NamedTuple):
    """Several circuits as one (see the module docstring).

    Attributes:
      connectome: the union circuit (ids ``"<part>/<id>"``).
      recording: traces ``[T_max, ΣN]`` (a shorter part is NaN-padded at the end), behaviour columns
        ``"<part>/<name>"``, each part's discrete modes as 0/1 columns ``"<part>/<mode name>"`` (one per
        mode after the first; NaN where unknown), no modes.
      names: the part names.
      neuron_group: ``[ΣN]`` part index of every neuron.
      behaviour_group: ``[Kc]`` part index of every behaviour column.
      offset_um: ``[parts, 3]`` the shift added to each part's positions.
    """

    connectome: Connectome
    recording: Recording
    names: tuple[str, ...]
    neuron_group: np.ndarray
    behaviour_group: np.ndarray
    offset_um: np.ndarray


def _behaviour_columns(name: str, rec: Recording, t_max: int) -> tuple[list[np.ndarray], list[str]]:
    """A part's continuous behaviour and mode indicators as ``[t_max]`` columns with prefixed names."""
    cols, names = [], []
    pad = lambda a: np.concatenate([a, np.full(t_max - len(a), np.nan, np.float32)])  # noqa: E731
    if rec.behaviour is not None:
        beh = np.asarray(rec.behaviour, np.float32)
        for k, beh_name in enumerate(rec.behaviour_names or [f"b{k}" for k in range(beh.shape[1])]):
            cols.append(pad(beh[:, k]))
            names.append(f"{name}/{beh_name}")
    if rec.modes is not None:
        modes = np.asarray(rec.modes)
        mode_names = rec.mode_names or tuple(str(k) for k in range(int(modes.max()) + 1))
        for k in range(1, len(mode_names)):
            cols.append(pad(np.where(modes >= 0, (modes == k).astype(np.float32), np.nan)))
            names.append(f"{name}/{mode_names[k]}")
    return cols, names


def disjoint_union(parts: Sequence[tuple[str, Connectome, Recording]], *, gap_um: float) -> Union:
    """One circuit from several: positions side by side along x, ids prefixed, traces aligned by frame.

    Args:
      parts: ``(name, circuit, recording)`` with the recording 1:1 to the circuit (e.g. from
        :func:`source_circuit`).
      gap_um: free space between consecutive parts along x; make it larger than a receptive-field
        diameter so that no sphere holds neurons of two parts.

    Returns:
      A :class:`Union`. Timestamps are frame indices over the median sampling rate of the parts.

    Raises:
      ValidationError: no parts, duplicate names, a recording not 1:1 to its circuit, a part with a
        stimulus (a stimulus channel would reach every part's filters), or mismatched strength features.
    """
    src = "disjoint_union"
    if not parts:
        raise V.ValidationError(src, "parts", None, "no circuits given")
    names = [p[0] for p in parts]
    if len(set(names)) != len(names):
        raise V.ValidationError(src, "parts", None, f"duplicate part names {names}")
    for k, (name, circuit, rec) in enumerate(parts):
        if rec.n_sources != circuit.n_neurons:
            raise V.ValidationError(rec.source, "traces", None, f"part {name!r}: {rec.n_sources} sources for "
                                    f"{circuit.n_neurons} circuit neurons (register them 1:1 first)")
        if rec.stimulus is not None:
            raise V.ValidationError(rec.source, "stimulus", None, f"part {name!r} has a stimulus; a union "
                                    "cannot route one part's stimulus to its filters only")
    strength_names = {c.strength_names if c.strength is not None else None for _, c, _ in parts}
    if len(strength_names) > 1:
        raise V.ValidationError(src, "strength_names", None, f"parts disagree on strength features: {strength_names}")

    t_max = max(r.n_timesteps for _, _, r in parts)
    offsets, x_next = [], 0.0
    traces, ids, xyz, ctype, pre, post, sign, kind, syn_xyz, strength = ([] for _ in range(10))
    beh_cols, beh_names, beh_group, neuron_group = [], [], [], []
    base = 0
    for g, (name, c, rec) in enumerate(parts):
        placed = c.placed
        lo = c.xyz[placed].min(0) if placed.any() else np.zeros(3, np.float32)
        hi = c.xyz[placed].max(0) if placed.any() else np.zeros(3, np.float32)
        shift = np.array([x_next - lo[0], 0.0, 0.0], np.float32)
        x_next += float(hi[0] - lo[0]) + gap_um
        offsets.append(shift)
        tr = np.asarray(rec.traces[:], np.float32)
        traces.append(np.concatenate([tr, np.full((t_max - len(tr), tr.shape[1]), np.nan, np.float32)]))
        ids += [f"{name}/{i}" for i in c.ids.tolist()]
        xyz.append(c.xyz + shift)
        ctype.append(c.cell_type)
        pre.append(c.pre + base)
        post.append(c.post + base)
        sign.append(c.sign)
        kind.append(c.kind)
        syn_xyz.append(None if c.syn_xyz is None else c.syn_xyz + shift)
        strength.append(c.strength)
        cols, bnames = _behaviour_columns(name, rec, t_max)
        beh_cols += cols
        beh_names += bnames
        beh_group += [g] * len(cols)
        neuron_group.append(np.full(c.n_neurons, g, np.int32))
        base += c.n_neurons

    connectome = Connectome(
        ids=np.asarray(ids), xyz=np.concatenate(xyz), cell_type=np.concatenate(ctype),
        pre=np.concatenate(pre), post=np.concatenate(post), sign=np.concatenate(sign), kind=np.concatenate(kind),
        syn_xyz=None if any(s is None for s in syn_xyz) else np.concatenate(syn_xyz),
        strength=None if any(s is None for s in strength) else np.concatenate(strength),
        strength_names=parts[0][1].strength_names if all(s is not None for s in strength) else (),
        source=" + ".join(names),
    )
    rate = float(np.median([r.rate_hz for _, _, r in parts]))
    recording = Recording(
        traces=np.concatenate(traces, axis=1), timestamps=np.arange(t_max) / rate, rate_hz=rate,
        neuron_ids=connectome.ids, behaviour=np.stack(beh_cols, axis=1) if beh_cols else None,
        behaviour_names=tuple(beh_names), source=" + ".join(r.source for _, _, r in parts),
    )
    return Union(connectome, recording, tuple(names), np.concatenate(neuron_group),
                 np.asarray(beh_group, np.int32), np.stack(offsets))
