"""Reading one local data file into a `datasets.Dataset`, with the format chosen by extension."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset

from pruneofa.errors import UserError

# extension → (datasets builder, extra builder arguments)
BUILDERS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


def _unreadable(setting: str, path: str, builder: str, error: BaseException) -> UserError:
    while error.__cause__ is not None:  # DatasetGenerationError wraps the parser's own message
        error = error.__cause__
    detail = (str(error).strip().splitlines() or [""])[0]  # parser messages can span lines; keep one
    return UserError(
        f"{setting} {path} could not be read as {builder} ({type(error).__name__}: {detail})", "fix the file"
    )


def load_local_file(path: str, setting: str) -> Dataset:
    """Load `path` (named by config key `setting`, used in messages); UserError if unreadable or empty."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{setting} {path} does not exist", f"check the path in {setting}")
    suffix = file.suffix.lower()
    if suffix not in BUILDERS:
        raise UserError(
            f"{setting} {path} has an unsupported extension {suffix or '(none)'}",
            f"use one of {', '.join(BUILDERS)}",
        )
    builder, options = BUILDERS[suffix]
    try:
        dataset = load_dataset(builder, data_files=str(file.resolve()), split="train", **options)
    except ValueError as error:
        if "corresponds to no data" in str(error):  # the builder found zero rows
            raise UserError(f"{setting} {path} holds no rows", "add data to the file") from None
        raise _unreadable(setting, path, builder, error) from None
    except Exception as error:  # parser errors from pandas/pyarrow
        raise _unreadable(setting, path, builder, error) from None
    if len(dataset) == 0:
        raise UserError(f"{setting} {path} holds no rows", "add data to the file")
    return dataset
