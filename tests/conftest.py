import os

import pytest

# Ray and ultralytics settings that must be in place before they are imported anywhere.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (logical CPUs > cores avoids deadlocks)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, object_store_memory=256 << 20, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_dataset(tmp_path_factory):
    """The built-in digits, ingested once (JPEG q75, native 8x8)."""
    from frugalnas.data import ingest

    out = tmp_path_factory.mktemp("digits") / "dataset"
    ingest("digits", out)
    return out


@pytest.fixture(scope="session")
def space():
    """The built-in NAS-Bench-201 space (immutable, shared by the strategy tests; a module may define its own)."""
    from frugalnas.spaces import load_space

    return load_space("nb201")


@pytest.fixture(scope="session")
def landscape():
    """The synthetic NAS-Bench-201-like accuracy landscape (seed 0), a cheap stand-in for training."""
    from frugalnas.strategies.synthetic import NB201LikeLandscape

    return NB201LikeLandscape(seed=0)
