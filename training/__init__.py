"""Run configs, the training loop, evaluation, MLflow tracking and promotion.

Not built yet: the training issue adds them.
"""
