import hashlib
import json
import pickle
import re

import numpy as np
import pytest
import torch

from cohort.data.folder import DataError, read_meta
from cohort.data.loader import MemberLoader
from tests.conftest import run_cli


def test_digits_folder_has_three_disjoint_splits_and_meta(digits_root):
    meta = read_meta(digits_root)
    assert meta["num_classes"] == 10 and meta["image_size"] == 32
    assert meta["sizes"] == {"train": 1258, "val": 180, "test": 359}
    assert sum(meta["sizes"].values()) == 1797  # every scikit-learn digit, once


def write_fake_cifar10(folder, per_batch=8):
    """A CIFAR-10 python archive in torchvision's on-disk format, with known pixels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return batches


def test_cifar_conversion_from_the_on_disk_format(tmp_path):
    batches = write_fake_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    result = run_cli(
        "data", "cifar10", "--out", str(tmp_path / "out"), "--source", str(tmp_path / "src"), "--no-download"
    )
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 36, "val": 4, "test": 8} and meta["classes"][3] == "class3"
    test = MemberLoader(
        tmp_path / "out",
        "test",
        member=0,
        replica=0,
        replicas=1,
        seed=0,
        policy="none",
        batch_size=8,
        num_workers=1,
        device=torch.device("cpu"),
        train=False,
    )
    batch = next(iter(test.epoch(0)))
    images, labels = batch.images, batch.labels
    data, expected_labels = batches["test_batch"]
    assert labels.tolist() == expected_labels
    np.testing.assert_array_equal(images.numpy(), data.reshape(-1, 3, 32, 32))


def test_val_from_last_holds_the_training_sets_last_images_as_diffdmls_cifar_split(tmp_path, cli_here):
    # Luminova1996/Diff-DML dataset_utils/cifar.py L128-136: train on images 0..44,999, validate on 45,000..49,999.
    batches = write_fake_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    source = ["--source", str(tmp_path / "src"), "--no-download", "--val-size", "6"]
    result = cli_here("data", "cifar10", "--out", str(tmp_path / "out"), *source, "--val-from", "last")
    assert result.returncode == 0, result.stderr
    labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]  # the 40 in file order
    assert split_labels(tmp_path / "out", "train") == labels[:34]
    assert split_labels(tmp_path / "out", "val") == labels[34:]
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["val_from"] == "last"
    assert cli_here("data", "cifar10", "--out", str(tmp_path / "random"), *source).returncode == 0
    assert split_labels(tmp_path / "random", "val") != labels[34:]  # the default: a fixed random draw
    assert "val_from" not in json.loads((tmp_path / "random" / "meta.json").read_text())
    refused = cli_here("data", "imagefolder", "--out", str(tmp_path / "if"), "--val-from", "last")
    assert refused.returncode == 2 and "all be of the last classes; use --val-from random" in refused.stderr


def test_missing_folder_names_the_command(tmp_path):
    with pytest.raises(DataError, match=r"meta\.json is missing; write the data with `cohort data"):
        read_meta(tmp_path / "nowhere")


def test_cifar_without_archive_and_no_download_is_a_one_line_error(tmp_path, cli_here):
    result = cli_here("data", "cifar100", "--out", str(tmp_path / "out"), "--source", str(tmp_path), "--no-download")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "cifar-100-python is missing" in result.stderr


def test_imagefolder_conversion_with_mixed_image_sizes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 30), ("val", 4)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    result = run_cli(
        "data",
        "imagefolder",
        "--out",
        str(tmp_path / "out"),
        "--train-dir",
        str(tmp_path / "train"),
        "--test-dir",
        str(tmp_path / "val"),
        "--max-resolution",
        "48",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    meta = read_meta(tmp_path / "out")
    assert meta["classes"] == ["cat", "dog"] and meta["sizes"] == {"train": 59, "val": 1, "test": 8}
    loader = MemberLoader(
        tmp_path / "out",
        "test",
        member=0,
        replica=0,
        replicas=1,
        seed=0,
        policy="none",
        batch_size=8,
        num_workers=1,
        device=torch.device("cpu"),
        train=False,
    )
    batch = next(iter(loader.epoch(0)))
    images, labels = batch.images, batch.labels
    assert images.shape == (8, 3, 48, 48) and labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_imagefolder_without_directories_is_a_one_line_error(tmp_path, cli_here):
    result = cli_here(
        "data",
        "imagefolder",
        "--out",
        str(tmp_path / "out"),
        "--train-dir",
        str(tmp_path / "nope"),
        "--test-dir",
        str(tmp_path / "nope"),
    )
    assert (
        result.returncode == 2
        and result.stderr.strip() == f"cohort: error: {tmp_path / 'nope'} is not a directory of class folders"
    )


def write_folders(root, layout: dict, seed: int = 0) -> None:
    """JPEGs of mixed sizes in ``root/<split>/<class>/``, ``layout``: {split: {class: count}}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, classes in layout.items():
        for cls, count in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(
                    0, 256, size=(int(rng.integers(30, 70)), int(rng.integers(30, 70)), 3), dtype=np.uint8
                )
                Image.fromarray(pixels).save(folder / f"{i}.jpg")


def test_imagefolder_writer_options_and_its_size_estimate(tmp_path):
    from ffcv.fields.rgb_image import IMAGE_MODES

    from cohort.data.beton import read_tables

    # 20 images in all, fewer than the estimate's sample of 16 per split: the estimate is exact.
    write_folders(tmp_path, {"train": {"a": 7, "b": 7}, "val": {"a": 3, "b": 3}})
    stored = {}
    for mode in ("raw", "jpg"):
        result = run_cli(
            "data",
            "imagefolder",
            "--out",
            str(tmp_path / mode),
            "--train-dir",
            str(tmp_path / "train"),
            "--test-dir",
            str(tmp_path / "val"),
            "--max-resolution",
            "32",
            "--workers",
            "1",
            "--write-mode",
            mode,
            "--jpeg-quality",
            "50",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"writing 20 images into {tmp_path / mode}, about " in result.stdout
        assert f"{mode}, longest side 32, JPEG quality 50" in result.stdout
        number, unit = result.stdout.split("about ")[1].split(" (")[0].split()
        estimate = float(number) * 1024 ** ["B", "KiB", "MiB", "GiB"].index(unit)
        tables = [read_tables(tmp_path / mode / f"{split}.beton") for split in ("train", "val", "test")]
        stored[mode] = sum(int(t.allocation["size"].sum()) for t in tables)  # image bytes and labels
        images = sum(
            int((t.metadata["f0"]["width"].astype(int) * t.metadata["f0"]["height"] * 3).sum()) for t in tables
        )
        assert {int(m) for t in tables for m in t.metadata["f0"]["mode"]} == {IMAGE_MODES[mode]}
        if mode == "raw":
            assert images == stored["raw"] and estimate == pytest.approx(images, rel=2e-3)  # 3 significant digits
        else:
            assert estimate == pytest.approx(stored["jpg"], rel=2e-3)
    assert stored["jpg"] < stored["raw"]


def test_imagefolder_with_other_classes_or_no_images_is_a_one_line_error(tmp_path, cli_here):
    write_folders(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "c": 1}})
    result = cli_here(
        "data",
        "imagefolder",
        "--out",
        str(tmp_path / "out"),
        "--train-dir",
        str(tmp_path / "train"),
        "--test-dir",
        str(tmp_path / "val"),
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert (
        f"{tmp_path / 'train'} and {tmp_path / 'val'} have different class folders (only in train: b; only in val: c)"
        in result.stderr
        and "give both the same class folders" in result.stderr
    )
    (tmp_path / "empty" / "a").mkdir(parents=True)
    result = cli_here(
        "data",
        "imagefolder",
        "--out",
        str(tmp_path / "out"),
        "--train-dir",
        str(tmp_path / "empty"),
        "--test-dir",
        str(tmp_path / "val"),
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"{tmp_path / 'empty'} holds no images in class folders" in result.stderr
    assert not (tmp_path / "out").exists()


def test_ffcvs_progress_bars_stay_out_of_logs(tmp_path):
    # stderr is a pipe here, as in a SLURM log: FFCV's writer bars (one per split) are not drawn.
    result = run_cli("data", "digits", "--out", str(tmp_path / "digits"))
    assert result.returncode == 0 and "it/s]" not in result.stderr and "%|" not in result.stderr


def tiny_folder(out, side: int, n: int = 12) -> dict:
    """A three-split folder of ``n`` random ``side``-pixel images, as `cohort data` writes it."""
    from cohort.data.datasets import write_arrays

    rng = np.random.default_rng(side)
    images = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    return write_arrays(out, "tiny", images, labels, images[:4], labels[:4], val_fraction=0.25, classes=["a", "b"])


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "data"
    tiny_folder(root, 8)
    return root


@pytest.mark.parametrize(
    "meta, message",
    [
        (
            [],
            r"meta\.json must hold a JSON object \(num_classes, image_size, mean, std, \.\.\.\), not list; "
            r"rewrite the folder with `cohort data <dataset> --out .*`$",
        ),
        ({}, r"meta\.json has no key num_classes \(an integer >= 1\); rewrite the folder with `cohort data <dataset>"),
        ("drop:mean", r"meta\.json has no key mean \(a list of 3 numbers\); rewrite the folder with `cohort data tiny"),
        ("drop:image_size", r"meta\.json has no key image_size \(an integer >= 1\)"),
        ({"num_classes": "10"}, r"meta\.json: num_classes must be an integer >= 1, got '10'; rewrite the folder"),
        ({"num_classes": 0}, r"meta\.json: num_classes must be an integer >= 1, got 0"),
        ({"image_size": 32.0}, r"meta\.json: image_size must be an integer >= 1, got 32\.0"),
        ({"mean": "0.5"}, r"meta\.json: mean must be a list of 3 numbers, got '0\.5'"),
        ({"mean": [0.5, 0.5]}, r"meta\.json: mean must be a list of 3 numbers, got \[0\.5, 0\.5\]"),
        ({"std": [0.2, 0.0, 0.2]}, r"meta\.json: std must be a list of 3 numbers > 0, got \[0\.2, 0\.0, 0\.2\]"),
    ],
    ids=[
        "list",
        "empty",
        "no-mean",
        "no-image-size",
        "classes-str",
        "classes-0",
        "size-float",
        "mean-str",
        "mean-short",
        "std-zero",
    ],
)
def test_a_meta_json_without_its_fields_names_the_file_and_the_key(tmp_path, tiny_root, meta, message):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    written = json.loads((root / "meta.json").read_text())
    if isinstance(meta, str):
        written.pop(meta.removeprefix("drop:"))
    elif isinstance(meta, dict) and meta:
        written.update(meta)
    else:
        written = meta
    (root / "meta.json").write_text(json.dumps(written))
    with pytest.raises(DataError, match=message) as error:
        read_meta(root)
    assert str(root / "meta.json") in str(error.value) and "\n" not in str(error.value)


def test_a_data_root_that_is_a_file_is_neither_read_nor_written(tmp_path):
    from cohort.data.datasets import ensure_data

    notes = tmp_path / "notes.txt"
    notes.write_text("not data")
    for check in (read_meta, lambda root: ensure_data(root, "digits")):
        with pytest.raises(DataError, match=r"^data\.root .*notes\.txt is a file, not a folder; set data\.root to a"):
            check(notes)
    assert notes.read_text() == "not data"


def test_splits_of_another_image_size_than_meta_json_says_are_refused(tmp_path, tiny_root):
    import shutil

    from cohort.data.folder import check_data

    assert check_data(tiny_root)["image_size"] == 8
    root, other = tmp_path / "data", tmp_path / "other"
    shutil.copytree(tiny_root, root)
    tiny_folder(other, 6)
    shutil.copy(other / "val.beton", root / "val.beton")  # a val split written at another size
    with pytest.raises(
        DataError,
        match=r"val\.beton holds images of 6×6 px \(sample 0\) but .*meta\.json says "
        r"image_size 8: every split's images must be that size; rewrite the data "
        r"folder with `cohort data tiny --out .*`$",
    ):
        check_data(root)


# --- sample pointers and checksums -------------------------------------------------------------


def metadata_map(beton, tables):
    """The per-sample metadata of ``beton``, mapped writable (it follows the header and field list)."""
    from cohort.data.beton import FIELD_DESCRIPTOR, HEADER

    offset = HEADER.itemsize + len(tables.field_names) * FIELD_DESCRIPTOR.itemsize
    return np.memmap(beton, dtype=tables.metadata.dtype, mode="r+", offset=offset, shape=(tables.num_samples,))


WRAPS = 2**64 - 1024
"""A pointer whose ``ptr + size`` wraps around 2**64 to a small number, in the file."""


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            "entry-past-end",
            r"its allocation table puts sample 0's data at bytes (\d+)\.\.\d+, past the end of the file",
        ),
        (
            "entry-wrapping",
            rf"its allocation table puts sample 0's data at bytes {WRAPS}\.\.\d+, past the end of the file",
        ),
        ("image-past-end", r"sample 5's image points to byte (\d+), past the end of the file \(\d+ bytes\)"),
        ("image-off-its-data", r"sample 5's image points to byte \d+, where none of its allocated data starts"),
    ],
    ids=["entry-past-end", "entry-wrapping", "image-past-end", "image-off-its-data"],
)
def test_sample_pointers_past_the_end_of_a_beton_are_refused(tmp_path, digits_root, edit, message):
    """FFCV's loader follows these unchecked and reads other bytes as the image (checked by
    hand: sample 5 then loads with other pixels, no error)."""
    import shutil

    from cohort.data.beton import ALLOCATION, read_tables
    from cohort.data.folder import check_data

    check_data(digits_root)  # the intact data passes
    root = tmp_path / "data"
    shutil.copytree(digits_root, root)
    beton = root / "train.beton"
    tables, end = read_tables(beton), beton.stat().st_size
    images = metadata_map(beton, tables)["f0"]
    if edit.startswith("entry"):
        table = np.memmap(beton, dtype=ALLOCATION, mode="r+", offset=int(tables.header["alloc_table_ptr"]))
        assert table["sample_id"][0] == 0
        table["ptr"][0] = end + 4096 if edit == "entry-past-end" else WRAPS
        if edit == "entry-wrapping":  # the image follows its entry, as a writer would record both
            images["data_ptr"][0] = WRAPS
        table.flush()
    else:
        images["data_ptr"][5] = end + 4096 if edit == "image-past-end" else images["data_ptr"][5] + 1
    images.flush()
    with pytest.raises(DataError) as error:
        check_data(root)
    text = str(error.value)
    assert re.search(rf"^{re.escape(str(beton))} is truncated or corrupt: {message}", text), text
    assert text.endswith(f"; rewrite it with `cohort data digits --out {root}`") and "\n" not in text


def test_the_written_checksums_are_each_files_sha256(digits_root):
    meta = read_meta(digits_root)
    for split in ("train", "val", "test"):
        data = (digits_root / f"{split}.beton").read_bytes()
        assert meta["checksums"][f"{split}.beton"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def flip_an_image_byte(beton) -> None:
    """Flip one bit of sample 3's stored pixels: the file stays a valid .beton."""
    from cohort.data.beton import read_tables

    at = int(read_tables(beton).metadata["f0"]["data_ptr"][3]) + 100
    with open(beton, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 1]))


def test_verify_passes_on_a_written_folder_and_names_a_changed_file(tmp_path, digits_root):
    import shutil

    from cohort.data.folder import check_data, verify_data

    root = tmp_path / "data"
    shutil.copytree(digits_root, root)
    files, count, seconds = verify_data(root)
    assert (files, count) == (3, sum((root / f"{s}.beton").stat().st_size for s in ("train", "val", "test")))
    assert seconds >= 0
    recorded = read_meta(root)["checksums"]["val.beton"]["sha256"]
    flip_an_image_byte(root / "val.beton")
    found = hashlib.sha256((root / "val.beton").read_bytes()).hexdigest()
    check_data(root)  # a changed pixel is a valid .beton: only the digest finds it, and training never pays for one
    with pytest.raises(DataError) as error:
        verify_data(root)
    assert str(error.value) == (
        f"{root / 'val.beton'} does not match its checksum in {root / 'meta.json'} (sha256 recorded "
        f"{recorded[:12]}…, found {found[:12]}…): it changed after `cohort data` wrote it; rewrite the "
        f"folder with `cohort data digits --out {root}`"
    )


def append_a_byte(beton) -> None:
    with open(beton, "ab") as f:
        f.write(b"\0")


def edit_checksums(root, checksums=None) -> None:
    """Replace meta.json's checksums (None: drop them, as in a folder written before they were recorded)."""
    meta = json.loads((root / "meta.json").read_text())
    del meta["checksums"]
    if checksums is not None:
        meta["checksums"] = checksums
    (root / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage, message",
    [
        (None, None),
        (
            flip_an_image_byte,
            r"train\.beton does not match its checksum in .*meta\.json \(sha256 recorded [0-9a-f]{12}…",
        ),
        (
            append_a_byte,
            r"train\.beton has \d+ bytes but .*meta\.json records \d+: it changed after `cohort data` wrote",
        ),
        (
            lambda beton: edit_checksums(beton.parent),
            r"meta\.json records no checksums \(the folder was written before `cohort data` recorded them\), so "
            r"it cannot be verified; rewrite the folder with `cohort data digits --out .*` to record them$",
        ),
        (
            lambda beton: edit_checksums(beton.parent, {"train.beton": "52aa770e"}),
            r"meta\.json: checksums must give train\.beton, val\.beton, test\.beton each its bytes and sha256 \(as "
            r"`cohort data` writes them\); rewrite the folder with `cohort data digits --out .*`$",
        ),
    ],
    ids=["intact", "flipped-byte", "appended-byte", "no-checksums", "malformed-checksums"],
)
def test_cohort_data_verify(tmp_path, digits_root, capsys, damage, message):
    import shutil

    from cohort.cli import main

    root = tmp_path / "data"
    shutil.copytree(digits_root, root)
    if damage:
        damage(root / "train.beton")
    status = main(["data", "verify", "--out", str(root)])
    out, err = capsys.readouterr()
    if damage is None:
        assert status == 0 and err == ""
        assert re.fullmatch(
            rf"verified {re.escape(str(root))}: its 3 files \(48 MiB, \d+ bytes\) match the sha256 digests in "
            r"meta\.json; \d+\.\d\d s\n",
            out,
        ), out
    else:
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert re.search(rf"^cohort: error: .*{message}", err), err


def write_fashion_source(folder, train_per_class: int = 4, test: int = 10):
    """Fashion-MNIST's four gzipped IDX files (tests/data/test_idx.py's writer), with known pixels."""
    from cohort.data.datasets import FASHION_MNIST_FILES
    from tests.data.test_idx import write_idx

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = {
        "train_labels": rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), train_per_class)),
        "test_labels": (np.arange(test) % 10).astype(np.uint8),
    }
    arrays["train_images"] = rng.integers(0, 256, size=(10 * train_per_class, 28, 28), dtype=np.uint8)
    arrays["test_images"] = rng.integers(0, 256, size=(test, 28, 28), dtype=np.uint8)
    for part, name in FASHION_MNIST_FILES.items():
        write_idx(folder / name, arrays[part])
    return arrays


def split_labels(root, split: str) -> list[int]:
    from cohort.data.beton import read_tables

    tables = read_tables(root / f"{split}.beton")
    return tables.metadata[f"f{tables.field_names.index('label')}"].tolist()


def test_fashion_mnist_from_its_idx_files_with_val_and_a_balanced_training_subset(tmp_path, cli_here):
    arrays = write_fashion_source(tmp_path / "src")
    source = ["--source", str(tmp_path / "src")]
    assert (
        cli_here("data", "fashion-mnist", "--out", str(tmp_path / "all"), *source, "--val-size", "10").returncode == 0
    )
    result = cli_here(
        "data", "fashion-mnist", "--out", str(tmp_path / "sub"), *source, "--val-size", "10", "--train-size", "25"
    )
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "sub" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 25, "val": 10, "test": 10} and meta["image_size"] == 28
    assert meta["classes"][0] == "T-shirt/top" and meta["classes"][9] == "Ankle boot"
    # Balanced: 25 over 10 classes is 3 of the first five and 2 of the others (if the 30 left hold them).
    counts = np.bincount(split_labels(tmp_path / "sub", "train"), minlength=10)
    assert sorted(counts.tolist(), reverse=True)[:5] == [3] * 5 and counts.min() >= 2 and counts.sum() == 25
    # Val is carved before the subset is drawn: the same images with or without --train-size.
    assert split_labels(tmp_path / "sub", "val") == split_labels(tmp_path / "all", "val")
    test = MemberLoader(
        tmp_path / "sub", "test", member=0, replica=0, replicas=1, seed=0, policy="none", batch_size=10,
        num_workers=1, device=torch.device("cpu"), train=False,
    )  # fmt: skip
    batch = next(iter(test.epoch(0)))
    assert batch.labels.tolist() == arrays["test_labels"].tolist()
    np.testing.assert_array_equal(batch.images.numpy(), np.repeat(arrays["test_images"][:, None], 3, axis=1))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--val-size", "40"], r"--val-size 40 must be 1\.\.39: fashion-mnist has 40 training images"),
        (["--val-size", "10", "--train-size", "31"], r"--train-size 31 must be 10\.\.30"),
        (
            ["--val-size", "10", "--train-size", "30"],
            r"--train-size 30 needs 3 images of class \d but fashion-mnist has [12]",
        ),
        (["--source", "{src}/nothing"], r"nothing is not a folder; install Debian's dataset-fashion-mnist"),
    ],
)
def test_fashion_mnist_sizes_and_sources_that_cannot_be_met_are_one_line_errors(tmp_path, cli_here, args, message):
    write_fashion_source(tmp_path / "src")
    args = [a.format(src=tmp_path / "src") for a in args]
    result = cli_here("data", "fashion-mnist", "--out", str(tmp_path / "out"), "--source", str(tmp_path / "src"), *args)
    assert result.returncode == 2 and re.search(message, result.stderr), result.stderr
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "out").exists()


def test_a_missing_fashion_mnist_file_is_named_with_where_to_get_it(tmp_path, cli_here):
    write_fashion_source(tmp_path / "src")
    (tmp_path / "src" / "t10k-images-idx3-ubyte.gz").unlink()
    result = cli_here("data", "fashion-mnist", "--out", str(tmp_path / "out"), "--source", str(tmp_path / "src"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert (
        "t10k-images-idx3-ubyte.gz is missing; the four files are at https://github.com/zalandoresearch"
        in result.stderr
    )
