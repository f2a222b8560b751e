"""mesojax: mesoscale models of neural circuits in JAX.

Layers (lowest first, see DESIGN.md): `basis`; `data`; `spatial`, `graphs`; `interface`, `assign`,
`synapses`; `model`; `losses`, `optim`; `train`, `evaluate`, `report`.
"""

__version__ = "0.1.0"
