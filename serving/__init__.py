"""The inference engine and the HTTP service (Open Inference Protocol v2).

- :mod:`dxlab.serving.engine`: :class:`~dxlab.serving.engine.Engine` loads packaged
  models from the MLflow registry (``models:/NAME@ALIAS``), batches requests per
  model, follows aliases as they move, abstains on out-of-distribution images and
  draws Grad-CAM heatmaps; :class:`~dxlab.serving.engine.EngineConfig` configures it.
- :mod:`dxlab.serving.app`: ``create_app(engine_or_config)``, the FastAPI app
  (``/v2/...`` routes, ``/metrics``, body and image size limits).
- :mod:`dxlab.serving.oip`: request parsing and response building of the protocol.
- :mod:`dxlab.serving.decode`: encoded images (PNG, JPEG, DICOM) to arrays, with limits.
- :mod:`dxlab.serving.metrics`: the Prometheus series.
- :mod:`dxlab.serving.ray_deployment`: the same engine and app as Ray Serve replicas
  (``pip install 'dxlab[ray]'``).

Nothing here imports :mod:`dxlab.training`: the two meet only in the registry.
Importing this package imports neither torch nor MLflow; its modules do.
"""
