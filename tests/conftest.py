import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small synthetic world shared by the tests (64x128 scenes)."""
    from synboost.config import SyntheticWorldConfig
    from synboost.data.synthetic import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(SyntheticWorldConfig(out=str(out), n=60, height=64, width=128, seed=3, workers=1), progress=False)
    return out
