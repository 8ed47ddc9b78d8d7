"""Write datasets as FFCV ``.beton`` files: ``train``, ``val`` and ``test`` plus ``meta.json``.

The validation split is carved from the training set with a fixed seed; test is the
dataset's own test split (digits has none, so it is carved first). ``meta.json`` is
written last: a data folder without it is incomplete and is rewritten. It records each
file's size and SHA-256 (``checksums``), which ``cohort data verify`` compares.
"""

from __future__ import annotations

import functools
import json
import pickle
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cohort.data.folder import DataError, check_root, file_checksum, human_bytes, read_meta
from cohort.data.splits import SPLIT_SEED, ArrayDataset, split_indices, train_and_val

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def writes_digits(root: str, dataset: str) -> bool:
    """Whether ``ensure_data`` writes the digits into ``root``: only a folder without meta.json
    (never written, or cut short: meta.json comes last); a written folder that lost a file is
    the user's data, reported, not replaced."""
    return dataset == "digits" and not (Path(root) / "meta.json").is_file()


def ensure_data(root: str, dataset: str) -> None:
    """Write the digits data if it is missing (it ships with scikit-learn); else check it exists."""
    check_root(Path(root))
    if writes_digits(root, dataset):
        print(f"cohort: writing the digits dataset to {root} (first run only)", flush=True)
        write_digits(Path(root))
    read_meta(root)


def write_arrays(
    out: Path,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    val_fraction: float,
    classes: Sequence[str],
    val_size: int | None = None,
    train_size: int | None = None,
    val_from: str = "random",
) -> dict:
    """Carve val from train (``val_size`` images, else ``val_fraction`` of them; at random, or the
    last ones, ``val_from``), keep a class-balanced ``train_size`` of the rest when given, compute
    the train mean/std, and write the three splits."""
    train_idx, val_idx = train_and_val(labels, val_fraction, val_size, train_size, name, val_from)
    splits = {
        "train": ArrayDataset(images[train_idx], labels[train_idx]),
        "val": ArrayDataset(images[val_idx], labels[val_idx]),
        "test": ArrayDataset(test_images, test_labels),
    }
    pixels = images[train_idx].reshape(-1, 3).astype(np.float64) / 255.0
    meta = {
        "dataset": name,
        "num_classes": len(classes),
        "classes": list(classes),
        "image_size": int(images.shape[1]),
        "mean": pixels.mean(0).round(4).tolist(),
        "std": pixels.std(0).round(4).tolist(),
        "decoder": "simple",
        **({"val_from": val_from} if val_from != "random" else {}),
    }
    return _write_splits(out, splits, meta, write_mode="raw", max_resolution=None)


def _write_splits(
    out: Path,
    splits: dict,
    meta: dict,
    write_mode: str,
    max_resolution: int | None,
    num_workers: int = 1,
    field_options: dict | None = None,
) -> dict:
    """Write all splits into a temporary folder next to ``out``, then move them in."""
    import ffcv.writer
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    from tqdm import tqdm

    # FFCV's writer draws a tqdm bar per split: kept for a terminal, out of logs (SLURM's, CI's).
    ffcv.writer.tqdm = functools.partial(tqdm, disable=not sys.stderr.isatty())

    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=out))
    try:
        for split, dataset in splits.items():
            image_field = RGBImageField(write_mode=write_mode, max_resolution=max_resolution, **(field_options or {}))
            writer = DatasetWriter(
                str(staging / f"{split}.beton"), {"image": image_field, "label": IntField()}, num_workers=num_workers
            )
            writer.from_indexed_dataset(dataset)
            # Read back once written: FFCV's workers write pages in turn, then it seeks back
            # to write the metadata and header, so the bytes cannot be hashed as they go.
            meta.setdefault("checksums", {})[f"{split}.beton"] = file_checksum(staging / f"{split}.beton")
        meta["sizes"] = {split: len(dataset) for split, dataset in splits.items()}
        for split in splits:
            (staging / f"{split}.beton").replace(out / f"{split}.beton")
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        (staging / "meta.json").replace(out / "meta.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


# --- the datasets -----------------------------------------------------------------------------


def write_digits(
    out: Path, size: int = 32, val_size: int | None = None, train_size: int | None = None, val_from: str = "random"
) -> dict:
    """scikit-learn's bundled 8×8 digits (1,797 real scans), upscaled to ``size``² RGB.

    No download: the images ship with scikit-learn. Test takes 20 %, val 12.5 % of the rest
    (or ``val_size`` images); ``train_size``: a class-balanced subset of the remainder.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in grey])
    images = np.repeat(images[..., None], 3, axis=3)
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = split_indices(len(labels), int(round(0.2 * len(labels))), seed=SPLIT_SEED + 1)
    return write_arrays(
        out,
        "digits",
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        val_fraction=0.125,
        classes=[str(d) for d in range(10)],
        val_size=val_size,
        train_size=train_size,
        val_from=val_from,
    )


def read_cifar_batches(folder: Path, files: Sequence[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR's python pickles (``data`` N×3072 uint8, labels) into HWC images."""
    images, labels = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing; is {folder} an extracted CIFAR python archive?")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def write_cifar(
    out: Path,
    classes: int,
    source: Path,
    download: bool = True,
    val_size: int | None = None,
    train_size: int | None = None,
    val_from: str = "random",
) -> dict:
    """CIFAR-10/100 from torchvision's on-disk python format under ``source``; val is 10 % of
    the training set (or ``val_size`` images; drawn at random, or the last ones, ``val_from``: Diff-DML's
    ``--val-size 5000 --val-from last``), ``train_size`` a class-balanced subset of the rest.

    If ``source`` does not hold the extracted archive, torchvision downloads it (needs
    the internet); the pickles are then read here, so a hand-made archive works too.
    """
    folder = source / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    if not folder.is_dir():
        if not download:
            raise DataError(f"{folder} is missing; pass --download or extract CIFAR-{classes} there")
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if classes == 10 else CIFAR100)(root=str(source), train=True, download=True)
    if classes == 10:
        meta_file, names_key, label_key = "batches.meta", "label_names", "labels"
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        meta_file, names_key, label_key = "meta", "fine_label_names", "fine_labels"
        train_files, test_files = ["train"], ["test"]
    with open(folder / meta_file, "rb") as f:
        class_names = pickle.load(f, encoding="latin1")[names_key]
    train_images, train_labels = read_cifar_batches(folder, train_files, label_key)
    test_images, test_labels = read_cifar_batches(folder, test_files, label_key)
    return write_arrays(
        out,
        f"cifar{classes}",
        train_images,
        train_labels,
        test_images,
        test_labels,
        val_fraction=0.1,
        classes=class_names,
        val_size=val_size,
        train_size=train_size,
        val_from=val_from,
    )


def write_imagefolder(
    out: Path,
    train_dir: Path,
    test_dir: Path,
    max_resolution: int = 256,
    val_fraction: float = 0.02,
    num_workers: int = 4,
    write_mode: str = "jpg",
    jpeg_quality: int = 90,
    compress_probability: float = 0.5,
    val_size: int | None = None,
    train_size: int | None = None,
) -> dict:
    """Any ``ImageFolder`` layout (ImageNet: its val folder is our test split). FFCV's writer
    options: ``max_resolution`` (longest side), ``write_mode`` (``jpg``, ``raw``, or
    ``proportion``: JPEG with probability ``compress_probability``, as ffcv-imagenet writes
    ImageNet), ``jpeg_quality``. Val is ``val_fraction`` of the training images (or ``val_size``),
    ``train_size`` a class-balanced subset of the rest. Says how big the files will be before it
    writes them."""
    from torch.utils.data import Subset

    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"{d} is not a directory of class folders")
    train, test = image_folder(train_dir), image_folder(test_dir)
    if train.classes != test.classes:
        only_train, only_test = (
            sorted(set(train.classes) - set(test.classes)),
            sorted(set(test.classes) - set(train.classes)),
        )
        raise DataError(
            f"{train_dir} and {test_dir} have different class folders (only in {train_dir.name}: "
            f"{', '.join(only_train[:5]) or '-'}; only in {test_dir.name}: {', '.join(only_test[:5]) or '-'}); "
            f"give both the same class folders"
        )
    train_idx, val_idx = train_and_val(np.asarray(train.targets), val_fraction, val_size, train_size, str(train_dir))
    splits = {"train": Subset(train, train_idx.tolist()), "val": Subset(train, val_idx.tolist()), "test": test}
    meta = {
        "dataset": "imagefolder",
        "num_classes": len(train.classes),
        "classes": train.classes,
        "image_size": 224 if max_resolution >= 256 else max_resolution,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "decoder": "center_crop",
    }
    options = {"jpeg_quality": jpeg_quality, "compress_probability": compress_probability}  # FFCV's RGBImageField's
    estimate = sum(estimated_bytes(dataset, max_resolution, write_mode, **options) for dataset in splits.values())
    print(
        f"cohort data: writing {sum(len(d) for d in splits.values())} images into {out}, about "
        f"{human_bytes(estimate)} (estimated from a sample; {write_mode}, longest side {max_resolution}, "
        f"JPEG quality {jpeg_quality})",
        flush=True,
    )
    return _write_splits(
        out,
        splits,
        meta,
        write_mode=write_mode,
        max_resolution=max_resolution,
        num_workers=num_workers,
        field_options=options,
    )


FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` (installed by ``scripts/setup.sh``) puts the files."""
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion)"


def write_fashion_mnist(
    out: Path,
    source: Path = FASHION_MNIST_DEBIAN,
    val_size: int | None = 10_000,
    train_size: int | None = None,
    val_from: str = "random",
) -> dict:
    """Zalando's Fashion-MNIST (60,000 training and 10,000 test 28×28 grey images of 10 kinds
    of clothing) from its four IDX files under ``source``, gzipped as Zalando and Debian ship
    them (or not), stored as 3 equal channels.

    Val holds 10,000 training images by default, so 50,000 train, as in google/
    uncertainty-baselines' ``baselines/mnist/deterministic.py`` (``n_train = 50000``); the
    test split is the data set's own. A missing, truncated or malformed file is a one-line
    error naming it (``cohort.data.idx``).
    """
    from cohort.data.idx import IdxError, read_idx

    if not source.is_dir():
        raise DataError(
            f"{source} is not a folder; install Debian's dataset-fashion-mnist (bash scripts/setup.sh does) "
            f"or pass --source with the four IDX files from {FASHION_MNIST_URL}"
        )

    def read(part: str, ndim: int) -> np.ndarray:
        path = source / FASHION_MNIST_FILES[part]
        if not path.is_file() and path.with_suffix("").is_file():  # the same file, already gunzipped
            path = path.with_suffix("")
        try:
            return read_idx(path, ndim)
        except IdxError as error:
            raise DataError(f"{error}; the four files are at {FASHION_MNIST_URL}") from None

    arrays = {part: read(part, 3 if part.endswith("images") else 1) for part in FASHION_MNIST_FILES}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise DataError(
                f"{source / FASHION_MNIST_FILES[f'{split}_images']} holds {images.shape} images and "
                f"{source / FASHION_MNIST_FILES[f'{split}_labels']} {len(labels)} labels: Fashion-MNIST's "
                f"{split} split is N 28×28 images and N labels; fetch them again"
            )
        if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise DataError(
                f"{source / FASHION_MNIST_FILES[f'{split}_labels']} holds label {int(labels.max())}, outside "
                f"Fashion-MNIST's 0..9; fetch it again"
            )

    def rgb(grey: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=3))

    return write_arrays(
        out,
        "fashion-mnist",
        rgb(arrays["train_images"]),
        arrays["train_labels"].astype(np.int64),
        rgb(arrays["test_images"]),
        arrays["test_labels"].astype(np.int64),
        val_fraction=0.0,
        classes=FASHION_MNIST_CLASSES,
        val_size=val_size,
        train_size=train_size,
        val_from=val_from,
    )


def image_folder(root: Path):
    """torchvision's ImageFolder of ``root``; no class folder or no image is a one-line error."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as error:  # torchvision: no class folders / no valid files
        raise DataError(
            f"{root} holds no images in class folders ({str(error).splitlines()[0][:80]}); "
            f"pass a folder of <class>/<image> files"
        ) from None


def estimated_bytes(
    dataset, max_resolution: int, write_mode: str, jpeg_quality: int, compress_probability: float, sample: int = 16
) -> float:
    """The bytes FFCV will write for ``dataset``'s images, from encoding a fixed sample of them
    as FFCV's writer does (its resizer and JPEG encoder)."""
    from ffcv.fields.rgb_image import encode_jpeg, resizer

    if len(dataset) == 0:
        return 0.0
    chosen = np.random.default_rng(0).choice(len(dataset), min(sample, len(dataset)), replace=False)
    raw, jpeg = [], []
    for i in chosen:
        image = resizer(np.asarray(dataset[int(i)][0].convert("RGB")), max_resolution)
        raw.append(image.nbytes)
        jpeg.append(encode_jpeg(image, jpeg_quality).nbytes if write_mode != "raw" else 0)
    share = {"jpg": 1.0, "raw": 0.0, "proportion": compress_probability}[write_mode]
    return len(dataset) * (share * np.mean(jpeg) + (1 - share) * np.mean(raw))
