"""``cohort.run.files.make_folder``, the one way run directories, data folders and ``--out``
folders are made (its refusals through the CLI: ``tests/test_bad_inputs.py``)."""

from __future__ import annotations

import threading

import pytest

from cohort.run.files import RunDirError, make_folder


def test_a_folder_is_made_with_its_parents_or_proved_creatable_leaving_nothing(tmp_path):
    make_folder(tmp_path / "a" / "b" / "run", "run_dir", "choose another run_dir=", keep=False)
    assert list(tmp_path.iterdir()) == []
    make_folder(tmp_path / "a" / "b" / "run", "run_dir", "choose another run_dir=")
    assert (tmp_path / "a" / "b" / "run").is_dir()
    make_folder(tmp_path / "a" / "b" / "run", "run_dir", "choose another run_dir=", keep=False)  # exists: kept
    assert (tmp_path / "a" / "b" / "run").is_dir()
    (tmp_path / "notes.txt").write_text("a file\n")
    with pytest.raises(RunDirError, match=r"^cannot create run_dir .*/notes.txt/run: .*/notes.txt is a file, not a"):
        make_folder(tmp_path / "notes.txt" / "run", "run_dir", "choose another run_dir=", keep=False)


def test_ranks_proving_one_new_folder_at_once_do_not_refuse_each_other(tmp_path):
    """Every rank of a new run checks its run directory at the same time (``plan_run``): one
    rank's folder, made a moment before another's mkdir, is no file in the way."""
    failures = []

    def prove():
        for _ in range(50):
            try:
                make_folder(tmp_path / "new" / "run", "run_dir", "choose another run_dir=", keep=False)
            except RunDirError as error:
                failures.append(str(error))

    threads = [threading.Thread(target=prove) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
