"""How much smaller the recall loss's gradient is at its defaults than at the former ones.

The defaults moved from interpolation 2 / margin 0 to 2048 / 0.005 (issue 16,
``docs/design.md``, "Rank losses (RaMBO)"). RaMBO's gradient is the rank change
divided by the interpolation, so a larger interpolation gives a smaller
gradient; how much smaller depends on the data. This prints, per dataset and
seed, the ratio of the parameter-gradient norms (former / current defaults) of
an untrained 64-d MLP embedder on one class-balanced batch (13 letters x 16
rows of the training letters A..M), and the median over seeds:

    python -m benchmarks.recall_gradient_scale      # a few seconds
"""

from __future__ import annotations

import numpy as np
import torch

FORMER_DEFAULTS = {"interpolation": 2.0, "margin": 0.0}
SEEDS = range(5)


def gradient_norm_ratios(dataset: str) -> list[float]:
    """Former / current gradient-norm ratio for each seed on ``dataset`` (``letter`` or ``letter_shadow``)."""
    from metricopt.app.data import load_retrieval
    from metricopt.app.recipes.classification import make_mlp
    from metricopt.losses import RecallLoss

    split = load_retrieval(dataset)
    X, y = torch.as_tensor(split.X_train), torch.as_tensor(split.y_train)
    ratios = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        rows = np.concatenate([rng.choice(np.flatnonzero(split.y_train == c), 16, replace=False)
                               for c in split.train_classes])
        model = make_mlp(X.shape[1], 64, (128, 128), seed=seed)
        norms = []
        for options in (FORMER_DEFAULTS, {}):
            model.zero_grad()
            RecallLoss(**options)(model(X[rows]), y[rows]).backward()
            norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))
        ratios.append(norms[0] / norms[1])
    return ratios


def main() -> int:
    torch.set_num_threads(1)
    for dataset in ("letter", "letter_shadow"):
        ratios = gradient_norm_ratios(dataset)
        print(f"{dataset}: gradient norm at interpolation 2 / margin 0 over the defaults, seeds {list(SEEDS)}: "
              f"{', '.join(f'{r:.1f}' for r in ratios)}; median {np.median(ratios):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
