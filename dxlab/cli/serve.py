"""``dxlab serve``: registered models over HTTP (Open Inference Protocol v2), locally or on Ray Serve."""

from __future__ import annotations

import argparse

# kept here (not imported from dxlab.serving) so that building the parser never imports torch
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("local", "ray")


def register(areas) -> None:
    p = areas.add_parser(
        "serve", help="serve registered models over HTTP (Open Inference Protocol v2, dynamic batching, metrics)",
        description="Serve one or more packaged models from the MLflow registry. Endpoints: /v2/health/live, "
                    "/v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready, POST /v2/models/NAME/infer, /metrics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", dest="models", action="append", required=True, metavar="[NAME=]URI",
                   help="a model to serve, e.g. models:/dxlab-tb-cxr@champion (served as dxlab-tb-cxr; an @alias is "
                        "followed when it moves); NAME=URI names it, e.g. tb-next=models:/dxlab-tb-cxr@challenger "
                        "(repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present, else the CPU")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="forward-pass precision. auto: bf16 on a GPU that supports it (else fp16) and on a CPU with "
                        "native bf16 (AVX-512 BF16 or AMX), else fp32; fp16 is CUDA only. A model whose bf16/fp16 "
                        "probabilities stray from fp32 on a probe batch at load is served in fp32")
    p.add_argument("--max-batch-size", type=int, default=16, help="images per forward pass, at most")
    p.add_argument("--max-delay-ms", type=float, default=5.0,
                   help="how long the first queued request waits for others to share its forward pass")
    p.add_argument("--queue-size", type=int, default=256, help="images queued per model before requests get 429")
    p.add_argument("--timeout-s", type=float, default=10.0, help="a request not answered in time gets 504")
    p.add_argument("--reload-interval-s", type=float, default=30.0,
                   help="how often the registry is asked where each @alias points (0: never; no hot reload)")
    p.add_argument("--instances", type=int, default=0,
                   help="forward passes that run at once per model, worker threads sharing its queue (0: auto; two "
                        "on a CPU with two cores or more, else one)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per forward pass (0: auto; on the CPU the cores but one, which is left to HTTP "
                        "and decoding, shared among the instances; OMP_NUM_THREADS, when set, wins)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (413 above it)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process (uvicorn); ray: Ray Serve replicas (pip install 'dxlab[ray]')")
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --engine ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: DXLAB_MLFLOW_TRACKING_URI)")
    p.set_defaults(func=cmd_serve)


def engine_config(args):
    from dxlab.serving.engine import EngineConfig

    return EngineConfig(models=tuple(args.models), device=args.device, precision=args.precision,
                        max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms, queue_size=args.queue_size,
                        timeout_s=args.timeout_s, reload_interval_s=args.reload_interval_s,
                        tracking_uri=args.tracking_uri, max_body_mb=args.max_body_mb, instances=args.instances,
                        threads=args.threads)


def cmd_serve(args) -> int:
    from dxlab.errors import ServingError

    config = engine_config(args)
    if not 0 < args.port < 65536:
        raise ServingError(f"--port {args.port}; expected 1-65535")
    if args.engine == "ray":
        from dxlab.serving.ray_deployment import run

        run(config, host=args.host, port=args.port, replicas=args.replicas)
        return 0
    if args.replicas != 1:
        raise ServingError("--replicas needs --engine ray (the local engine is one process; run more behind a "
                           "load balancer, or use Ray Serve or KServe)")
    import uvicorn

    from dxlab.serving.app import create_app
    from dxlab.serving.engine import Engine

    engine = Engine(config)
    engine.start()  # load and warm before listening: a bad URI fails here, with its message
    try:
        print(f"dxlab serve: {', '.join(f'{n} v{engine.model(n).version}' for n in engine.model_names())} "
              f"on {engine.device}; http://{args.host}:{args.port}/v2", flush=True)
        uvicorn.run(create_app(engine), host=args.host, port=args.port, access_log=False, log_level="warning")
    finally:
        engine.stop()
    return 0
