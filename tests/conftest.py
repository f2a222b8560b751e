"""Shared pytest setup: force several host CPU devices so sharding code paths are exercised."""

import contextlib
import os

# Must happen before jax is imported anywhere in the test session. Tests run tiny shapes, where compiling
# costs far more than running: LLVM's backend optimisations are switched off (a tiny training run with its
# evaluation took 27 s instead of 45 s). The computations are the same, compiled with less optimisation;
# the speed of optimised code is measured by benchmarks/, not here. Subprocesses (the scripts) inherit it.
_N_DEVICES = 4
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_N_DEVICES}"
    " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib
import tempfile

import jax
import pytest

# Identical computations built from fresh closures (each training run makes its own jitted step) are
# compiled once per session: the persistent cache keys on the program, not on the Python function.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="mesojax-jax-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def n_devices() -> int:
    import jax

    return jax.device_count()


@pytest.fixture(scope="session")
def celegans_dir() -> pathlib.Path:
    """The real C. elegans data directory beside the repository; skips when ../shared is absent."""
    path = SHARED_DATA / "celegans"
    if not path.is_dir():
        pytest.skip(f"real C. elegans data not found at {path} (../shared is absent)")
    return path


@pytest.fixture
def interrupted(monkeypatch):
    """``with interrupted(step): train.train(...)``: the run dies (KeyboardInterrupt, expected) as it draws
    step `step`'s batch, after everything it did before that step, as a killed run would."""
    from mesojax import train

    real = train.windows.sample_batch

    @contextlib.contextmanager
    def at(cut: int):
        def sample(*args, step, **kwargs):
            if step == cut:
                raise KeyboardInterrupt("simulated interruption")
            return real(*args, step=step, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(train.windows, "sample_batch", sample)
            with pytest.raises(KeyboardInterrupt, match="simulated interruption"):
                yield

    return at
