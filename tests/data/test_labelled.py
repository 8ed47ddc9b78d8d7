"""Which training samples are labelled in a semi-supervised run (no process, no FFCV)."""

import numpy as np
import pytest

from cohort.config import DataConfig
from cohort.data.folder import DataError
from cohort.data.labelled import choose_labelled, labelled_set, read_index_file, train_labels

LABELS = np.repeat(np.arange(5), [40, 30, 20, 9, 1])


def test_the_choice_is_class_balanced_fixed_and_keeps_one_sample_of_every_class():
    chosen = choose_labelled(LABELS, 0.1, seed=0)
    assert np.bincount(LABELS[chosen]).tolist() == [4, 3, 2, 1, 1]
    assert np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(chosen, choose_labelled(LABELS, 0.1, seed=0))
    assert not np.array_equal(chosen, choose_labelled(LABELS, 0.1, seed=1))
    assert len(choose_labelled(LABELS, 1.0, seed=0)) == len(LABELS)


def test_a_run_reads_its_labelled_set_from_the_beton_or_a_file(digits_root, tmp_path):
    labels = train_labels(digits_root)
    data = DataConfig(root=str(digits_root), labelled_fraction=0.3)
    chosen = labelled_set(data)
    assert abs(len(chosen) - 0.3 * len(labels)) <= 10
    assert labelled_set(DataConfig(root=str(digits_root))) is None
    (tmp_path / "l.txt").write_text("\n".join(map(str, chosen[::-1])) + "\n")
    np.save(tmp_path / "l.npy", chosen)
    for name in ("l.txt", "l.npy"):
        got = labelled_set(DataConfig(root=str(digits_root), labelled_indices=str(tmp_path / name)))
        np.testing.assert_array_equal(got, chosen)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0\n5\n1000\n", r"index 1000 is outside 0\.\.99 .*fix the file"),
        ("0\n-1\n", r"index -1 is outside 0\.\.99"),
        ("3\n4\n3\n", r"index 3 is listed twice; list each sample once"),
        ("1.5\n", r"integers only"),
        ("a b\n", r"not a \.npy array or a text file"),
    ],
)
def test_a_bad_label_file_is_a_one_line_error_naming_the_key(tmp_path, text, message):
    path = tmp_path / "labelled.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        read_index_file(path, 100)
    assert "data.labelled_indices" in str(error.value) and "\n" not in str(error.value)
