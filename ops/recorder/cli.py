"""`python -m ops recorder serve|migrate|pairs` and `python -m ops labresults import`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from don_core.contract import LAB_RESULTS_PATH


def add_parsers(sub) -> None:
    recorder = sub.add_parser("recorder", help="the prediction recorder service")
    rsub = recorder.add_subparsers(dest="recorder_command", required=True)
    serve = rsub.add_parser("serve", help="receive prediction records and lab results (migrates first)")
    migrate = rsub.add_parser("migrate", help="bring the database schema up to date (Alembic) and exit")
    for parser in (serve, migrate):
        parser.add_argument("--db", help="SQLAlchemy URL (default: $DON_RECORDER_DB_URL, the file named by "
                                         "$DON_RECORDER_DB_URL_FILE, else sqlite:///don-recorder.db)")
    env = os.environ.get
    serve.add_argument("--host", default=env("DON_RECORDER_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env("DON_RECORDER_PORT", "8080")))
    serve.add_argument("--token-file", default=env("DON_RECORDER_TOKEN_FILE"),
                       help="file holding the bearer token writes must send")
    serve.add_argument("--no-auth", action="store_true", help="accept writes without a token (loopback only)")
    serve.add_argument("--allow-unauthenticated-kserve", action="store_true",
                       default=env("DON_RECORDER_ALLOW_UNAUTHENTICATED_KSERVE", "") == "true",
                       help="accept KServe payload-logger events without a token (its logger cannot send one)")
    serve.add_argument("--retention-days", type=float, default=float(env("DON_RECORDER_RETENTION_DAYS", "90")))
    serve.add_argument("--max-rows", type=int, default=int(env("DON_RECORDER_MAX_ROWS", "10000000")),
                       help="rows kept per table; the oldest go first")
    serve.add_argument("--retention-interval", type=float,
                       default=float(env("DON_RECORDER_RETENTION_INTERVAL", "300")),
                       help="seconds between retention runs")
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate at start-up")
    pairs = rsub.add_parser("pairs", help="a stable version against its shadow on the same lab-matched lots")
    pairs.add_argument("--model", required=True)
    pairs.add_argument("--stable", required=True, type=_version, help="the version that served")
    pairs.add_argument("--candidate", required=True, type=_version, help="the version in shadow")
    pairs.add_argument("--url", default=env("DON_RECORDER_URL"),
                       help="the recorder (default $DON_RECORDER_URL); or --db to read the database directly")
    pairs.add_argument("--db", help="SQLAlchemy URL to read directly instead of through the recorder")
    pairs.add_argument("--json", action="store_true", help="print the JSON document (with the per-pair arrays)")

    lab = sub.add_parser("labresults", help="lab reference results")
    lsub = lab.add_subparsers(dest="labresults_command", required=True)
    imp = lsub.add_parser("import", help="import a CSV: sample_id, vomitoxin_ppb, method, measured_at")
    imp.add_argument("csv", help="the CSV file")
    imp.add_argument("--url", default=env("DON_RECORDER_URL"),
                     help="the recorder (default $DON_RECORDER_URL); or --db to write the database directly")
    imp.add_argument("--db", help="SQLAlchemy URL to write directly instead of through the recorder")
    imp.add_argument("--token-file", default=env("DON_RECORDER_TOKEN_FILE"))
    imp.add_argument("--partial", action="store_true", help="store the good rows even when some are bad")


def _version(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number")
    return int(text)


def _err(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    from ops.recorder import db, server
    if args.command == "recorder":
        if args.recorder_command == "pairs":
            return _pairs(args)
        url = args.db or server.db_url_from_env()
        if args.recorder_command == "migrate":
            engine = db.create_engine(url)
            db.migrate(engine)
            where = engine.url.render_as_string(hide_password=True)
            print(f"schema at revision {db.current_revision(engine)} ({where})")
            return 0
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        settings = server.Settings(
            db_url=url, host=args.host, port=args.port, token_file=args.token_file, no_auth=args.no_auth,
            allow_unauthenticated_kserve=args.allow_unauthenticated_kserve,
            limits=db.Limits(retention_days=args.retention_days, max_rows=args.max_rows),
            retention_interval=args.retention_interval, migrate=not args.no_migrate)
        try:
            server.serve(settings)
        except (ValueError, OSError) as exc:
            return _err(str(exc))
        return 0
    return _import(args)


def _import(args) -> int:
    from ops.recorder import db, labresults
    try:
        data = Path(args.csv).read_bytes()
    except OSError as exc:
        return _err(f"cannot read {args.csv}: {exc.strerror}")
    if args.db:
        try:
            parsed = labresults.parse_csv(data)
        except labresults.LabResultsError as exc:
            return _err(f"{args.csv}: {exc}")
        for line in parsed.errors:
            print(f"{args.csv}: {line}", file=sys.stderr)
        if parsed.errors and not args.partial:
            return _err(f"{len(parsed.errors)} bad row(s) in {args.csv}; nothing stored "
                        "(--partial keeps the good rows)")
        engine = db.create_engine(args.db)
        db.migrate(engine)
        stored = db.insert_lab_results(engine, parsed.rows)
        print(f"{stored} stored, {len(parsed.rows) - stored} duplicates, {len(parsed.errors)} rejected")
        return 0
    if not args.url:
        return _err("give --url (or $DON_RECORDER_URL) or --db")
    headers = {"Content-Type": "text/csv"}
    if args.token_file:
        headers["Authorization"] = f"Bearer {Path(args.token_file).read_text().strip()}"
    url = args.url.rstrip("/") + LAB_RESULTS_PATH + ("?partial=true" if args.partial else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=120) as resp:
            result = json.load(resp)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {"error": body[:300]}
        for line in doc.get("errors", []):
            print(f"{args.csv}: {line}", file=sys.stderr)
        return _err(f"{args.csv}: {doc.get('error')} (HTTP {exc.code})")
    except OSError as exc:
        return _err(f"cannot reach the recorder at {args.url}: {exc}")
    for line in result.get("errors", []):
        print(f"{args.csv}: {line}", file=sys.stderr)
    print(f"{result['stored']} stored, {result['duplicates']} duplicates, {result['rejected']} rejected")
    return 0


def _pairs(args) -> int:
    from don_core.contract import PAIRS_PATH
    from ops.recorder import db, pairs
    if args.stable == args.candidate:
        return _err(f"--stable and --candidate are both version {args.stable}: a pair needs two versions")
    if args.db:
        import sqlalchemy as sa
        try:
            engine = db.create_engine(args.db)
            where = engine.url.render_as_string(hide_password=True)
            if db.current_revision(engine) != db.HEAD:
                return _err(f"the database at {where} is not at schema revision {db.HEAD} "
                            "(python -m ops recorder migrate --db URL)")
            doc = pairs.report(engine, args.model, args.stable, args.candidate, detail=args.json)
        except sa.exc.ArgumentError as exc:
            return _err(f"--db {args.db[:80]!r} is not a database URL: {exc}")
        except sa.exc.SQLAlchemyError as exc:
            return _err(f"cannot read the database: {str(exc).splitlines()[0][:200]}")
    elif args.url:
        query = urllib.parse.urlencode({"model": args.model, "stable": args.stable, "candidate": args.candidate,
                                        "detail": int(args.json)})
        url = f"{args.url.rstrip('/')}{PAIRS_PATH}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=120) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as exc:
            return _err(f"the recorder refused: {_message(exc)} (HTTP {exc.code})")
        except OSError as exc:
            return _err(f"cannot reach the recorder at {args.url}: {exc}")
    else:
        return _err("give --url (or $DON_RECORDER_URL) or --db")
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(pairs.summary(doc))
    return 0


def _message(exc: urllib.error.HTTPError) -> str:
    body = exc.read().decode(errors="replace")
    try:
        return str(json.loads(body).get("error"))
    except (ValueError, AttributeError):
        return body[:300]
