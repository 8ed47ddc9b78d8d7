"""cohort's numpy reader of .beton tables agrees with FFCV's own types and Reader."""

import numpy as np
from ffcv.fields import FloatField, IntField, RGBImageField
from ffcv.reader import Reader
from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, TYPE_ID_HANDLER, FieldDescType, HeaderType

from cohort.data.beton import ALLOCATION, FIELD_DESCRIPTOR, FIELD_METADATA, FORMAT_VERSION, HEADER, read_tables


def test_layouts_are_ffcvs():
    assert (HEADER, FIELD_DESCRIPTOR, ALLOCATION, FORMAT_VERSION) == (
        HeaderType,
        FieldDescType,
        ALLOC_TABLE_TYPE,
        CURRENT_VERSION,
    )
    fields = {0: FloatField(), 1: IntField(), 2: RGBImageField()}
    for type_id, dtype in FIELD_METADATA.items():
        assert isinstance(fields[type_id], TYPE_ID_HANDLER[type_id]) and fields[type_id].metadata_type == dtype


def test_tables_equal_ffcvs_reader(digits_root):
    for split in ("train", "test"):
        path = digits_root / f"{split}.beton"
        ours, theirs = read_tables(path), Reader(str(path))
        assert ours.field_names == theirs.field_names == ["image", "label"]
        assert ours.num_samples == theirs.num_samples and ours.metadata.dtype == theirs.metadata.dtype
        np.testing.assert_array_equal(ours.metadata, theirs.metadata)
        np.testing.assert_array_equal(ours.allocation, theirs.alloc_table)
