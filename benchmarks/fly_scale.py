"""Fly-scale benchmark of the space-and-graphs layer: receptive-field grid + index tables + TR graphs.

Target (issue 3): 100k neurons, 10M synapses, T = 10k intervals; grid + tables + transmission-response
graphs in <= 60 s and <= 8 GiB peak memory on the 2-core CI machine.

Inputs (built once, not timed):

* connectome — the synthetic phantom of :mod:`mesojax.data.synthetic` (``preset("fly")``: ~100k
  neurons, ~10M synapses with positions; ``preset("small")`` for ``--scale small``);
* events — ``--events phantom`` simulates the phantom and detects events in its calcium with
  :func:`mesojax.graphs.detect_events` (the real pipeline; affordable only at small scale: the phantom
  simulates ~10 frames/s at fly scale), ``--events bernoulli`` draws independent events with
  probability ``--event-rate`` per neuron and frame (a labelled stand-in; the phantom's detected rate is
  0.005-0.013 per frame, so the default 0.02 is conservative: the TR cost grows linearly with it).

Timed, ``--repeats`` times (median reported): ``build_grid + build_tables`` (synapses assigned by
position) and ``transmission_response`` (intervals of ``--interval`` frames, window ``--window``).
Peak memory is the resident-set high-water mark of the timed part (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``; includes the resident inputs) and of the whole process.

Usage::

    python benchmarks/fly_scale.py                     # fly scale, 3 repeats
    python benchmarks/fly_scale.py --scale small       # quick smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np
import scipy.sparse

from mesojax import graphs, spatial
from mesojax.data import synthetic

GIB = 2.0**30


def _vm_hwm_bytes() -> int | None:
    """Peak resident set (VmHWM) of this process since start or the last reset, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def make_inputs(args: argparse.Namespace):
    """Connectome and ``[T, N]`` sparse events (untimed)."""
    cfg = synthetic.preset(args.scale, seed=args.seed)
    circuit = synthetic.make_circuit(cfg)
    conn = circuit.connectome
    n = conn.n_neurons
    t_frames = args.intervals * args.interval
    events_source = args.events or ("phantom" if args.scale != "fly" else "bernoulli")
    if events_source == "phantom":
        calcium = np.concatenate(
            [ch.calcium for ch in synthetic.simulate(circuit, cfg, n_steps=t_frames, chunk_steps=512)]
        )
        events = graphs.detect_events(calcium, method="deconvolve")
        del calcium
    else:
        rng = np.random.default_rng(args.seed)
        # Draw per frame block to bound memory: a dense [T, N] bool would be T*N bytes.
        blocks = []
        for f0 in range(0, t_frames, 256):
            f1 = min(f0 + 256, t_frames)
            blocks.append(scipy.sparse.csr_matrix(rng.random((f1 - f0, n), np.float32) < args.event_rate))
        events = scipy.sparse.vstack(blocks, format="csr")
    return conn, events, events_source


def run_once(conn, events, args):
    t0 = time.perf_counter()
    grid = spatial.build_grid(conn.xyz, spatial.GridSpec(args.diameter))
    tables = spatial.build_tables(conn.xyz, grid, syn_xyz=conn.syn_xyz)
    t1 = time.perf_counter()
    tr = graphs.transmission_response(conn.pre, conn.post, events, interval=args.interval, window=args.window)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, tables, tr


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=["fly", "small", "tiny"], default="fly",
                        help="synthetic preset for the connectome")
    parser.add_argument("--intervals", type=int, default=None, help="P (default 10000 fly, 1000 small)")
    parser.add_argument("--interval", type=int, default=1, help="frames per interval")
    parser.add_argument("--window", type=int, default=2, help="response window Δ in frames")
    parser.add_argument("--diameter", type=float, default=None,
                        help="sphere diameter d in µm, s = d/2 (default: --members neurons per sphere)")
    parser.add_argument("--members", type=float, default=100.0,
                        help="mean neurons per sphere for the default d")
    parser.add_argument("--events", choices=["phantom", "bernoulli"], default=None,
                        help="event source (default: phantom below fly scale, bernoulli at fly scale)")
    parser.add_argument("--event-rate", type=float, default=0.02, help="bernoulli events per neuron-frame")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    if args.intervals is None:
        args.intervals = 10_000 if args.scale == "fly" else 1000

    t = time.perf_counter()
    conn, events, events_source = make_inputs(args)
    setup_s = time.perf_counter() - t
    if args.diameter is None:
        extent = np.ptp(conn.xyz, axis=0).astype(np.float64)
        density = conn.n_neurons / np.prod(extent)
        args.diameter = float(np.round(2 * (3 * args.members / (4 * np.pi * density)) ** (1 / 3)))

    _reset_hwm()
    print(f"timing {args.repeats} repeats at d = {args.diameter} µm ...", flush=True)
    grid_s, tr_s, total_s = [], [], []
    for _ in range(args.repeats):
        g, r, tables, tr = run_once(conn, events, args)
        grid_s.append(g)
        tr_s.append(r)
        total_s.append(g + r)
        summary = (tables.summary(), tr.summary(), int(tables.synapse_mask.sum()))
        del tables, tr
    hwm = _vm_hwm_bytes()
    result = {
        "benchmark": "fly_scale",
        "scale": args.scale,
        "neurons": conn.n_neurons,
        "synapses": conn.n_synapses,
        "intervals": args.intervals,
        "interval_frames": args.interval,
        "window_frames": args.window,
        "diameter_um": args.diameter,
        "events": events_source,
        "event_rate": events.nnz / max(np.prod(events.shape), 1),
        "repeats": args.repeats,
        "grid_tables_s": statistics.median(grid_s),
        "tr_graphs_s": statistics.median(tr_s),
        "total_s": statistics.median(total_s),
        "total_s_all": [round(x, 2) for x in total_s],
        "grid_tables_s_all": [round(x, 2) for x in grid_s],
        "tr_graphs_s_all": [round(x, 2) for x in tr_s],
        "peak_timed_gib": None if hwm is None else hwm / GIB,
        "peak_process_gib": _max_rss_bytes() / GIB,
        "setup_s": setup_s,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "tables": summary[0],
        "tr": summary[1],
    }
    rows = [
        ("connectome", f"{conn.n_neurons:,} neurons, {conn.n_synapses:,} synapses "
                       f"(synthetic.preset({args.scale!r}))"),
        ("events", f"{events_source}, {events.nnz:,} events over {events.shape[0]:,} frames "
                   f"(rate {result['event_rate']:.4f}/frame)"),
        ("tables", summary[0]),
        ("TR graphs", summary[1]),
        ("grid + tables", f"{result['grid_tables_s']:.2f} s (median of {args.repeats})"),
        ("TR graphs", f"{result['tr_graphs_s']:.2f} s"),
        ("total", f"{result['total_s']:.2f} s  (runs: {result['total_s_all']})"),
        ("peak RSS (timed)", "n/a" if hwm is None else f"{result['peak_timed_gib']:.2f} GiB"),
        ("peak RSS (process)", f"{result['peak_process_gib']:.2f} GiB  (setup {setup_s:.1f} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    line = json.dumps(result)
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
