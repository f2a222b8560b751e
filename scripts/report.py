"""Write the report of a finished run again, without retraining or re-evaluating.

    python scripts/report.py --workdir runs/phantom

Restores the trained parameters from --workdir/checkpoints, recomputes the partition and writes the
figures, partition.csv, motif_map.json, filters.txt and metrics.json from the saved evaluation (and the
same for every held-out animal under transfer/). Prints the result table. Errors are one line; add
--verbose for the traceback.
"""

import logging as std_logging

from absl import flags, logging

from mesojax import cli, evaluate, train

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run's directory (as given to scripts/train.py).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
    results = train.rewrite_report(_WORKDIR.value)
    print(evaluate.summary(results))


if __name__ == "__main__":
    cli.run(main)
