"""Shared fixtures: a tiny trained run, built once per session on a subset of MNIST."""
import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A seed-network run trained for one epoch on 2,000 images (a few seconds on 2 cores)."""
    import digitnet

    out = tmp_path_factory.mktemp("runs")
    return digitnet.train(epochs=1, limit_train=2000, limit_test=500, out_dir=str(out), name="tiny",
                          log="quiet", seed=0)
