"""Data set preparation modules (one per data set) and the embedded synthetic data."""
