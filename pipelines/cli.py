"""`recforge`: the command line. Each command calls the same pipelines/ function as its DAG task.

recforge simulate              write a synthetic event log into RECFORGE_HOME/landing
recforge simulate-traffic [--days N] [--base-url URL]
                               the simulated users ask the live server for lists, click and buy: landing events
recforge ingest --start D --end D
recforge ingest --source movielens|retailrocket|recforge --path FILE_OR_DIR
recforge ingest-stream [--replace]   the collector's closed segments (landing/stream/) as micro-batches
recforge validate-raw --start D --end D
recforge transform             dbt build
recforge train                 train, evaluate, register, gate
recforge evaluate              backtest the candidates, print metrics per model and segment, write the report
recforge tune [--model NAME]   tune the candidates' hyper-parameters now and store the best for training
recforge models list|compare|promote|rollback
                               the registered versions, their metrics and aliases; manual promotion, rollback
recforge diagnose USER [--k K] [--depth N]
                               why one user's list missed (or hit) their held-out items; text + HTML page
recforge experiments start|stop NAME | status | readout NAME [--as-of TIME] | off-policy NAME --target SHADOW
                               online experiments: run state, the readout (decision, report page), off-policy estimates
recforge publish [--alias A | --model-version N]
                               publish the champion's lists and index (another version: complete, not live)
recforge publish rollback [--to VERSION]   make the previous (or the named) version live again
recforge run                   everything above as Airflow DAG runs, then serve
recforge serve                 the HTTP API on the live publication
recforge status                where everything is, and what is live
recforge ui [--host ADDR]      Airflow UI (:8080) and MLflow UI (:5000), on 127.0.0.1 by default
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from pipelines.settings import InvalidSettings, Settings, describe_invalid_settings, get_settings


def _day(text: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def cmd_simulate(settings: Settings, args) -> None:
    from pipelines.simulate import simulate

    summary = simulate(settings)
    print(
        f"simulated {summary.days} days, {summary.users} users, {summary.items} items: "
        f"{summary.events_written} lines ({summary.clean_events} clean events, {summary.duplicates_injected} "
        f"duplicates, {sum(summary.malformed_injected.values())} malformed, {summary.bot_events} bot events) "
        f"-> {settings.landing_dir}"
    )


def cmd_simulate_traffic(settings: Settings, args) -> None:
    from pipelines.traffic.run import simulate_server_traffic

    overrides = {
        key: value for key, value in (("traffic_days", args.days), ("traffic_base_url", args.base_url)) if value
    }
    if overrides:
        settings = Settings(**{**settings.model_dump(exclude_unset=True), **overrides})
    run = simulate_server_traffic(settings)
    print(f"{run.summary()} under {settings.landing_dir}")


def cmd_ingest_stream(settings: Settings, args) -> None:
    from pipelines.ingest.stream import ingest_stream, stream_dir, stream_summary
    from serving.collector.segments import closed_segments

    result = ingest_stream(settings, replace=args.replace)
    print(stream_summary(result, len(closed_segments(stream_dir(settings)))))


def cmd_ingest(settings: Settings, args) -> None:
    from pipelines.ingest import ingest_interval, ingest_path

    if args.path is not None:
        print(ingest_path(settings, args.source, args.path).summary())
    elif args.start is not None:
        print(ingest_interval(settings, args.start, args.end).summary())
    else:
        raise SystemExit("recforge ingest: give --start (landing days) or --path (a file or directory to import)")


def cmd_validate_raw(settings: Settings, args) -> None:
    from pipelines.validation.checkpoints import validate_raw_batch

    print(validate_raw_batch(settings, args.start, args.end).summary())


def cmd_transform(settings: Settings, args) -> None:
    from pipelines.warehouse.transform import build_warehouse

    print(build_warehouse(settings).summary())


def cmd_train(settings: Settings, args) -> None:
    from pipelines.training.train import train_and_register

    print(train_and_register(settings).summary())


def cmd_evaluate(settings: Settings, args) -> None:
    from pipelines.training.evaluation import metrics_table, run_evaluation

    overrides = {key: value for key, value in (("eval_split", args.split), ("backtest_folds", args.folds)) if value}
    if overrides:
        settings = Settings(**{**settings.model_dump(exclude_unset=True), **overrides})
    run, report, run_id = run_evaluation(settings, args.models)
    print(f"split {run.data.split}; {len(run.data.folds)} folds; mean+-std over folds, after the business rules")
    print(metrics_table(run))
    print(f"report: {report}\nmlflow run: {run_id}")


def cmd_tune(settings: Settings, args) -> None:
    from pipelines.training.tuned_params import store_path
    from pipelines.training.tuning import run_tuning

    stored, run_id = run_tuning(settings, args.model)
    for name, record in stored.items():
        default = "n/a" if record.default_value is None else f"{record.default_value:.4f}"
        print(
            f"{name}: {record.params} ({record.metric} {record.best_value:.4f}, defaults {default}; "
            f"trials in mlflow run {record.run_id})"
        )
    print(f"stored in {store_path(settings)}; mlflow run: {run_id}")
    if not settings.tune_enabled:
        print("note: tune_enabled is false, so training does not use them until it is turned on")


def cmd_diagnose(settings: Settings, args) -> int:
    """Print one user's diagnosis, write its page; exit EXIT_UNKNOWN_USER for a user who gets the fallback."""
    from models.evaluation.diagnosis import FALLBACK
    from pipelines.reports.diagnosis_report import diagnosis_text
    from pipelines.training.diagnose import EXIT_UNKNOWN_USER, run_diagnosis

    diagnosis, page, index = run_diagnosis(settings, args.user, args.k, args.depth)
    print(diagnosis_text(diagnosis))
    print(f"page: {page}\nindex: {index}")
    if diagnosis.outcome == FALLBACK:
        print(
            f"recforge diagnose: user {args.user!r} is unknown to the champion: they get the popularity fallback",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN_USER
    return 0


def cmd_models(settings: Settings, args) -> None:
    from pipelines.training import registry as model_registry

    if args.action == "list":
        print(model_registry.format_versions(settings, model_registry.list_versions(settings)))
    elif args.action == "compare":
        print(model_registry.compare_versions(settings, args.first, args.second))
    elif args.action == "promote":
        print(model_registry.promote_version(settings, args.version, force=args.force))
    else:
        print(model_registry.rollback(settings))


def cmd_experiments(settings: Settings, args) -> None:
    """start/stop edit the run state in RECFORGE_HOME; status lists every declaration; readout decides."""
    from pipelines.experiments import state

    if args.experiments_action == "start":
        print(state.start_experiment(settings, args.name))
    elif args.experiments_action == "stop":
        print(state.stop_experiment(settings, args.name))
    elif args.experiments_action == "status":
        print("\n".join(state.status_lines(settings)))
    elif args.experiments_action == "off-policy":
        from pipelines.experiments.off_policy import evaluate_experiment, format_estimates
        from pipelines.warehouse.connection import connect

        with connect(settings, must_exist=True) as warehouse:
            estimates = evaluate_experiment(warehouse.con, args.name, args.target, clip=settings.ope_clip)
        print(format_estimates(estimates))
        pooled = [e for e in estimates if e.position is None and e.estimator == "snips"][0]
        print(
            f"off-policy CTR of {args.target!r} in {args.name!r}: {pooled.value:.4f} "
            f"[{pooled.ci_low:.4f}, {pooled.ci_high:.4f}] (SNIPS, {pooled.n_rows} logged rows, ESS {pooled.ess:.0f})"
        )
    else:
        from pipelines.experiments.readout import run_readout

        readout, page = run_readout(settings, args.name, args.as_of)
        print(readout.summary())
        print(f"report: {page}")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _version(text: str) -> str:
    """A registry version number, 1 or more, as `3` or `v3` (argparse names the argument on anything else)."""
    number = text.lower().removeprefix("v")
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"not a model version number (1 or more): {text!r}")
    return str(int(number))


def cmd_publish(settings: Settings, args) -> None:
    from pipelines.publication.publish import publish

    print(publish(settings, alias=args.alias, number=args.model_version).summary())


def cmd_publish_rollback(settings: Settings, args) -> None:
    from pipelines.publication.publish import current_version, rollback

    before = current_version(settings.published_dir)
    print(f"rolled back: {rollback(settings, args.to)} is live (was {before})")


def cmd_forget(settings: Settings, args) -> None:
    from pipelines.privacy.forget import forget_users, read_id_file

    ids = list(args.user or [])
    for path in args.file or []:
        ids += read_id_file(path)
    result = forget_users(settings, ids, request_id=args.request_id)
    print(result.summary())
    print(f"audit: monitoring.forget_requests and {result.report}")


def cmd_retention(settings: Settings, args) -> None:
    from pipelines.privacy.retention import purge_expired
    from serving.config import load_settings

    if args.days is not None:  # range-checked like the setting: one line naming RECFORGE_RETENTION_DAYS
        settings = load_settings(Settings, **{**settings.model_dump(exclude_unset=True), "retention_days": args.days})
    result = purge_expired(settings, progress=print)
    print(result.summary())


def cmd_status(settings: Settings, args) -> None:
    from pipelines.monitoring.status import status_lines

    print("\n".join(status_lines(settings)))


def cmd_health(settings: Settings, args) -> None:
    """Measure every service level now (what recforge_health does), print them, fail on a breach."""
    from datetime import UTC, datetime

    from pipelines.operations.health import enforce, measure

    run_id = f"cli__{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}"
    print(measure(settings, run_id).summary())
    enforce(settings, run_id)


def cmd_alert_rules(settings: Settings, args) -> None:
    """Render the Prometheus rules of the serving levels (the slo_* settings) and print where."""
    from pipelines.operations.alert_rules import RULES_FILE, write_rules

    print(write_rules(settings, Path(args.output) if args.output else RULES_FILE))


def cmd_reports(settings: Settings, args) -> None:
    """Rewrite reports/index.html from what exists now and print its path."""
    from pipelines.reports.index import write_index

    print(write_index(settings))


def cmd_drift(settings: Settings, args) -> None:
    from pipelines.monitoring.drift import check_drift

    print(check_drift(settings).summary())


def cmd_validate_marts(settings: Settings, args) -> None:
    from pipelines.validation.checkpoints import validate_marts

    print(validate_marts(settings).summary())


def cmd_run(settings: Settings, args) -> None:
    """Simulate (if there is no landing data yet), run every DAG through Airflow, report, then serve."""
    from pipelines.monitoring.status import status_lines
    from pipelines.runtime.orchestrate import run_pipeline

    settings.ensure_dirs()
    if not any((settings.landing_dir / "events").glob("date=*")):
        cmd_simulate(settings, args)
    outcome = run_pipeline(settings)
    print()
    print(outcome.summary())
    if settings.demo_experiment:
        _run_demo_experiment(settings)
    print("\n".join(status_lines(settings)))
    if os.environ.get("RECFORGE_SERVE", "1") != "0" and not args.no_serve:
        cmd_serve(settings, args)


def _run_demo_experiment(settings: Settings) -> None:
    """The short A/B after publishing (pipelines/runtime/ab_demo.py); nothing to test without a publication."""
    from pipelines.runtime.ab_demo import run_demo
    from serving.format import current_version

    if current_version(settings.published_dir) is None:
        print("demo A/B skipped: nothing is published yet")
        return
    print("\n".join(run_demo(settings).lines()))


def cmd_serve(settings: Settings, args) -> None:
    from serving.__main__ import main as serve
    from serving.config import get_settings as serving_settings

    serving_settings()  # a rejected RECFORGE_PORT etc. is reported like every other setting
    serve()


def cmd_backfill(settings: Settings, args) -> None:
    """Airflow backfill of recforge_ingest over [start, end), safe while `recforge ui` runs."""
    from pipelines.runtime.backfill import create_backfill

    print(create_backfill(settings, args.start, args.end).summary())


def cmd_ui(settings: Settings, args) -> None:
    """The Airflow UI (:8080) and the MLflow UI (:5000) on the embedded default's stores, on 127.0.0.1
    unless --host says otherwise (pipelines/runtime/ui.py says what is open to whom)."""
    from pipelines.runtime.airflow_home import configure_airflow
    from pipelines.runtime.ui import UiLaunch, owner_only
    from pipelines.training.tracking import rebase_local_store

    configure_airflow(settings)
    rebase_local_store(settings)  # a moved home: the MLflow UI must serve artifacts from here, not the old place
    owner_only(settings.airflow_home / "airflow.cfg")  # holds the JWT secret and the Fernet key
    launch = UiLaunch(settings, args.host).build()
    print(launch.summary(launch.admin_password()), flush=True)
    launch.run()


def cmd_scaled_up(settings: Settings, args) -> None:
    """The scaled-out configuration on this machine: Airflow (Celery, PostgreSQL), MLflow server."""
    import time

    from pipelines.runtime.processes import interrupt_on_sigterm
    from pipelines.runtime.scaled import ScaledStack, ensure_databases

    interrupt_on_sigterm()

    warehouse_db = (settings.pg_database,) if settings.dbt_target == "postgres" else ()  # the whole warehouse
    ensure_databases(settings, (args.airflow_db, args.mlflow_db, *warehouse_db))
    stack = ScaledStack(settings, args.airflow_db, args.mlflow_db, args.redis_url)
    with stack:
        print(
            f"scaled stack up: Airflow http://127.0.0.1:{stack.api_port} (CeleryExecutor, metadata in "
            f"postgresql://{settings.pg_host}/{args.airflow_db}, broker {args.redis_url}), MLflow {stack.mlflow_url} "
            f"(postgresql://{settings.pg_host}/{args.mlflow_db}); logs in {stack.logs_dir}. Ctrl-C stops it."
        )
        try:
            while True:
                stack.raise_if_exited()
                time.sleep(5)
        except KeyboardInterrupt:
            print("stopping")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recforge", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("simulate", help="write a synthetic event log and item catalog").set_defaults(func=cmd_simulate)
    traffic = sub.add_parser("simulate-traffic", help="simulated users ask the live server, click and buy")
    traffic.add_argument("--days", type=int, help="simulated days of visits (RECFORGE_TRAFFIC_DAYS)")
    traffic.add_argument("--base-url", help="the server over HTTP (RECFORGE_TRAFFIC_BASE_URL); default in-process")
    traffic.set_defaults(func=cmd_simulate_traffic)
    for name, func, help_text in (
        ("ingest", cmd_ingest, "ingest landing days [start, end), or import a data set with --source/--path"),
        ("validate-raw", cmd_validate_raw, "run the raw_events checkpoint on [start, end)"),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--start", type=_day, required=name != "ingest", help="first day, YYYY-MM-DD")
        command.add_argument("--end", type=_day, help="day after the last, YYYY-MM-DD (default: start + 1 day)")
        command.set_defaults(func=func)
        if name == "ingest":
            from pipelines.ingest.sources import SOURCES

            command.add_argument("--source", choices=sorted(SOURCES), default="recforge", help="adapter for --path")
            command.add_argument("--path", type=Path, help="file or directory to import through the adapter")
    stream = sub.add_parser("ingest-stream", help="ingest the collector's closed segments not ingested yet")
    stream.add_argument("--replace", action="store_true", help="re-ingest every closed segment (each replaces itself)")
    stream.set_defaults(func=cmd_ingest_stream)
    sub.add_parser("transform", help="dbt build: models and tests").set_defaults(func=cmd_transform)
    sub.add_parser("validate-marts", help="run the marts checkpoint").set_defaults(func=cmd_validate_marts)
    sub.add_parser("drift", help="compare the latest window with the baseline").set_defaults(func=cmd_drift)
    sub.add_parser("train", help="train, evaluate, register and gate").set_defaults(func=cmd_train)
    publish = sub.add_parser("publish", help="publish the champion's lists and item index")
    publish.set_defaults(func=cmd_publish)
    which = publish.add_mutually_exclusive_group()
    which.add_argument("--alias", help="publish the registry version behind this alias (e.g. challenger), not live")
    which.add_argument(
        "--model-version",
        metavar="N",
        type=lambda text: int(_version(text)),
        help="publish registry version N, not live",
    )
    publish_actions = publish.add_subparsers(dest="publish_action")
    rollback = publish_actions.add_parser("rollback", help="make the previous complete version live again")
    rollback.add_argument("--to", metavar="VERSION", help="a specific complete version instead of the previous one")
    rollback.set_defaults(func=cmd_publish_rollback)
    evaluate = sub.add_parser("evaluate", help="backtest the candidates and write the evaluation report")
    evaluate.add_argument("--models", nargs="+", help="a subset of train_candidates (default: all)")
    evaluate.add_argument("--split", choices=["global_time", "leave_last_n", "random_ratio"], help="split strategy")
    evaluate.add_argument("--folds", type=int, help="backtest folds (global_time cutoffs or random seeds)")
    evaluate.set_defaults(func=cmd_evaluate)
    tune = sub.add_parser("tune", help="tune the candidates' hyper-parameters and store the best")
    tune.add_argument("--model", metavar="NAME", help="one registered model (default: every tunable candidate)")
    tune.set_defaults(func=cmd_tune)
    diagnose = sub.add_parser("diagnose", help="why one user's list missed (or hit) their held-out items")
    diagnose.add_argument("user", help="the user id (as in marts.interaction_events)")
    diagnose.add_argument("--k", type=_positive, help="list length judged (default: eval_k)")
    diagnose.add_argument("--depth", type=_positive, default=100, help="top N of each generator (default 100)")
    diagnose.set_defaults(func=cmd_diagnose)
    models_parser = sub.add_parser("models", help="registered model versions: list, compare, promote, rollback")
    actions = models_parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="versions, aliases and key metrics")
    compare = actions.add_parser("compare", help="metric table of two versions")
    compare.add_argument("first", type=_version)
    compare.add_argument("second", type=_version)
    promote = actions.add_parser("promote", help="make a version champion (through the gate unless --force)")
    promote.add_argument("version", type=_version)
    promote.add_argument(
        "--force", action="store_true", help="promote even if the gate fails; records what it bypassed"
    )
    actions.add_parser("rollback", help="give champion back to the previous champion")
    models_parser.set_defaults(func=cmd_models)
    experiments = sub.add_parser("experiments", help="online experiments: start, stop, status, readout")
    experiment_actions = experiments.add_subparsers(dest="experiments_action", required=True)
    for action, text in (("start", "mark a declared experiment running"), ("stop", "mark it stopped")):
        experiment_actions.add_parser(action, help=text).add_argument("name")
    experiment_actions.add_parser("status", help="every declared experiment, its state, shares and last readout")
    readout = experiment_actions.add_parser("readout", help="read out one experiment and write its report page")
    readout.add_argument("name")
    readout.add_argument("--as-of", type=_moment, help="read the logs up to this UTC time (default: now)")
    off_policy = experiment_actions.add_parser(
        "off-policy", help="IPS, SNIPS and DR estimates of a shadow variant's CTR from the logged exploration slates"
    )
    off_policy.add_argument("name")
    off_policy.add_argument("--target", required=True, help="the shadow variant to score")
    experiments.set_defaults(func=cmd_experiments)
    run = sub.add_parser("run", help="the whole pipeline as Airflow DAG runs, then serve")
    run.add_argument("--no-serve", action="store_true", help="stop after the pipeline (same as RECFORGE_SERVE=0)")
    run.set_defaults(func=cmd_run)
    sub.add_parser("serve", help="serve the live publication over HTTP").set_defaults(func=cmd_serve)
    sub.add_parser("status", help="where everything is and what is live").set_defaults(func=cmd_status)
    ui = sub.add_parser("ui", help="Airflow and MLflow web UIs")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the UIs listen on (default 127.0.0.1: this host only; another address turns on "
        "MLflow's login, see README 'What is open')",
    )
    ui.set_defaults(func=cmd_ui)
    backfill = sub.add_parser("backfill", help="Airflow backfill of recforge_ingest; the UI's scheduler runs it")
    backfill.add_argument("--start", type=_day, required=True, help="first day, YYYY-MM-DD")
    backfill.add_argument("--end", type=_day, help="day after the last, YYYY-MM-DD (default: start + 1 day)")
    backfill.set_defaults(func=cmd_backfill)
    forget = sub.add_parser("forget", help="forget users in every store; audit without their ids")
    forget.add_argument("--user", action="append", metavar="ID", help="a user id (repeat for several)")
    forget.add_argument("--file", action="append", metavar="PATH", help="a file of user ids, one per line")
    forget.add_argument("--request-id", help="name the request (default: a new UUID); re-use it to finish a run")
    forget.set_defaults(func=cmd_forget)
    retention = sub.add_parser("retention", help="purge events older than RECFORGE_RETENTION_DAYS from every store")
    retention.add_argument("--days", type=int, help="this many days instead of the setting (0: nothing is purged)")
    retention.set_defaults(func=cmd_retention)
    sub.add_parser("reports", help="print the path of reports/index.html").set_defaults(func=cmd_reports)
    sub.add_parser("health", help="measure every service level now; fail naming a breached one").set_defaults(
        func=cmd_health
    )
    rules = sub.add_parser("alert-rules", help="render deploy/prometheus/rules.yml from the slo_* settings")
    rules.add_argument("--output", help="write here instead of deploy/prometheus/rules.yml")
    rules.set_defaults(func=cmd_alert_rules)
    scaled = sub.add_parser("scaled-up", help="Airflow on PostgreSQL + Celery/Redis and an MLflow server, no Docker")
    scaled.add_argument("--airflow-db", default="airflow")
    scaled.add_argument("--mlflow-db", default="mlflow")
    scaled.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    scaled.set_defaults(func=cmd_scaled_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "start", None) is not None and getattr(args, "end", None) is None:
        args.end = args.start + timedelta(days=1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "mlflow", "alembic", "faiss"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = get_settings()
    except InvalidSettings as error:
        print(f"recforge {args.command}: error: {error}", file=sys.stderr)
        return 1
    settings.ensure_dirs()
    try:
        status = args.func(settings, args)
    except KeyboardInterrupt:
        return 130
    except ValidationError as error:  # settings rebuilt from command-line options (evaluate --folds)
        print(f"recforge {args.command}: error: {describe_invalid_settings(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # one clear line for the user; the traceback is in the log above
        logging.getLogger("recforge").debug("failure", exc_info=True)
        print(f"recforge {args.command}: error: {error}", file=sys.stderr)
        return 1
    return status or 0  # a command may return its own exit status (diagnose: an unknown user)


if __name__ == "__main__":
    sys.exit(main())
