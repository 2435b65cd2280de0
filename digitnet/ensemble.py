"""Ensembles and test-time augmentation: average class probabilities over several runs and views.

    digitnet evaluate runs/A runs/B runs/C          # the committee: mean of the three softmaxes
    digitnet evaluate runs/A --tta                  # one run, averaged over small shifts of each image
                                                    # (mirror images instead, for runs trained with flips)
    digitnet evaluate runs/A runs/B --tta --json    # both

Averaging probabilities (not votes) lets a confident member outvote two unsure ones; it is what
the published MNIST committees do. The test set is scored once per member and view; nothing here
chooses anything on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from digitnet.data import load_split
from digitnet.errors import DigitnetError
from digitnet.model import load_model, pick_device, predict_logits, probabilities

# Test-time views, (mirrored, rows down, columns right): the image itself and one-pixel shifts in
# the four directions. MNIST digits are centred by mass, so a pixel either way is within the jitter
# the training data already has.
PLAIN = ((False, 0, 0),)
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shift_images(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """uint8 (N, H, W) moved dy rows down and dx columns right; uncovered pixels are background (0)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def run_probabilities(model, x: torch.Tensor, device, views=PLAIN) -> torch.Tensor:
    """(N, classes) float32 probabilities of one model for uint8 images (N, 28, 28), averaged over views."""
    probs = [probabilities(predict_logits(model, shift_images(x.flip(-1) if mirrored else x, dy, dx),
                                          device=device)).cpu()
             for mirrored, dy, dx in views]
    return torch.stack(probs).mean(0)


def tta_views(meta: dict) -> tuple[tuple[bool, int, int], ...]:
    """The views a run knows from its training: its mirror image if it was trained with flips
    (clothes; a mirrored 2 is no 2), small shifts unless it was trained with flips alone (clothes
    are not centred by mass, so a shift is new to it: on a Fashion-MNIST hold-out, shifts took
    94.54% to 94.38% and the mirror to 94.76%)."""
    parts = str((meta.get("config") or {}).get("augment", "none")).split("+")
    flips = (False, True) if "flip" in parts else (False,)
    shifts = TTA_SHIFTS if "flip" not in parts or {"shift", "affine"} & set(parts) else ((0, 0),)
    return tuple((mirrored, dy, dx) for mirrored in flips for dy, dx in shifts)


def ensemble_probabilities(run_dirs: list[str | Path], x: torch.Tensor, device: str = "auto",
                           tta: bool = False) -> tuple[torch.Tensor, list[torch.Tensor], list[dict]]:
    """Mean probabilities over runs, plus each run's own probabilities and model.json."""
    if not run_dirs:
        raise DigitnetError("an ensemble needs at least one run directory")
    dev = pick_device(device)
    members, metas = [], []
    for run_dir in run_dirs:
        model, meta = load_model(run_dir, dev)
        if metas and (meta["class_names"] != metas[0]["class_names"]
                      or meta["dataset"]["name"] != metas[0]["dataset"]["name"]):
            raise DigitnetError(f"{run_dir} was trained on {meta['dataset']['name']!r}, but {run_dirs[0]} on "
                                f"{metas[0]['dataset']['name']!r}; an ensemble needs runs of one dataset")
        members.append(run_probabilities(model, x, dev, tta_views(meta) if tta else PLAIN))
        metas.append(meta)
    return torch.stack(members).mean(0), members, metas


def evaluate_ensemble(run_dirs: list[str | Path], data_dir: str | None = None, device: str = "auto",
                      limit: int = 0, tta: bool = False) -> dict:
    """Test metrics of the averaged runs, with each member's own accuracy and the gain over them."""
    from digitnet.evaluate import metrics_from_logits

    name = _dataset_of(run_dirs)
    x, y = load_split(name, "test", data_dir)
    if limit:
        x, y = x[:limit], y[:limit]
    mean, members, metas = ensemble_probabilities(run_dirs, torch.from_numpy(x), device, tta)
    # log of the averaged probabilities: its cross-entropy is the ensemble's own test loss.
    result = metrics_from_logits(torch.log(mean.clamp_min(1e-12)), y, metas[0]["class_names"])
    member_acc = [float((p.argmax(1).numpy() == y).mean()) for p in members]
    result.update({"runs": [str(r) for r in run_dirs], "tta": tta,
                   "tta_views": [[list(v) for v in (tta_views(m) if tta else PLAIN)] for m in metas],
                   "member_accuracy": member_acc, "member_mean_accuracy": float(np.mean(member_acc)),
                   "gain_over_mean_member": result["accuracy"] - float(np.mean(member_acc)),
                   "gain_over_best_member": result["accuracy"] - max(member_acc)})
    return result


def _dataset_of(run_dirs: list[str | Path]) -> str:
    from digitnet.model import read_meta

    if not run_dirs:
        raise DigitnetError("an ensemble needs at least one run directory")
    return read_meta(run_dirs[0])["dataset"]["name"]


def format_ensemble(result: dict) -> str:
    """The members, then the ensemble line and its gain, above the usual per-class report."""
    from digitnet.evaluate import format_report

    counts = sorted({len(v) for v in result["tta_views"]})
    view = f" with test-time augmentation ({'/'.join(map(str, counts))} views)" if result["tta"] else ""
    lines = [f"ensemble of {len(result['runs'])} run(s){view}:"]
    for run, acc in zip(result["runs"], result["member_accuracy"]):
        lines.append(f"  {acc:.4f}  {run}" + ("  (with TTA)" if result["tta"] else ""))
    mean_gain, best_gain = result["gain_over_mean_member"] * 100, result["gain_over_best_member"] * 100
    lines += [f"  members: mean {result['member_mean_accuracy']:.4f}, best {max(result['member_accuracy']):.4f}",
              f"  ensemble: {result['accuracy']:.4f} (gain {mean_gain:+.2f} points over the mean member, "
              f"{best_gain:+.2f} over the best)", ""]
    return "\n".join(lines) + format_report(result)
