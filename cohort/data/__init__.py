"""Data: ``.beton`` files written once, read by one FFCV loader per member."""
