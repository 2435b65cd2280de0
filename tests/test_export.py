"""ONNX export: parity with PyTorch, the dynamic batch axis, int8, the ONNX Runtime and OpenVINO
classifiers, and clear errors."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import digitnet  # noqa: E402
from digitnet.errors import DigitnetError  # noqa: E402
from digitnet.export import INT8_FILE, ONNX_FILE, OnnxClassifier, export_int8, export_onnx  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """A copy of the tiny run with model.onnx written into it."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    report = export_onnx(run_dir)
    return run_dir, report


@pytest.fixture(scope="module")
def exported_int8(tiny_run, tmp_path_factory):
    """A copy of the tiny run with model.onnx and model.int8.onnx written into it."""
    run_dir = tmp_path_factory.mktemp("export_int8") / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    return run_dir, {**export_onnx(run_dir), "int8": export_int8(run_dir)}


def test_export_writes_onnx_and_matches_pytorch(exported):
    run_dir, report = exported
    assert (run_dir / ONNX_FILE).stat().st_size == report["bytes"] > 100_000  # 241,546 fp32 weights
    assert report["checked_images"] == 1000
    assert report["max_abs_diff"] < 1e-4
    assert report["same_argmax"] == 1.0
    assert not list(run_dir.glob(".model.onnx.*"))  # no temp file left behind


def test_onnx_classifier_predicts_like_torch_at_any_batch_size(exported):
    from digitnet.data import load_split

    run_dir, _ = exported
    x, _ = load_split("mnist", "test")
    torch_model, onnx_model = digitnet.load(run_dir), OnnxClassifier(run_dir)
    for n in (1, 7, 300):  # the batch axis is dynamic
        expected, got = torch_model.predict(x[:n]), onnx_model.predict(x[:n])
        assert got.shape == expected.shape == (n, 10)
        assert np.abs(got - expected).max() < 1e-4
        np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
    assert onnx_model.predict(x[0]).shape == (1, 10)  # one (28, 28) image


def test_onnx_graph_takes_uint8_pixels_and_returns_probabilities(exported):
    import onnx

    run_dir, _ = exported
    graph = onnx.load(str(run_dir / ONNX_FILE)).graph
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == ("pixels", "probabilities")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [28, 28]


def test_export_parity_check_can_fail(exported, monkeypatch, tmp_path):
    """A broken graph must be refused, not written: the check is real."""
    import digitnet.export as export

    run_dir = tmp_path / "run"
    shutil.copytree(exported[0], run_dir)
    (run_dir / ONNX_FILE).unlink()
    real = export.check_parity

    def skewed(wrapper, session, images):
        result = real(wrapper, session, images)
        return {**result, "max_abs_diff": result["max_abs_diff"] + 1e-3}

    monkeypatch.setattr(export, "check_parity", skewed)
    with pytest.raises(DigitnetError, match="disagrees with PyTorch"):
        export.export_onnx(run_dir)
    assert not (run_dir / ONNX_FILE).exists()


def test_onnx_classifier_without_export_is_a_clear_error(exported, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(exported[0], run_dir)
    (run_dir / ONNX_FILE).unlink()
    with pytest.raises(DigitnetError, match="digitnet export"):
        OnnxClassifier(run_dir)


def test_export_cli(exported, tmp_path, capsys):
    from digitnet.cli import main

    run_dir = tmp_path / "run"
    shutil.copytree(exported[0], run_dir)
    (run_dir / ONNX_FILE).unlink()
    assert main(["export", str(run_dir), "--format", "onnx", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] < 1e-4 and (run_dir / ONNX_FILE).exists()
    assert main(["export", str(tmp_path / "nope"), "--format", "onnx"]) == 1
    assert "digitnet: error:" in capsys.readouterr().err


def test_predict_runtime_onnx_matches_torch(exported, tmp_path, capsys):
    """`digitnet predict --runtime onnx` gives the PyTorch answer for the same image files."""
    from PIL import Image

    from digitnet.cli import main
    from digitnet.data import load_split

    run_dir, _ = exported
    x, _ = load_split("mnist", "test")
    for i in range(3):
        Image.fromarray(x[i]).save(tmp_path / f"d{i}.png")
    out = {}
    for runtime in ("torch", "onnx"):
        assert main(["predict", str(tmp_path), "--model", str(run_dir), "--runtime", runtime, "--json"]) == 0
        out[runtime] = json.loads(capsys.readouterr().out)
    assert len(out["onnx"]) == 3
    for a, b in zip(out["torch"], out["onnx"]):
        assert a["digit"] == b["digit"] and np.abs(np.subtract(a["probs"], b["probs"])).max() < 1e-4


def test_int8_export_is_quantized_calibrated_and_checked(exported_int8):
    import onnx

    run_dir, report = exported_int8
    q = report["int8"]
    assert (run_dir / INT8_FILE).stat().st_size == q["bytes"] < (run_dir / ONNX_FILE).stat().st_size / 2
    assert q["calibration_images"] == 2000 and q["checked_images"] == 1000
    assert q["same_argmax"] >= 0.99 and 0 < q["max_abs_diff"] < 0.5  # quantized: close, not equal
    ops = {node.op_type for node in onnx.load(str(run_dir / INT8_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert not list(run_dir.glob(".model.int8.onnx.*"))


def test_int8_check_can_fail(exported_int8, monkeypatch, tmp_path):
    """An int8 model that answers differently from PyTorch too often is refused, not written."""
    import digitnet.export as export

    run_dir = tmp_path / "run"
    shutil.copytree(exported_int8[0], run_dir)
    (run_dir / INT8_FILE).unlink()
    monkeypatch.setattr(export, "INT8_AGREEMENT", 1.01)  # no model can agree on more than all digits
    with pytest.raises(DigitnetError, match="int8 export .* disagrees"):
        export.export_int8(run_dir)
    assert (run_dir / ONNX_FILE).exists() and not (run_dir / INT8_FILE).exists()


@pytest.mark.parametrize("runtime", ["onnx-int8", "openvino", "openvino-int8"])
def test_other_runtimes_answer_like_torch(exported_int8, runtime):
    """fp32 under OpenVINO matches PyTorch to 1e-4; int8 (either engine) gives the same digits on 99%."""
    if runtime.startswith("openvino"):
        pytest.importorskip("openvino")
    from digitnet.data import load_split

    run_dir, _ = exported_int8
    x, _ = load_split("mnist", "test")
    x = x[-600:]  # not the images the export was checked on
    expected = digitnet.load(run_dir).predict(x)
    model = OnnxClassifier(run_dir, runtime=runtime)
    got = model.predict(x)
    assert got.shape == (600, 10) and model.predict(x[0]).shape == (1, 10)
    # 600 images are three chunks (OpenVINO: on its queue of requests), in order, as one at a time.
    one_by_one = np.concatenate([model.predict(x[i:i + 256]) for i in range(0, 600, 256)])
    np.testing.assert_allclose(got, one_by_one, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-4)
    if runtime == "openvino":
        assert np.abs(got - expected).max() < 1e-4
    else:
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99


def test_runtime_errors_are_clear(exported_int8, tmp_path, monkeypatch):
    import sys

    run_dir = tmp_path / "run"
    shutil.copytree(exported_int8[0], run_dir)
    with pytest.raises(DigitnetError, match="unknown runtime"):
        OnnxClassifier(run_dir, runtime="tensorrt")
    (run_dir / INT8_FILE).unlink()
    with pytest.raises(DigitnetError, match="--format onnx --int8"):
        OnnxClassifier(run_dir, runtime="onnx-int8")
    (run_dir / ONNX_FILE).write_bytes(b"not a model at all")
    for runtime in ("onnx", "openvino"):
        if runtime == "openvino" and "openvino" not in sys.modules:
            pytest.importorskip("openvino")
        with pytest.raises(DigitnetError, match="not a usable ONNX model"):
            OnnxClassifier(run_dir, runtime=runtime)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(DigitnetError, match="need OpenVINO"):
        OnnxClassifier(run_dir, runtime="openvino")


def test_export_int8_and_predict_cli(exported_int8, tmp_path, capsys):
    from PIL import Image

    from digitnet.cli import main
    from digitnet.data import load_split

    run_dir = tmp_path / "run"
    shutil.copytree(exported_int8[0], run_dir)
    (run_dir / INT8_FILE).unlink()
    x, _ = load_split("mnist", "test")
    Image.fromarray(x[0]).save(tmp_path / "d0.png")
    assert main(["predict", str(tmp_path / "d0.png"), "--model", str(run_dir), "--runtime", "onnx-int8"]) == 1
    assert "--int8" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--int8"]) == 0
    out = capsys.readouterr().out
    assert "model.int8.onnx" in out and "training images" in out and (run_dir / INT8_FILE).exists()
    assert main(["predict", str(tmp_path / "d0.png"), "--model", str(run_dir), "--runtime", "onnx-int8",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["digit"] == str(digitnet.load(run_dir).predict(x[0]).argmax())
