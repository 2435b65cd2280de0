import pytest
import torch

from digitnet.errors import DigitnetError
from digitnet.model import (build_model, count_params, format_summary, load_model, probabilities,
                            save_model, summarize)


def test_seed_shapes_and_parameter_count():
    model = build_model("seed")
    rows = summarize(model)
    shapes = [tuple(r["output_shape"]) for r in rows]
    assert shapes == [(26, 26, 32), (13, 13, 32), (11, 11, 64), (5, 5, 64), (3, 3, 128), (1152,), (128,), (10,)]
    assert count_params(model) == 241_546
    assert sum(r["macs"] for r in rows) == 3_237_248
    assert "Total params: 241,546" in format_summary(model)


def test_keras_initialisation():
    model = build_model("seed")
    conv = model[0]
    limit = (6 / (1 * 9 + 32 * 9)) ** 0.5  # Glorot uniform: sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= limit
    assert conv.weight.abs().max() > 0.8 * limit
    assert all(torch.count_nonzero(m.bias) == 0 for m in model if hasattr(m, "bias") and m.bias is not None)


def test_logits_and_probabilities():
    model = build_model("seed")
    logits = model(torch.rand(4, 1, 28, 28))
    assert logits.shape == (4, 10)
    probs = probabilities(logits)
    assert torch.allclose(probs.sum(1), torch.ones(4))


def test_unknown_model_name():
    with pytest.raises(DigitnetError, match="did you mean seed"):
        build_model("sead")


def test_save_load_identical_predictions(tmp_path):
    model = build_model("seed").eval()
    meta = {"architecture": {"name": "seed", "num_classes": 10}, "class_names": [str(i) for i in range(10)]}
    save_model(tmp_path, model, meta)
    loaded, meta2 = load_model(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])  # the same numbers ...
    # ... laid out channels_last for speed (a CPU convolution picks other kernels: not bit-equal)
    assert loaded[3].weight.is_contiguous(memory_format=torch.channels_last)
    assert not loaded[3].weight.is_contiguous()
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded(x), atol=1e-5, rtol=0)
    assert meta2["architecture"]["name"] == "seed"


def test_load_refuses_mismatched_shapes(tmp_path):
    from safetensors.torch import save_file

    model = build_model("seed")
    save_model(tmp_path, model, {"architecture": {"name": "seed", "num_classes": 10}})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["0.weight"] = torch.zeros(16, 1, 3, 3)
    save_file(state, str(tmp_path / "model.safetensors"))
    import json
    meta = json.loads((tmp_path / "model.json").read_text())
    meta.pop("weights_sha256")
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(DigitnetError, match=r"0\.weight: file \[16, 1, 3, 3\] vs network \[32, 1, 3, 3\]"):
        load_model(tmp_path)


def test_load_refuses_tampered_weights(tmp_path):
    save_model(tmp_path, build_model("seed"), {"architecture": {"name": "seed", "num_classes": 10}})
    blob = bytearray((tmp_path / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DigitnetError, match="SHA-256"):
        load_model(tmp_path)


def test_load_missing_or_bad_json(tmp_path):
    with pytest.raises(DigitnetError, match="missing"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(DigitnetError, match="not valid JSON"):
        load_model(tmp_path)


def test_artefacts_get_the_usual_file_mode(tmp_path):
    """Atomic writes go through mkstemp (owner-only, 0600): the finished file gets what open() would
    give it, so a model saved by one user can be served by another."""
    import os

    from digitnet.files import atomic_write_bytes

    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    save_model(tmp_path / "run", build_model("seed"), {"architecture": {"name": "seed", "num_classes": 10}})
    for path in (tmp_path / "a.bin", tmp_path / "run" / "model.safetensors", tmp_path / "run" / "model.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path

