"""Rank 0's experiment trackers during training (``track:``): the tracked runs mirror
``metrics.jsonl``, on a thread of their own, so that tracking never stops training.

The recorder (``cohort.train.recorder``) hands this part the rows it appends to ``metrics.jsonl``,
and, when the run starts, the rows the file already holds. Each row becomes metrics at its
global ``step`` (``tracked_metrics``), logged only when the step is past the tracked run's last
(``tracking.json``'s ``last_step``, ``cohort.run.tracking``): a resumed or requeued run continues
its tracked run without logging a step twice, and a tracker added on resume, or one that was
down for a while, catches up from the file. The resolved config goes in as the run's parameters
(run-neutral keys aside: MLflow's parameters cannot change), the run directory's path as a note,
and at the end ``cohort report``'s files and the final table as artefacts.

Every call into a tracker runs on one thread, fed through a queue: a slow or dead server delays
nothing on the training ranks (which would otherwise wait for rank 0 at the next collective). A
tracker that fails is one warning line and is dropped for the rest of the process.
"""

from __future__ import annotations

import atexit
import queue
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cohort.config import RUN_NEUTRAL_KEYS, CohortConfig, config_to_dict
from cohort.run.directory import RunDir
from cohort.run.trackers import Tracker, flatten
from cohort.run.tracking import open_tracker, read_record, settings, tracked_metrics, warn, write_record

FINISH_TIMEOUT_S = 120.0
"""How long the end of training waits for the trackers to write what is queued (a server's upload)."""
EXIT_TIMEOUT_S = 15.0
"""How long a process that stops early (a stop signal, an error) waits for them."""


class Tracking:
    """The trackers ``track:`` turns on, owned by rank 0's recorder; does nothing when none is on."""

    def __init__(self, config: CohortConfig, run: RunDir, names: list[str], training_keys: list[str]):
        self.config, self.run, self.names, self.training_keys = config, run, names, training_keys
        self.where = settings(config, run)
        self.trackers: dict[str, Tracker] = {}
        self.record: dict[str, dict] = {}
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self.thread: threading.Thread | None = None

    def start(self, rows: list[dict]) -> None:
        """Open the tracked runs (continuing those of ``tracking.json``) and log the rows the run
        already holds past their last step; returns at once."""
        if not self.where:
            return
        self.thread = threading.Thread(target=self.work, name="cohort-tracking", daemon=True)
        self.thread.start()
        atexit.register(self.stop)
        self.jobs.put(lambda: self.open(rows))

    def log(self, rows: list[dict]) -> None:
        """One evaluation's rows (as appended to ``metrics.jsonl``); returns at once."""
        if self.thread is not None:
            self.jobs.put(lambda: self.sync(rows))

    def finish(self, table: str) -> None:
        """After the last epoch (or when a finished run is started again): ``cohort report``'s files
        and the final table (``table``; none: this process evaluated nothing) as artefacts, the
        tracked runs closed as finished; waits for them up to ``FINISH_TIMEOUT_S``."""
        if self.thread is None:
            return
        self.jobs.put(lambda: self.keep_files(table))
        self.close("FINISHED", FINISH_TIMEOUT_S)

    def stop(self) -> None:
        """At the exit of a process that did not finish (stopped to be resumed, or failed): the
        tracked runs closed as killed, as far as they still can be (W&B's own exit hook may have
        closed its run, or its service gone with a signal to the process group): quietly, since
        resuming opens them again."""
        self.close("KILLED", EXIT_TIMEOUT_S, quiet=True)

    # --- on the tracking thread -----------------------------------------------------------

    def work(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job()
            except Exception as error:  # a job of every tracker (the report's files): say it, go on
                say(f"tracking: {type(error).__name__}: {first_line(error)}; training goes on")

    def close(self, status: str, timeout: float, quiet: bool = False) -> None:
        atexit.unregister(self.stop)
        thread, self.thread = self.thread, None
        if thread is None:
            return
        self.jobs.put(lambda: self.each(lambda tracker: tracker.close(status), quiet))
        self.jobs.put(None)
        thread.join(timeout)
        if thread.is_alive():
            print(
                f"cohort: warning: the trackers did not finish writing within {timeout:g} s; "
                f"{self.run.metrics_file} holds every row, and the next start (resume=auto) catches them up",
                flush=True,
            )

    def each(self, action: Callable[[Tracker], None], quiet: bool = False) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                action(tracker)
            except Exception as error:  # tracking never stops training
                if not quiet:
                    warn(name, error)
                del self.trackers[name]

    def open(self, rows: list[dict]) -> None:
        self.record = read_record(self.run)
        tree = {k: v for k, v in config_to_dict(self.config).items() if k not in RUN_NEUTRAL_KEYS}
        params = flatten(tree)
        for name, where in self.where.items():
            try:
                tracker, self.record[name] = open_tracker(name, where, self.record.get(name), self.run)
                tracker.running()
                tracker.params(params)
            except Exception as error:
                warn(name, error)
                continue
            self.trackers[name] = tracker
        write_record(self.run, self.record)
        self.sync(rows)

    def sync(self, rows: list[dict]) -> None:
        """Log the rows whose step is past each tracked run's last, step by step, recording each."""
        by_step = tracked_metrics(rows, self.names, self.training_keys)
        for step in sorted(by_step):
            for name, tracker in list(self.trackers.items()):
                if step <= self.record[name]["last_step"]:
                    continue  # already there: a redone evaluation after a resume, or a backfill
                try:
                    tracker.log(by_step[step], step)
                except Exception as error:
                    warn(name, error)
                    del self.trackers[name]
                    continue
                self.record[name]["last_step"] = step
            write_record(self.run, self.record)

    def keep_files(self, table: str) -> None:
        from cohort.evaluate.report import build_report

        files = [(self.run.config_file, "run"), (self.run.metrics_file, "run")]
        try:
            report, figures, _ = build_report([str(self.run.path)])
            files += [(path, "report") for path in (report, *figures)]
        except Exception as error:  # the figures are a courtesy: the rows are in already
            say(f"no report for the trackers ({type(error).__name__}: {first_line(error)})")
        with tempfile.TemporaryDirectory() as folder:
            final = Path(folder) / "final_table.txt"
            final.write_text(table + "\n")
            for path, where in [(final, "report")] * bool(table) + files:
                self.each(lambda tracker, path=path, where=where: tracker.artifact(path, where))


def first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:200]


def say(text: str) -> None:
    print(f"cohort: warning: {text}", file=sys.stderr, flush=True)
