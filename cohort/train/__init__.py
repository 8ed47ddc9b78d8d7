"""Training, one rank per process: ``python -m cohort.train CONFIG [key=value ...]`` (what
``cohort train``, ``cohort submit`` and ``sbatch`` start) enters at ``cohort.train.worker``."""
