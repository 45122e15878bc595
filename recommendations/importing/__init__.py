"""Importing catalog and event files for `import_catalog` and `import_events`, and the fast bulk event writer.

Both imports check the whole file before writing anything: a first pass keeps only the problems (one per bad row,
naming the line and the field), a second pass streams the good rows into the database in one transaction. Neither
pass holds more than one batch of rows, so a file of a million events never sits in memory (on PostgreSQL the
first pass spools the valid events, already in COPY format, to a temporary file on disk so the file is parsed once).

- `files`: detecting the format, reading CSV and JSONL records, the field parsers, the validating scan;
- `catalog`: the catalog's rows and their import; `events`: the events' rows, their import and `EventWriter`.

This module re-exports the names the commands, the demo data and the tests use, so `recommendations.importing.X`
keeps working.
"""

from recommendations.importing.catalog import CATALOG_SPEC, CatalogImport, catalog_validator, import_catalog_file
from recommendations.importing.events import (
    EVENT_SPEC,
    EventValues,
    EventWriter,
    copy_line,
    derived_event_id,
    event_validator,
    event_values,
    import_event_file,
)
from recommendations.importing.files import (
    EXTENSIONS,
    FORMATS,
    FileSpec,
    ImportFileError,
    InvalidRows,
    ProgressFactory,
    RowProblem,
    Scan,
    detect_format,
    parse_bool,
    parse_decimal,
    parse_quantity,
    parse_text,
    parse_time,
    read_records,
    scan,
    tqdm_progress,
    validated,
)

__all__ = [
    "CATALOG_SPEC",
    "EVENT_SPEC",
    "EXTENSIONS",
    "FORMATS",
    "CatalogImport",
    "EventValues",
    "EventWriter",
    "FileSpec",
    "ImportFileError",
    "InvalidRows",
    "ProgressFactory",
    "RowProblem",
    "Scan",
    "catalog_validator",
    "copy_line",
    "derived_event_id",
    "detect_format",
    "event_validator",
    "event_values",
    "import_catalog_file",
    "import_event_file",
    "parse_bool",
    "parse_decimal",
    "parse_quantity",
    "parse_text",
    "parse_time",
    "read_records",
    "scan",
    "tqdm_progress",
    "validated",
]
