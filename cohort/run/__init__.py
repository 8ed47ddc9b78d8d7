"""The run directory and everything in it: files written whole, the run's contract, its hold,
checkpoints, model selection, the teachers' run, the shared-file-system check, ``cohort
status``, and the opening of a run before training (``open_run``)."""
