"""`python -m training_job train|versions|show|gc`. Every option can also come from a DON_* variable
(what a Kubernetes Job sets); a failure exits non-zero with a one-line cause on stderr."""
from __future__ import annotations

import argparse
import json
import os
import sys

from don_core.artifact import FAMILY_ALIASES
from don_core.store import DEFAULT_GC_AGE_S

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def _env(name: str, default=None):
    return os.environ.get(name, default)


def _flag(name: str) -> bool:
    return _env(name, "").strip().lower() in ("1", "true", "yes", "on")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m training_job",
                                   description="Train, evaluate and publish DON models.")
    sub = root.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="validate data, evaluate with repeated CV, publish a "
                                         "new immutable version")
    train.add_argument("--data", default=_env("DON_DATA"),
                       help="CSV path, s3://bucket/key, or synthetic[:ROWS] [DON_DATA]")
    _store_and_model(train)
    train.add_argument("--family", choices=[*FAMILY_ALIASES, *FAMILY_ALIASES.values()],
                       default=_env("DON_FAMILY"),
                       help="rf (= sklearn): scikit-learn RandomForest, tf (= tensorflow): "
                            "TensorFlow MLP [DON_FAMILY]")
    train.add_argument("--seed", type=int, default=int(_env("DON_SEED", "0")),
                       help="seed of folds and models [DON_SEED, default 0]")
    train.add_argument("--quick", action="store_true", default=_flag("DON_QUICK"),
                       help="3-fold x 1 evaluation instead of 5 x 5; the final model is "
                            "unchanged [DON_QUICK]")
    train.add_argument("--limits", type=_limits, default=_env("DON_LIMITS", _default_limits()),
                       help="regulatory limits (ppb, comma-separated) to calibrate accept / reject "
                            f"/ lab decisions for [DON_LIMITS, default {_default_limits()}]")
    train.add_argument("--false-accept-target", type=_rate,
                       default=_env("DON_FALSE_ACCEPT_TARGET", _defaults()[0]),
                       help="alpha: bound on contaminated lots accepted / contaminated lots "
                            f"[DON_FALSE_ACCEPT_TARGET, default {_defaults()[0]}]")
    train.add_argument("--false-reject-target", type=_rate,
                       default=_env("DON_FALSE_REJECT_TARGET", _defaults()[1]),
                       help="beta: bound on clean lots rejected / clean lots "
                            f"[DON_FALSE_REJECT_TARGET, default {_defaults()[1]}]")

    train.add_argument("--reference-fraction", type=_fraction,
                       default=_env("DON_REFERENCE_FRACTION"),
                       help="share of rows (by a hash of hsi_id) kept in the model's reference "
                            "set, never fitted on; 0: the model keeps no reference set. Only the "
                            "first run of a model chooses it [DON_REFERENCE_FRACTION, default "
                            "0.1, later: the stored one]")
    train.add_argument("--accept-relabel", action="store_true",
                       default=_flag("DON_ACCEPT_RELABEL"),
                       help="train even when the data gives many rows of the stored reference "
                            "set other targets or spectra, or targets on another scale (a "
                            "deliberate relabel; metadata.json records it) [DON_ACCEPT_RELABEL]")

    versions = sub.add_parser("versions", help="list published versions of a model")
    _store_and_model(versions)
    versions.add_argument("--json", action="store_true", help="machine-readable output")

    show = sub.add_parser("show", help="print one version's metadata.json (the feature schema "
                                       "summarised; --full for the file as stored)")
    _store_and_model(show)
    show.add_argument("--version", type=int, default=None, help="default: the latest")
    show.add_argument("--full", action="store_true", help="metadata.json exactly as stored")

    gc = sub.add_parser("gc", help="remove leftovers of crashed publishes (staging directories, "
                                   "partial s3 versions and uploads); never a live publish")
    gc.add_argument("--store", default=_env("DON_STORE"), help="model store root [DON_STORE]")
    gc.add_argument("--model", default=_env("DON_MODEL"),
                    help="one model (default: every model in the store) [DON_MODEL]")
    gc.add_argument("--older-than", default=_env("DON_GC_OLDER_THAN", f"{DEFAULT_GC_AGE_S}s"),
                    help="only leftovers idle at least this long, e.g. 30m, 2h, 1d "
                         "[DON_GC_OLDER_THAN, default 1h]")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    return root


def _defaults() -> tuple[float, float]:
    from don_core.schema import FALSE_ACCEPT_TARGET, FALSE_REJECT_TARGET
    return FALSE_ACCEPT_TARGET, FALSE_REJECT_TARGET


def _default_limits() -> str:
    from don_core.schema import DECISION_THRESHOLDS_PPB
    return ",".join(str(v) for v in DECISION_THRESHOLDS_PPB)


def _limits(text) -> tuple[int, ...]:
    if isinstance(text, tuple):
        return text
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ppb integers like 1000,5000") \
            from None
    if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: limits must be distinct positive integers")
    return values


def _rate(text) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a rate strictly between 0 and 1")
    return value


def _fraction(text) -> float | None:
    from don_core.reference import MAX_FRACTION
    if text is None or isinstance(text, float):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= MAX_FRACTION:
        raise argparse.ArgumentTypeError(f"{text!r}: 0 (no reference set) or above 0 up to "
                                          f"{MAX_FRACTION}")
    return value


def _store_and_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=_env("DON_STORE"),
                   help="model store root: a path (PVC mount) or s3://bucket/prefix [DON_STORE]")
    p.add_argument("--model", default=_env("DON_MODEL"), help="model name, e.g. don-rf "
                                                                "[DON_MODEL]")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_args(argv)
    optional = {"gc": ("model",)}.get(args.command, ())
    missing = [f"--{k}" for k in ("data", "store", "model", "family")
               if hasattr(args, k) and not getattr(args, k) and k not in optional]
    if missing:
        print(f"error: {', '.join(missing)} required (or the DON_* variable)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return COMMANDS[args.command](args)
    except Exception as exc:  # one line for the Job's log; DON_DEBUG=1 for the traceback
        from don_core.artifact import ArtifactError
        from don_core.store import StoreError
        from training_job.data import DataError, SourceError
        if _flag("DON_DEBUG"):
            raise
        # 2: the input is wrong (fix the data or the options); 1: the job failed (storage,
        # network, a bug): rerunning later may work.
        bad_input = isinstance(exc, (DataError, ValueError))
        known = isinstance(exc, (DataError, SourceError, StoreError, ArtifactError, ValueError))
        cause = str(exc) if known else f"{type(exc).__name__}: {exc}"
        # A refusal with several facts (training_job/relabel.py) gives one line to each.
        lines = cause.splitlines() or [type(exc).__name__]
        if not getattr(exc, "one_line_per_fact", False):
            lines = lines[:1]
        print("error: " + "\n  ".join(lines), file=sys.stderr)
        return EXIT_BAD_INPUT if bad_input else EXIT_FAILED


def cmd_train(args) -> int:
    from training_job.progress import Progress
    from training_job.train import train
    with Progress() as say:
        _, uri, _ = train(data=args.data, store=args.store, model=args.model, family=args.family,
                          seed=args.seed, quick=args.quick, limits=_limits(args.limits),
                          alpha=_rate(args.false_accept_target),
                          beta=_rate(args.false_reject_target),
                          reference_fraction=args.reference_fraction,
                          accept_relabel=args.accept_relabel, progress=say)
    print(uri)
    return 0


def cmd_versions(args) -> int:
    from don_core.store import StoreError, open_store
    store = open_store(args.store)
    rows = []
    for version in store.list_versions(args.model):
        meta = store.read_metadata(args.model, version)
        cv = meta["metrics"]["cv"]["summary"]
        rows.append({"version": version, "family": meta["family"],
                     "family_option": _FAMILY_OPTION.get(meta["family"], meta["family"]),
                     "created": meta["created"],
                     "rows": meta["training_data"]["rows"], "cv": meta["metrics"]["cv"]["scheme"],
                     "r2_median": cv["r2"]["median"],
                     "balanced_accuracy_1000_median": cv["balanced_accuracy_1000"]["median"],
                     "uri": store.uri(args.model, version)})
    if not rows:
        raise StoreError(f"no published versions of {args.model} in {args.store}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'VERSION':>7}  {'FAMILY':<15}  {'CREATED':<20}  {'ROWS':>5}  {'R2':>6}  "
          f"{'BA@1000':>7}  URI")
    for r in rows:
        family = f"{r['family_option']} ({r['family']})"
        print(f"{r['version']:>7}  {family:<15}  {r['created']:<20}  {r['rows']:>5}  "
              f"{_fmt(r['r2_median'])}  {_fmt(r['balanced_accuracy_1000_median'], 7)}  {r['uri']}")
    return 0


def cmd_show(args) -> int:
    from don_core.store import StoreError, open_store
    store = open_store(args.store)
    version = args.version or store.latest(args.model)
    if version is None:
        raise StoreError(f"no published versions of {args.model} in {args.store}")
    meta = store.read_metadata(args.model, version)
    print(json.dumps(meta if args.full else summarise_metadata(meta), indent=2))
    # People read the decision figures; stdout stays the metadata.json document for scripts.
    if meta.get("calibration"):
        from training_job.calibration import format_table
        print(f"\ndecisions of {args.model} version {version} (repeated CV, held-out side of "
              f"each fold):\n{format_table({meta['family']: meta['calibration']})}",
              file=sys.stderr)
    return 0


def summarise_metadata(meta: dict) -> dict:
    """metadata.json for reading: 448 band names become one line (they are the schema's, which
    the fingerprint pins); `family_option` gives the family's --family name."""
    from don_core.schema import BAND_COLUMNS, N_BANDS
    schema = dict(meta["feature_schema"])
    if schema.get("columns") == list(BAND_COLUMNS):
        schema["columns"] = f"{N_BANDS} bands '{BAND_COLUMNS[0]}'..'{BAND_COLUMNS[-1]}' (--full lists them)"
    return {**meta, "family_option": _FAMILY_OPTION.get(meta["family"], meta["family"]),
            "feature_schema": schema}


def cmd_gc(args) -> int:
    from don_core.store import open_store, parse_age
    store = open_store(args.store)
    older_than = parse_age(args.older_than)
    models = [args.model] if args.model else store.models()
    lines = [line for model in models
             for line in store.collect_garbage(model, older_than, args.dry_run)]
    for line in lines:
        print(line)
    if not lines:
        print(f"nothing to clean up in {args.store} (leftovers idle at least {args.older_than})")
    return 0


def _fmt(value, width: int = 6) -> str:
    return f"{value:>{width}.3f}" if value is not None else f"{'n/a':>{width}}"


# family as stored in metadata.json -> its --family name
_FAMILY_OPTION = {family: option for option, family in FAMILY_ALIASES.items()}

COMMANDS = {"train": cmd_train, "versions": cmd_versions, "show": cmd_show, "gc": cmd_gc}
