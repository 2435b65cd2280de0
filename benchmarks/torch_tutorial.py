"""A plain PyTorch tutorial-style loop (pytorch/examples mnist/main.py shape) of the same network.

    .venv/bin/python benchmarks/torch_tutorial.py   # prints one JSON line (bench.py runs it for you)

What a newcomer writes first: a TensorDataset of float images in [0, 1], a DataLoader with
shuffle=True and batch 32, fp32, the default NCHW layout, Adam 1e-3 and a test pass after every
epoch. Same layers and initialisation as digitnet's seed network, none of its speed choices.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from common import ROOT, emit, limit, mnist, train_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N train and test images (0: all)")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    sys.path.insert(0, str(ROOT))
    from digitnet.model import build_model

    torch.manual_seed(0)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    x_train, y_train, x_test, y_test = limit(mnist(), args.limit)
    train_set = TensorDataset(torch.tensor(x_train, dtype=torch.float32).unsqueeze(1) / 255, torch.tensor(y_train))
    test_set = TensorDataset(torch.tensor(x_test, dtype=torch.float32).unsqueeze(1) / 255, torch.tensor(y_test))
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)
    model = build_model("seed")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def test() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                correct += (model(data).argmax(1) == target).sum().item()
        return correct / len(test_set)

    epoch_s, end_wall, accs = [], [], []
    fit_start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        for data, target in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        epoch_s.append(time.perf_counter() - t0)
        accs.append(test())
        end_wall.append(time.perf_counter() - fit_start)
    emit({"train": train_result("pytorch tutorial loop", len(x_train), epoch_s, end_wall, accs,
                                time.perf_counter() - fit_start, batch_size=32, precision="fp32",
                                threads=torch.get_num_threads())})


if __name__ == "__main__":
    main()
