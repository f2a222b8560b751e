"""The data layer: connectomes, recordings, validation, registration, storage, phantoms and loaders.

Modules: :mod:`~mesojax.data.connectome`, :mod:`~mesojax.data.recording`,
:mod:`~mesojax.data.validation`, :mod:`~mesojax.data.registration`, :mod:`~mesojax.data.storage`
(tensorstore/zarr), :mod:`~mesojax.data.synthetic` (phantoms), :mod:`~mesojax.data.windows` (training
batches), :mod:`~mesojax.data.sources` (the registry behind ``config.data.source``), and the loaders :mod:`~mesojax.data.celegans`, :mod:`~mesojax.data.tables` (CAVE / neuPrint
synapse tables) and :mod:`~mesojax.data.nwb`.
"""

from mesojax.data import celegans, nwb, sources, storage, synthetic, tables, windows
from mesojax.data.connectome import CHEMICAL, ELECTRICAL, Connectome
from mesojax.data.nwb import load_nwb_ophys
from mesojax.data.recording import Recording
from mesojax.data.registration import Registration, register_by_id, register_by_position
from mesojax.data.tables import LoadReport, SynapseTable, connectome_from_synapse_table, load_synapse_table
from mesojax.data.validation import ValidationError

__all__ = [
    "CHEMICAL",
    "ELECTRICAL",
    "Connectome",
    "LoadReport",
    "Recording",
    "Registration",
    "SynapseTable",
    "ValidationError",
    "celegans",
    "connectome_from_synapse_table",
    "load_nwb_ophys",
    "load_synapse_table",
    "nwb",
    "register_by_id",
    "register_by_position",
    "sources",
    "storage",
    "synthetic",
    "tables",
    "windows",
]
