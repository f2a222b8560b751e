"""One-shot transfer: a basis fitted on some circuits, frozen, explains a new circuit.

The programme's transfer test (DESIGN.md, Evaluation): train on some animals, then on a held-out
animal keep the basis filters and their architectures fixed and refit only what is specific to a
circuit: interfaces, domain assignment, the behaviour readout's pair gates and the fallback of neurons
without position. What carries over:

* ``basis``, ``arch``: copied and frozen (``optim.freeze``), the architecture temperature held at its
  final value;
* the shared port embedding (interfaces) and the assignment networks: copied as the starting point,
  then refit;
* behaviour maps ``W_b``: each new target starts from the mean of the trained targets with the same
  name (``"<animal>/velocity"`` → ``velocity``), then refit;
* per-pair and per-neuron parameters: fresh.

:func:`mesojax.train.run` runs it for every animal of ``config.transfer.animals`` after training.

Example::

    cfg = transfer_config(config, "2022-07-27-45")
    exp = experiment.prepare(cfg, mesh)
    start = transfer_params(trained, experiment.init_params(cfg, exp), source_names, exp.recording.behaviour_names)
    exp, state = train.train(cfg, workdir, exp, mesh, params=start)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mesojax import model
from mesojax.data import validation as V

FROZEN = ("basis", "arch")
"""Parameter groups (:data:`mesojax.optim.GROUPS`) that a transfer keeps fixed."""


def target_name(name: str) -> str:
    """A behaviour target's name without its animal prefix (``"w1/velocity"`` → ``"velocity"``)."""
    return name.rsplit("/", 1)[-1]


def transfer_params(trained: model.Params, fresh: model.Params, trained_targets: tuple[str, ...],
                    new_targets: tuple[str, ...]) -> model.Params:
    """Fresh parameters of a new circuit carrying over what transfers from `trained` (module docstring).

    Args:
      trained: parameters fitted on the source circuits.
      fresh: :func:`mesojax.model.init` on the new circuit (same filter family, ports, features).
      trained_targets, new_targets: behaviour target names of the source and new recordings.

    Returns:
      :class:`mesojax.model.Params` of the new circuit.

    Raises:
      ValueError: the two models' filter families differ (the basis cannot be reused).
    """
    carried = {"basis": (trained.basis, fresh.basis), "arch": (trained.arch, fresh.arch),
               "interface.port_net": (trained.interface.port_net, fresh.interface.port_net),
               "assign.net": (trained.assign.net, fresh.assign.net)}
    for name, (a, b) in carried.items():
        if [x.shape for x in jax.tree.leaves(a)] != [x.shape for x in jax.tree.leaves(b)]:
            raise ValueError(f"transfer: the trained and new models' '{name}' differ in shape; the model "
                             "config (filters, ports, history, basis, networks) and the feature and cell-type "
                             "vocabularies must be the same for both")
    # Copies: training the new circuit donates its parameters, which must not consume `trained`.
    basis, arch, port_net, net = jax.tree.map(jnp.array, tuple(a for a, _ in carried.values()))
    iface = fresh.interface._replace(port_net=port_net)
    assign = fresh.assign._replace(net=net)
    ro = fresh.readout
    if ro.w_beh is not None and trained.readout.w_beh is not None:
        w, b = np.asarray(ro.w_beh).copy(), np.asarray(ro.b_beh).copy()
        src = [target_name(n) for n in trained_targets]
        for k, name in enumerate(new_targets):
            same = [j for j, s in enumerate(src) if s == target_name(name)]
            if same:
                w[..., k] = np.asarray(trained.readout.w_beh)[..., same].mean(-1)
                b[k] = np.asarray(trained.readout.b_beh)[same].mean()
        ro = ro._replace(w_beh=jnp.asarray(w), b_beh=jnp.asarray(b))
    return fresh._replace(basis=basis, arch=arch, interface=iface, assign=assign, readout=ro)


def transfer_config(config: ml_collections.ConfigDict, animal: str) -> ml_collections.ConfigDict:
    """The training config of one held-out animal: its data only, ``transfer.steps`` steps, the basis
    frozen and its architecture temperature held at the end of the original anneal."""
    V.check_name("config", "transfer.animals", animal)  # becomes <workdir>/transfer/<animal>
    cfg = frozen_config(config)
    with cfg.unlocked():
        cfg.data.animals = (animal,)
    return cfg


def scratch_config(config: ml_collections.ConfigDict, animal: str) -> ml_collections.ConfigDict:
    """`config` training the model from a fresh initialisation on one held-out animal alone (the
    ``scratch`` arm of :func:`mesojax.analysis.learning_curve`): no transfer of its own."""
    V.check_name("config", "transfer.animals", animal)
    cfg = config.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.data.animals, cfg.transfer.animals, cfg.transfer.curve = (animal,), (), ()
        # Like the frozen arm it is compared with: the learning curve's validation share can be tiny.
        cfg.restructure.split_steps, cfg.restructure.merge_steps = (), ()
    return cfg


def frozen_config(config: ml_collections.ConfigDict, **data: object) -> ml_collections.ConfigDict:
    """`config` refitting a new circuit on a frozen basis: ``transfer.steps`` steps, ``basis`` and
    ``arch`` frozen, the architecture temperature held at the end of the original anneal. `data` replaces ``config.data`` fields (the new circuit: e.g. ``seed=1`` for
    another phantom of the same motif types)."""
    cfg = config.copy_and_resolve_references()
    steps = int(config.transfer.steps)
    arch_end = float(config.anneal.arch[1])
    with cfg.unlocked():
        for key, value in data.items():
            cfg.data[key] = value
        cfg.train.steps = steps
        cfg.anneal.steps = steps
        cfg.anneal.arch = (arch_end, arch_end)
        cfg.optim.total_steps = steps
        cfg.optim.freeze = tuple(sorted(set(cfg.optim.freeze) | set(FROZEN)))
        cfg.optim.warmup_steps = min(int(cfg.optim.warmup_steps), steps // 4)
        cfg.train.hard_steps = 0  # the architecture is the trained one, frozen
        cfg.optim.arch_steps = None
        # The frozen basis is the trained one: no filter is split or merged on the new circuit.
        cfg.restructure.split_steps, cfg.restructure.merge_steps = (), ()
    return cfg
