"""Import your own circuit (neuron + synapse tables, traces) into a store that configs/store.py trains on.

    python scripts/import_data.py --out stores/mine --neurons neurons.csv --synapses synapses.csv \
        --traces traces.npy --neuron_ids ids.csv --rate_hz 30
    python scripts/train.py --config configs/store.py --config.data.path=stores/mine --workdir runs/mine

Traces may be NWB (--nwb_series, --nwb_id_column), HDF5, .npy or CSV; see mesojax.data.importer.
Everything left out or repaired is printed. Errors are one line; add --verbose for the traceback.
"""

from absl import flags

from mesojax import cli
from mesojax.data import importer

_OUT = flags.DEFINE_string("out", None, "Store directory to create.")
_SYNAPSES = flags.DEFINE_string("synapses", None, "Synapse table (CSV/HDF5; CAVE, neuPrint or pre/post columns).")
_TRACES = flags.DEFINE_string("traces", None, "Traces [T, N]: .nwb, .h5, .npy or .csv.")
_NEURONS = flags.DEFINE_string("neurons", None, "Neuron table (CSV/HDF5: id, x, y, z µm, cell_type).")
_FORMAT = flags.DEFINE_enum("synapse_format", "auto", ["auto", "cave", "neuprint", "generic"], "Synapse columns.")
_VOXEL = flags.DEFINE_list("voxel_nm", None, "Voxel size (x,y,z nm) of CAVE synapse positions.")
_IDS = flags.DEFINE_string("neuron_ids", None, "File with one neuron id per trace column (for .npy traces).")
_TIMES = flags.DEFINE_string("timestamps", None, "Timestamps [T] in seconds (.npy or .csv).")
_RATE = flags.DEFINE_float("rate_hz", None, "Frame rate, when there are no timestamps.")
_STIM = flags.DEFINE_string("stimulus", None, "Stimulus [T, S] (.npy or .csv).")
_BEH = flags.DEFINE_string("behaviour", None, "Behaviour [T, K] (.npy, or .csv with named columns).")
_BEH_NAMES = flags.DEFINE_list("behaviour_names", None, "Names of the behaviour columns.")
_STIM_POS = flags.DEFINE_string("stimulus_positions", None, "Stimulus channel positions [S, 3] µm (retinotopic).")
_TRIALS = flags.DEFINE_string("trials", None, "Trial start frames, or a trial label per frame (.npy or .csv).")
_REGISTER = flags.DEFINE_enum("register", "id", ["id", "position"], "Match trace columns to neurons by id or position.")
_TOL = flags.DEFINE_float("tol_um", 2.0, "Registration by position: largest distance (µm).")
_SERIES = flags.DEFINE_string("nwb_series", None, "NWB: which RoiResponseSeries.")
_ID_COLUMN = flags.DEFINE_string("nwb_id_column", None, "NWB: PlaneSegmentation column with neuron ids.")
_PIXEL = flags.DEFINE_list("pixel_size_um", None, "NWB: µm per mask pixel (x,y[,z]).")
_CHUNK = flags.DEFINE_integer("chunk_t", None, "Frames per stored trace chunk (default: ~4 MiB chunks).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing store.")
flags.mark_flags_as_required(["out", "synapses", "traces"])


def main(argv):
    del argv
    floats = lambda v: None if v is None else [float(x) for x in v]  # noqa: E731
    report = importer.import_circuit(
        _OUT.value, synapses=_SYNAPSES.value, traces=_TRACES.value, neurons=_NEURONS.value,
        synapse_format=_FORMAT.value, voxel_nm=floats(_VOXEL.value), neuron_ids=_IDS.value,
        timestamps=_TIMES.value, rate_hz=_RATE.value, stimulus=_STIM.value, behaviour=_BEH.value,
        behaviour_names=_BEH_NAMES.value, stimulus_positions=_STIM_POS.value, trials=_TRIALS.value,
        register=_REGISTER.value, tol_um=_TOL.value,
        nwb_series=_SERIES.value, nwb_id_column=_ID_COLUMN.value, pixel_size_um=floats(_PIXEL.value),
        chunk_t=_CHUNK.value, overwrite=_OVERWRITE.value)
    print(report)
    print(f"wrote {_OUT.value}/connectome and {_OUT.value}/recording; train with:\n"
          f"  python scripts/train.py --config configs/store.py --config.data.path={_OUT.value} --workdir runs/NAME")


if __name__ == "__main__":
    cli.run(main)
