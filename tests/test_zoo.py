import json

import numpy as np
import pytest
import torch

import digitnet
from digitnet.cli import main
from digitnet.config import RECIPES, make_config
from digitnet.data import load_split
from digitnet.ensemble import evaluate_ensemble, shift_images
from digitnet.model import MODELS, build_model, count_params, load_model, save_model, summarize


@pytest.fixture(scope="module")
def strong_run(tmp_path_factory):
    """The strong network trained for one epoch on 2,000 images (BatchNorm statistics now non-trivial)."""
    out = tmp_path_factory.mktemp("zoo")
    # Batch 16: 125 steps, so the running statistics forget their initial (0, 1) (momentum 0.1 per step).
    return digitnet.train(model="strong", epochs=1, limit_train=2000, limit_test=500, batch_size=16,
                          lr=3e-3, schedule="onecycle", out_dir=str(out), name="strong", log="quiet",
                          plots=False)


def test_seed_is_still_the_notebook():
    assert count_params(build_model("seed")) == 241_546


def test_strong_shapes_and_size():
    model = build_model("strong")
    rows = summarize(model)
    assert tuple(rows[-1]["output_shape"]) == (10,)
    assert [tuple(r["output_shape"]) for r in rows if r["type"] == "Conv2d"] == \
        [(26, 26, 32), (24, 24, 32), (10, 10, 64), (8, 8, 64)]
    assert count_params(model) == 330_410
    assert sum(r["macs"] for r in rows) == 9_970_304
    assert model.training  # build_model leaves a fresh network ready to train
    assert int(model[1].num_batches_tracked) == 0  # building it did not touch batch-norm statistics
    logits = model.eval()(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10)


def test_wide_is_strong_with_half_again_the_channels():
    model = build_model("wide")
    rows = summarize(model)
    assert [tuple(r["output_shape"]) for r in rows if r["type"] == "Conv2d"] == \
        [(26, 26, 48), (24, 24, 48), (10, 10, 96), (8, 8, 96)]
    assert count_params(model) == 542_458
    assert sum(r["macs"] for r in rows) == 22_087_360
    assert [type(m).__name__ for m in model] == [type(m).__name__ for m in build_model("strong")]
    assert model.eval()(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_summary_command_for_every_model(capsys):
    for name in MODELS:
        assert main(["summary", name]) == 0
        out = capsys.readouterr().out
        assert f'Model: "{name}"' in out and "Total params" in out
    assert "batch_normalization_4 (BatchNorm1d, relu)" in digitnet.summary("strong")


def test_strong_run_learns_and_reloads_with_batchnorm_buffers(strong_run):
    assert strong_run.history["val_accuracy"][-1] > 0.85  # chance is 0.10
    model, meta = load_model(strong_run.run_dir)
    assert meta["architecture"]["name"] == "strong"
    trained = strong_run.model.state_dict()
    loaded = model.state_dict()
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    assert int(loaded["1.num_batches_tracked"]) == 2000 // 16  # one per training step
    for key in ("1.running_mean", "1.running_var", "18.running_var"):
        assert not torch.equal(loaded[key], build_model("strong").state_dict()[key])  # it learned
        torch.testing.assert_close(loaded[key], trained[key].float(), atol=0, rtol=0)
    x, _ = load_split("mnist", "test")
    x = torch.from_numpy(x[:200]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        # Training left its copy in channels_last layout, whose kernels round differently: close, not equal.
        torch.testing.assert_close(strong_run.model.float().eval()(x), model(x), atol=1e-4, rtol=1e-4)


def test_save_load_keeps_every_buffer(tmp_path):
    model = build_model("strong")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 28, 28))  # moves running statistics, counts batches
    model.eval()
    save_model(tmp_path, model, {"architecture": {"name": "strong", "num_classes": 10}})
    loaded, _ = load_model(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert int(loaded.state_dict()["1.num_batches_tracked"]) == 3
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():  # loaded weights are channels_last: other CPU kernels, not bit-equal
        torch.testing.assert_close(model(x), loaded(x), atol=1e-5, rtol=0)


def test_shift_images():
    x = torch.zeros(1, 28, 28, dtype=torch.uint8)
    x[0, 5, 7] = 200
    assert shift_images(x, 1, 0)[0, 6, 7] == 200 and shift_images(x, 0, -1)[0, 5, 6] == 200
    assert shift_images(x, 0, 0).equal(x)
    edge = torch.full((1, 28, 28), 9, dtype=torch.uint8)
    assert shift_images(edge, -1, 0)[0, 27].eq(0).all()  # the uncovered row is background


def test_ensemble_of_two_runs(tiny_run, strong_run):
    from digitnet.evaluate import evaluate_run

    runs = [tiny_run.run_dir, strong_run.run_dir]
    result = evaluate_ensemble(runs, limit=500)
    singles = [evaluate_run(r, limit=500, plots=False)["accuracy"] for r in runs]
    assert result["member_accuracy"] == pytest.approx(singles, abs=1e-12)
    # The ensemble's answer is the argmax of the two softmaxes' mean, recomputed here independently.
    x, y = load_split("mnist", "test")
    x, y = x[:500], y[:500]
    mean = (digitnet.load(runs[0]).predict(x) + digitnet.load(runs[1]).predict(x)) / 2
    assert result["accuracy"] == pytest.approx(float((mean.argmax(1) == y).mean()), abs=1e-12)
    assert result["errors"] == int((mean.argmax(1) != y).sum())
    assert result["gain_over_mean_member"] == pytest.approx(result["accuracy"] - np.mean(singles))


def test_ensemble_of_one_run_is_that_run(tiny_run):
    alone = evaluate_ensemble([tiny_run.run_dir, tiny_run.run_dir], limit=300)
    assert alone["accuracy"] == alone["member_accuracy"][0]
    tta = evaluate_ensemble([tiny_run.run_dir], limit=300, tta=True)
    assert tta["tta"] and len(tta["tta_views"][0]) == 5 and 0.8 < tta["accuracy"] <= 1


def test_tta_views_follow_the_training_augmentation(tiny_run):
    from digitnet.ensemble import PLAIN, TTA_SHIFTS, run_probabilities, tta_views
    from digitnet.model import predict_logits, probabilities

    shifted = tuple((False, dy, dx) for dy, dx in TTA_SHIFTS)
    assert tta_views({"config": {"augment": "none"}}) == tta_views({}) == shifted
    assert tta_views({"config": {"augment": "affine+ink"}}) == shifted
    assert tta_views({"config": {"augment": "flip"}}) == ((False, 0, 0), (True, 0, 0))  # clothes
    assert len(tta_views({"config": {"augment": "shift+flip"}})) == 2 * len(TTA_SHIFTS)
    model, _ = load_model(tiny_run.run_dir, torch.device("cpu"))
    x = torch.from_numpy(load_split("mnist", "test")[0][:64])
    cpu = torch.device("cpu")
    views = [probabilities(predict_logits(model, shift_images(v, dy, dx), device=cpu))
             for v in (x, x.flip(-1)) for dy, dx in TTA_SHIFTS]
    both = tta_views({"config": {"augment": "shift+flip"}})
    assert torch.allclose(run_probabilities(model, x, cpu, both), torch.stack(views).mean(0), atol=1e-6)
    assert torch.allclose(run_probabilities(model, x, cpu, shifted), torch.stack(views[:5]).mean(0), atol=1e-6)
    assert torch.allclose(run_probabilities(model, x, cpu, PLAIN), views[0], atol=1e-6)


def test_evaluate_command_with_several_runs(tiny_run, strong_run, capsys):
    assert main(["evaluate", str(tiny_run.run_dir), str(strong_run.run_dir), "--limit", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["member_accuracy"]) == 2 and out["images"] == 200
    assert main(["evaluate", str(tiny_run.run_dir), "--tta", "--limit", "100"]) == 0
    assert "ensemble: " in capsys.readouterr().out
    assert main(["evaluate", str(tiny_run.run_dir), "/no/such/run"]) == 1
    assert "not a run directory" in capsys.readouterr().err


def test_recipes_are_plain_valid_values():
    for name, values in RECIPES.items():
        assert all(isinstance(v, (int, float, str, bool)) for v in values.values()), name
        make_config(name)  # every recipe passes validation
    best = make_config("best")
    assert best.model == "strong" and best.augment != "none" and best.val_size > 0
    assert make_config("seed").augment == "none"
