"""Training recipes, one module per family: :mod:`~metricopt.app.recipes.classification`
(confusion-matrix metrics and the cross-entropy baselines),
:mod:`~metricopt.app.recipes.ranking` (rank metrics and retrieval) and
:mod:`~metricopt.app.recipes.blackbox` (black-box metrics: pre-train,
meta-train, fine-tune)."""
