"""Recording, late, the parent runs whose pipeline could not reach the tracking store as it ended."""

from __future__ import annotations

import logging
import shutil

from src.tracking.parent import close_late, pending_outcomes
from src.tracking.stage_runs import records_folder

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Record, late, the parent runs whose pipeline could not reach the tracking store as it ended.

    make runs this before its targets when such a run is kept in `.pipeline/`:
    the first target that reaches the tracking server (and the S3 behind it)
    logs what was missing and ends the run with its true status. A store still
    out of reach is left for the next target, quietly. In team mode make runs it
    before every target that uses the tracking server, with `--reach`: a server
    that does not answer within seconds is named in one line, and the target
    does not start (an S3 that does not answer is named by the target itself).
    """
    import argparse

    from src.cli import one_line
    from src.logs import setup_logging
    from src.tracking.client import import_mlflow

    parser = argparse.ArgumentParser(prog="python -m src.pipeline.late", description=main.__doc__)
    parser.add_argument("--command", default="a later make target", help="the command that runs this, for the note")
    parser.add_argument("--reach", action="store_true", help="first check that the tracking server answers")
    arguments = parser.parse_args(argv)
    setup_logging()
    if arguments.reach:
        from src.cli import fail
        from src.tracking.client import silent_server

        down = silent_server()
        if down:
            fail(f"{arguments.command}: {down}")
    pending = pending_outcomes()
    if not pending:
        return
    client = import_mlflow().MlflowClient()
    for run_id, kept in pending.items():
        try:
            if client.get_run(run_id).info.status != "RUNNING":  # ended meanwhile, by hand or by end_orphans
                shutil.rmtree(records_folder(run_id), ignore_errors=True)
                continue
            status = close_late(client, run_id, kept, arguments.command)
        except Exception as error:
            logger.debug("run %s is still not recorded: %s", run_id, one_line(error))
            continue
        logger.warning("recorded run %s late: %s; its pipeline could not reach the tracking store", run_id, status)


if __name__ == "__main__":
    main()
