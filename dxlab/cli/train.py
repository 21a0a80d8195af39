"""``dxlab train``, ``dxlab evaluate`` and ``dxlab models ...``."""

from __future__ import annotations

from pathlib import Path

from dxlab.cli.output import add_json_flag, print_json, print_mapping, print_table


def register(areas) -> None:
    p = areas.add_parser("train", help="train, evaluate and register a model from a YAML config")
    p.add_argument("config", type=Path, metavar="CONFIG", help="YAML run config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--resume", type=Path, metavar="CHECKPOINT", help="continue an interrupted run from its last.pt")
    p.add_argument("--checkpoint-dir", type=Path, help="where last.pt goes (default: DXLAB_HOME/checkpoints/<name>)")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    add_json_flag(p)
    p.set_defaults(func=cmd_train)

    p = areas.add_parser("evaluate", help="evaluate a registered or logged model on a manifest")
    p.add_argument("model_uri", metavar="MODEL_URI", help="e.g. models:/dxlab-tb-cxr@champion or runs:/<id>/model")
    p.add_argument("--data", type=Path, required=True, metavar="MANIFEST")
    p.add_argument("--split", default="test", help="split of the manifest to use (default: test; 'all' for every row)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--subgroup", action="append", default=[], metavar="COL", help="metadata column for subgroup metrics")
    add_json_flag(p)
    p.set_defaults(func=cmd_evaluate)

    models = areas.add_parser("models", help="the model registry: list and promote")
    cmds = models.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("list", help="registered models, versions and aliases")
    add_json_flag(p)
    p.set_defaults(func=cmd_models_list)
    p = cmds.add_parser("promote", help="move an alias (champion) to a version, with a logged reason")
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--alias", default="champion")
    p.add_argument("--reason", required=True, help="why (kept on the version with who and when)")
    p.set_defaults(func=cmd_models_promote)


def cmd_train(args) -> int:
    from dxlab.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.show_config:
        print(cfg.to_yaml(), end="")
        return 0
    from dxlab.training.run import train

    result = train(cfg, resume=args.resume, checkpoint_dir=args.checkpoint_dir)
    if result.run_id is None:  # a non-zero DDP rank: rank 0 reports
        return 0
    summary = {k: v for k, v in result.__dict__.items() if k != "evaluation"}
    if args.json:
        print_json(summary)
        return 0
    print(f"run {result.run_id}: {result.model_name} version {result.version} -> {result.alias}")
    print_mapping({"data_version": result.data_version, "epochs_run": result.epochs_run, "checkpoint": result.checkpoint,
                   "gate": ("passed" if result.gate["passed"] else "failed") + ": " + "; ".join(result.gate["reasons"])})
    keys = [k for k in result.test_metrics if not k.endswith(("_ci_low", "_ci_high"))]
    rows = [[k, _fmt(result.test_metrics[k]), _fmt(result.test_metrics.get(k + "_ci_low")),
             _fmt(result.test_metrics.get(k + "_ci_high"))] for k in keys]
    print()
    print_table(rows, ["metric", "value", "ci_low", "ci_high"])
    return 0


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"


def cmd_evaluate(args) -> int:
    from dxlab.training.evaluate import evaluate_model

    evaluation = evaluate_model(args.model_uri, args.data, split=args.split, n_bootstrap=args.bootstrap,
                                subgroups=args.subgroup)
    if args.json:
        print_json(evaluation)
    else:
        from dxlab.training.report import flatten_metrics

        flat = flatten_metrics(evaluation, prefix="")
        print_table([[k, _fmt(v)] for k, v in flat.items()], ["metric", "value"])
    return 0


def cmd_models_list(args) -> int:
    from dxlab.training.tracking import list_models

    models = list_models()
    if args.json:
        print_json(models)
    else:
        rows = [[m["name"], v["version"], ",".join(v["aliases"]), v["run_id"]] for m in models for v in m["versions"]]
        print_table(rows, ["name", "version", "aliases", "run_id"])
    return 0


def cmd_models_promote(args) -> int:
    from dxlab.training.tracking import set_alias

    set_alias(args.name, args.version, args.alias, args.reason)
    print(f"{args.name} version {args.version} is now {args.alias}")
    return 0
