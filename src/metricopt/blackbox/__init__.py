"""MetricOpt: black-box metric optimisation (adapters, value function, meta-training, fine-tuning)."""
