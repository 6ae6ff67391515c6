"""Data: offline assets, pre-training corpora and LM batches."""
