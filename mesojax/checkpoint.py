"""Checkpointing: the one module that talks to orbax, so its fast-moving API is isolated here.

A run directory holds numbered step checkpoints, each with the train-state pytree and a small JSON
record (step, config hash, anything else the loop wants back on resume). Saves are synchronous and
orbax writes each step to a temporary directory that is renamed on completion, so an interrupted save
never leaves a half-written checkpoint behind: resume picks the latest complete step.

Example:
    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> ckpt = Checkpointer(d, max_to_keep=2)
    >>> ckpt.save(3, {"w": np.arange(3.0)}, {"note": "hi"})
    >>> ckpt.latest_step()
    3
    >>> tree, extra = ckpt.restore({"w": np.zeros(3)})
    >>> tree["w"].tolist(), extra["note"], ckpt.read_record()["note"]
    ([0.0, 1.0, 2.0], 'hi', 'hi')
    >>> ckpt.close()
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from absl import logging


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence orbax's per-save INFO chatter (it logs through absl) without touching the caller's level."""
    level = logging.get_verbosity()
    logging.set_verbosity(min(level, logging.WARNING))  # absl: lower numbers are more severe
    try:
        yield
    finally:
        logging.set_verbosity(level)


class Checkpointer:
    """Save and restore (pytree, JSON record) pairs by step in a directory.

    Args:
      directory: where step folders are written (created if absent).
      max_to_keep: how many most recent steps to keep (None keeps all).
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        )
        with _quiet():
            self._manager = ocp.CheckpointManager(
                self.directory, options=options,
                item_handlers={"state": ocp.StandardCheckpointHandler(), "record": ocp.JsonCheckpointHandler()},
            )

    def latest_step(self) -> int | None:
        """The newest complete step, or None when the directory holds no checkpoint."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every complete step on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def saved_shapes(self, step: int) -> list[tuple[int, ...]]:
        """The shapes of the arrays stored as step `step`'s state, sorted (read from its metadata only)."""
        with _quiet():
            meta = self._manager.item_metadata(step)["state"]
        tree = getattr(meta, "tree", meta)
        return sorted(tuple(int(d) for d in getattr(x, "shape", x)) for x in jax.tree.leaves(
            tree, is_leaf=lambda x: isinstance(x, tuple) or hasattr(x, "shape")))

    def delete(self, step: int) -> None:
        """Remove step `step` (e.g. one from a discarded timeline that a resumed run will redo)."""
        with _quiet():
            self._manager.delete(step)
            self._manager.reload()

    def set_aside(self, step: int) -> str:
        """Move a damaged step out of the way (renamed, never deleted) so later saves can use its number.

        Returns:
          the new path of the step's folder (``damaged-<step>``, suffixed if taken).
        """
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory, f"damaged-{step}")
        n = 1
        while os.path.exists(dst):
            n += 1
            dst = os.path.join(self.directory, f"damaged-{step}-{n}")
        os.replace(src, dst)
        with _quiet():
            self._manager.reload()
        return dst

    def save(self, step: int, state: Any, record: dict | None = None) -> None:
        """Write `state` (any pytree of arrays) and a JSON-serialisable `record` as step `step`."""
        with _quiet():
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(dict(record or {}))
                ),
                force=True,
            )
            self._manager.wait_until_finished()

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Read step `step` (default: latest) into the structure, shapes, dtypes and shardings of `like`.

        Returns:
          ``(state, record)``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        with _quiet():
            out = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
                ),
            )
        return out["state"], dict(out["record"] or {})

    def read_record(self, step: int | None = None) -> dict:
        """Only the JSON record of step `step` (default: latest), without reading the state."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to read")
        with _quiet():
            out = self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))
        return dict(out["record"] or {})

    def close(self) -> None:
        with _quiet():
            self._manager.close()
