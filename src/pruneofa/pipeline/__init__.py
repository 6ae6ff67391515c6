"""One command for the whole pipeline: `pruneofa run PIPELINE.yaml` / `pruneofa demo`, resumable, with a report."""
