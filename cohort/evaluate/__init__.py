"""Everything that reads a trained cohort: predictions, metrics, ``cohort eval`` (one process,
or ``python -m cohort.evaluate.worker`` per rank), ``cohort report``, ``cohort dee``, ``cohort study``."""
