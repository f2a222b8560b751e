"""Training and evaluation cost against circuit size: setup, compile, steps/s, FLOP/s, evaluation, memory.

For each size a fresh process builds the phantom (``configs/phantom.py`` with ``data.overrides.n_instances``
set, about 3.75 neurons per instance; or a named preset such as ``fly``), prepares the experiment,
initialises the parameters, compiles the train step and times ``--steps`` steps after it, then (with
``--eval``) runs the full evaluation. Recorded per size:

* ``prepare_s``, ``init_s``, ``compile_s`` (lowering and compiling the train step), ``step_s`` (median of
  the timed steps after a warm-up step, soft architecture search), ``hard_step_s`` (the same with the
  architectures discretised and fixed: the hard phase, ``train.hard_steps``), ``schedule_step_s`` (their
  average over the config's steps, i.e. the run's mean step),
  ``steps_per_s`` and ``neuron_frames_per_s`` (N × windows × rollout frames per second);
* ``step_gflop`` (XLA's cost analysis of the compiled step) and ``achieved_gflops`` against
  ``matmul_gflops``, a float32 matmul timed in the same process;
* ``eval_s`` (every baseline fitted and every forecast scored; ``eval_pairs``: the (location, filter) pairs
  the evaluated model computes, ``eval.pair_threshold``; ``eval_phases_s``: each phase's seconds) and
  ``peak_rss_gib`` of the process.

``--compare DIR`` measures every size twice, alternating, with the ``mesojax`` package of another
checkout (``DIR``, e.g. a ``git worktree`` of the previous commit) and with this one, so that ratios come
from one run on one (shared, noisy) machine. The cost exponent is a least-squares fit of
``log step_s`` against ``log N``.

Usage::

    python benchmarks/train_scale.py --sizes 160 667 --steps 10 --json scale.json
    git worktree add /tmp/prev HEAD~1 && python benchmarks/train_scale.py --compare /tmp/prev --sizes 160
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

GIB = 2.0**30
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def measure(size: str, steps: int, run_eval: bool) -> dict:
    """One size in this process (see the module docstring for the fields)."""
    import jax
    import jax.numpy as jnp

    from mesojax import basis, model
    from mesojax import config as config_lib
    from mesojax import evaluate, optim, train  # train.prepare: also in older checkouts (--compare)
    from mesojax.data import windows

    overrides = {}
    if size.isdigit():
        overrides["data.overrides.n_instances"] = int(size)
    else:
        overrides["data.preset"] = size
    cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "phantom.py"), **overrides)
    out: dict = {"size": size}

    a = jnp.ones((1024, 1024), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(10):
        mm(a).block_until_ready()
    out["matmul_gflops"] = 10 * 2 * 1024**3 / (time.perf_counter() - t) / 1e9

    t = time.perf_counter()
    mesh = train.make_mesh(1)
    exp = train.prepare(cfg, mesh)
    out["prepare_s"] = time.perf_counter() - t
    out["n_neurons"], out["n_locations"] = exp.spec.n_neurons, exp.spec.n_locations
    t = time.perf_counter()
    opt = optim.make_optimizer(cfg.optim)
    state = train.init_state(cfg, exp, opt)
    jax.block_until_ready(state)
    out["init_s"] = time.perf_counter() - t

    step = train.make_train_step(cfg, exp, opt)
    length = exp.spec.history + cfg.train.rollout

    def batch(s):
        b = windows.sample_batch(exp.recording, exp.norm, exp.segments["train"], length=length,
                                 n_windows=cfg.train.batch_windows, seed=cfg.seed, step=s)
        return train.shard_batch(b, mesh)

    t = time.perf_counter()
    first = batch(0)
    jitted = next(c.cell_contents for c in step.__closure__ if hasattr(c.cell_contents, "lower"))
    compiled = jitted.lower(state, first, exp.inputs).compile()
    out["compile_s"] = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["step_gflop"] = float(cost.get("flops", float("nan"))) / 1e9
    state, m = step(state, first)  # the jit cache is separate from lower().compile(): warm it
    float(m["loss"])
    times = []
    for s in range(1, steps + 1):
        t = time.perf_counter()
        state, m = step(state, batch(s))
        float(m["loss"])
        times.append(time.perf_counter() - t)
    out["step_s"] = statistics.median(times)
    out["steps_per_s"] = 1.0 / out["step_s"]
    out["neuron_frames_per_s"] = exp.spec.n_neurons * cfg.train.batch_windows * cfg.train.rollout / out["step_s"]
    out["achieved_gflops"] = out["step_gflop"] / out["step_s"]
    out["final_loss"] = float(m["loss"])
    out["hard_steps"] = int(cfg.train.get("hard_steps", 0) or 0)
    eval_exp = exp
    if hasattr(model, "with_fixed_arch"):
        # The hard phase: architectures discretised and fixed, the bank computing only their chosen parts.
        hard_params = state.params._replace(arch=basis.discretize(state.params.arch))
        fixed_exp = eval_exp = dataclasses.replace(exp, spec=model.with_fixed_arch(exp.spec, hard_params.arch))
        fixed_step = train.make_train_step(cfg, fixed_exp, opt)
        state = state._replace(params=hard_params)
        state, m = fixed_step(state, batch(steps + 1))  # compiles
        float(m["loss"])
        hard_times = []
        for s in range(steps + 2, 2 * steps + 2):
            t = time.perf_counter()
            state, m = fixed_step(state, batch(s))
            float(m["loss"])
            hard_times.append(time.perf_counter() - t)
        out["hard_step_s"] = statistics.median(hard_times)
        # The run's average under the config's schedule: soft steps, then hard ones.
        n, h = int(cfg.train.steps), min(out["hard_steps"], int(cfg.train.steps))
        out["schedule_step_s"] = ((n - h) * out["step_s"] + h * out["hard_step_s"]) / n
    if run_eval:
        t = time.perf_counter()
        if hasattr(model, "with_pairs"):
            # The evaluated model: the filters computed only where the final assignment puts weight. Its
            # cost is a trained model's: at the final temperatures the initial assignment is as sparse.
            eval_exp = train.fixed_where_hard(eval_exp, state.params, cfg)
            out["eval_pairs"] = sum(map(len, eval_exp.spec.pair_locations or ()))
        try:  # each phase's seconds (baseline fits, forecasts, behaviour, ...), where the checkout records them
            from mesojax import progress
            phases = progress.Timings()
        except ImportError:
            phases = None
        evaluate.evaluate(cfg, eval_exp, state.params, phases)
        out["eval_s"] = time.perf_counter() - t
        if phases:
            out["eval_phases_s"] = {k: round(v, 2) for k, v in phases.items()}
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return out


def _run_child(size: str, steps: int, run_eval: bool, package_root: str | None) -> dict:
    env = dict(os.environ)
    if package_root:
        env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, __file__, "--child", size, "--steps", str(steps)] + (["--eval"] if run_eval else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"size": size, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def exponent(rows: list[dict]) -> float | None:
    """Least-squares slope of log(step_s) against log(N) over the rows that finished."""
    import numpy as np

    ok = [r for r in rows if "step_s" in r]
    if len(ok) < 2:
        return None
    n = np.log([r["n_neurons"] for r in ok])
    t = np.log([r["step_s"] for r in ok])
    return float(np.polyfit(n, t, 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["160", "667", "2667"],
                   help="phantom instance counts (~3.75 neurons each) or preset names (e.g. fly)")
    p.add_argument("--steps", type=int, default=10, help="timed train steps after the compiling one")
    p.add_argument("--eval", action="store_true", help="also time the full evaluation")
    p.add_argument("--compare", default=None, help="root of another checkout to measure side by side")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.steps, args.eval)))
        return
    results: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                 "python": platform.python_version()},
                     "command": " ".join(sys.argv), "current": [], "compare": []}
    for size in args.sizes:
        if args.compare:
            results["compare"].append(_run_child(size, args.steps, args.eval, args.compare))
        results["current"].append(_run_child(size, args.steps, args.eval, REPO))
        for label in ("compare", "current"):
            if results[label]:
                print(label, json.dumps(results[label][-1]), flush=True)
    results["exponent"] = {k: exponent(results[k]) for k in ("current", "compare")}
    header = (f"{'size':>6} {'N':>6} {'step s':>8} {'hard s':>8} {'run avg':>8} {'steps/s':>8} {'GFLOP/s':>8} "
              f"{'compile s':>9} {'eval s':>7} {'RSS GiB':>7}")
    for label in ("compare", "current"):
        if not results[label]:
            continue
        print(f"\n{label} (cost exponent {results['exponent'][label]})\n{header}")
        for r in results[label]:
            if "error" in r:
                print(f"{r['size']:>6} {r['error']}")
                continue
            print(f"{r['size']:>6} {r['n_neurons']:>6} {r['step_s']:>8.3f} {r.get('hard_step_s', float('nan')):>8.3f} "
                  f"{r.get('schedule_step_s', r['step_s']):>8.3f} {r['steps_per_s']:>8.2f} "
                  f"{r['achieved_gflops']:>8.2f} {r['compile_s']:>9.1f} {r.get('eval_s', float('nan')):>7.1f} "
                  f"{r['peak_rss_gib']:>7.2f}")
    if results["compare"]:
        for key in ("step_s", "hard_step_s", "schedule_step_s"):
            print(f"speed-up (compare's run average / current {key}):",
                  {c["size"]: round(c.get("schedule_step_s", c["step_s"]) / r[key], 2)
                   for c, r in zip(results["compare"], results["current"]) if "step_s" in c and key in r})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
