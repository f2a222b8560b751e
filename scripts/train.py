"""Fit a mesoscale model: train, evaluate and write the outputs into --workdir.

    python scripts/train.py --config configs/phantom.py --workdir runs/phantom
    python scripts/train.py --config configs/phantom_tiny.py --config.train.steps=50 --workdir /tmp/t

An interrupted run started again with the same --workdir resumes from its latest checkpoint. Errors
are one line; add --verbose for the traceback.
"""

import logging as std_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

from mesojax import cli, evaluate, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", os.path.join(os.path.expanduser("~"), ".cache", "mesojax", "xla"),
    "Persistent compilation cache directory ('' to disable): a rerun or resumed run skips compiling.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    # jax logs every accelerator it probes and does not find (libtpu on a CPU machine) at INFO.
    std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
    if _CACHE.value:
        train.enable_compilation_cache(_CACHE.value)
    results = train.run(_CONFIG.value, _WORKDIR.value)
    logging.info("wrote %s", _WORKDIR.value)
    print(evaluate.summary(results))


if __name__ == "__main__":
    cli.run(main)
