"""Shared fixtures: a tiny trained run built once per session on a subset of MNIST, the model the reading
tests use, the MNIST test set, and the realistic test set's generator."""
import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A seed-network run trained for one epoch on 2,000 images (a few seconds on 2 cores)."""
    import digitnet

    out = tmp_path_factory.mktemp("runs")
    return digitnet.train(epochs=1, limit_train=2000, limit_test=500, out_dir=str(out), name="tiny",
                          log="quiet", seed=0)


@pytest.fixture(scope="session")
def model_dir(request):
    """The shipped default model when present (what users get), else the session's tiny run."""
    from digitnet.read import DEFAULT_MODEL

    if (DEFAULT_MODEL / "model.json").exists():
        return str(DEFAULT_MODEL)
    return str(request.getfixturevalue("tiny_run").run_dir)


@pytest.fixture(scope="session")
def classifier(model_dir):
    from digitnet.read import load_classifier

    return load_classifier(model_dir)


@pytest.fixture(scope="session")
def mnist_test():
    from digitnet.data import load_split

    return load_split("mnist", "test")


@pytest.fixture(scope="session")
def make_realistic():
    """benchmarks/make_realistic.py as a module: photos of handwriting, every item with its own seed."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "make_realistic.py"
    spec = importlib.util.spec_from_file_location("make_realistic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
