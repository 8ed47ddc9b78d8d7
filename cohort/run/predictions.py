"""A run's saved predictions, written and read here only: training's ``predictions/{val,test}.npz``
(and ``best/``), ``cohort eval``'s ``eval/<checkpoint>/predictions/``, a teacher run's.

    logits  float32 [M, N, C]   each network's logits (M: ``config.member_names``), in file order
    labels  int64   [N]

``write_predictions`` writes one whole or not at all (``cohort.run.files.replacing``).
``read_predictions`` reads one back, and ``check_predictions`` checks one without reading its
arrays (before any process starts): what cohort did not write is one line naming the file and
the command that writes it again. Above all an object array: numpy loads one only by
unpickling it (``allow_pickle``), which runs code from the file, and otherwise says only
"Object arrays cannot be loaded when allow_pickle=False"; never loaded here.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cohort.run.files import RESUME, RunDirError, replacing, writing

ARRAYS = {"logits": ("f", 3, "floats [networks, samples, classes]"), "labels": ("iu", 1, "integers [samples]")}
"""Each array of a predictions file: its dtype kinds, its dimensions, and how an error describes it."""


def write_predictions(path: Path, logits: np.ndarray, labels: np.ndarray, then: str = RESUME) -> Path:
    """``path`` (its folder made if missing), whole or not at all; ``then``: what to do once a
    failed write's cause (a full disk) is fixed (``cohort.run.files.write_error``)."""
    with writing(path, then):
        path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, "wb", then) as f:
        np.savez(f, logits=logits.astype(np.float32), labels=labels.astype(np.int64))
    return path


HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
"""numpy's readers of the ``.npy`` header versions ``np.savez`` writes."""


def array_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's (shape, dtype) in an ``.npz``, read from its ``.npy`` header alone."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as member:
                version = np.lib.format.read_magic(member)
                read = HEADER_READERS.get(version)
                if read is None:
                    raise ValueError(f"an .npy format {version} cohort does not write")
                shape, _, dtype = read(member)
            headers[name.removesuffix(".npy")] = (shape, dtype)
    return headers


def check_predictions(path: Path, fix: str, members: int | None = None) -> tuple[int, int, int]:
    """(networks, samples, classes) of the predictions file ``path``, from its headers; else a
    one-line RunDirError naming the file, what is wrong and ``fix`` (the command that writes it
    again): not an ``.npz``, an array missing, an object array, another dtype or shape, other
    sample counts, or (given ``members``) logits of another number of networks."""

    def refused(problem: str) -> RunDirError:
        return RunDirError(f"{path} is not the predictions cohort writes ({problem}); {fix}")

    try:
        headers = array_headers(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, KeyError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)[:80]
        raise refused(f"not a readable .npz archive: {reason}") from None
    for name, (kinds, ndim, described) in ARRAYS.items():
        if name not in headers:
            raise refused(f"no array {name}; it holds {', '.join(sorted(headers)) or 'none'}")
        shape, dtype = headers[name]
        if dtype.hasobject:
            raise refused(f"{name} is an object array, which numpy reads only by unpickling code from the file")
        if dtype.kind not in kinds or len(shape) != ndim:
            raise refused(f"{name} is {dtype} of shape {shape}, not {described}")
    (networks, samples, classes), (labels,) = headers["logits"][0], headers["labels"][0]
    if samples != labels:
        raise refused(f"logits of {samples} samples but {labels} labels")
    if members is not None and networks != members:
        raise refused(f"logits of {networks} networks, but the run has {members}")
    return networks, samples, classes


def read_predictions(path: Path, fix: str, members: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The logits ``[M, N, C]`` and labels ``[N]`` of a predictions file, checked first
    (``check_predictions``) and loaded without unpickling anything."""
    check_predictions(path, fix, members)
    try:
        with np.load(path, allow_pickle=False) as saved:
            return saved["logits"], saved["labels"]
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as error:  # damaged past its headers
        raise RunDirError(f"{path} cannot be read ({type(error).__name__}: {str(error)[:80]}); {fix}") from None


def rewrite_fix(run_dir: Path, checkpoint: str) -> str:
    """How to write a run's predictions of ``checkpoint`` (``best`` or ``last``) again."""
    return (
        f"delete it and evaluate that checkpoint again with `cohort eval {run_dir} --checkpoint {checkpoint}` "
        f"(`cohort report` and `cohort dee` read its predictions, in {run_dir}/eval/, where the run's own are gone)"
    )
