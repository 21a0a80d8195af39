"""Training: from a YAML run config to a registered, evaluated model.

- :mod:`dxlab.training.config`: the typed, frozen run config (``load_config``, ``--set`` overrides).
- :mod:`dxlab.training.data`: the run manifest from the config's data sources.
- :mod:`dxlab.training.torchdata`: torch data sets over a manifest, with cache and MONAI augmentation.
- :mod:`dxlab.training.loop`: the training loop and its callbacks (early stopping, checkpoints).
- :mod:`dxlab.training.run`: one run end to end (``train``), DDP under ``torchrun``.
- :mod:`dxlab.training.tabular`: scikit-learn runs for tabular data.
- :mod:`dxlab.training.metrics`, ``operating_point``, ``calibration``, ``subgroups``, ``plots``,
  ``report``: evaluation with bootstrap confidence intervals.
- :mod:`dxlab.training.card`: the model card; :mod:`dxlab.training.tracking`: MLflow and the registry gate.
- :mod:`dxlab.training.evaluate`: ``dxlab evaluate`` of a logged or registered model.

Nothing here imports :mod:`dxlab.serving` or :mod:`dxlab.records`.
"""
