"""MkDocs hook: publish the committed benchmark results with the site.

The result files (Markdown tables, JSON with their metadata, plots) live in
``benchmarks/results/`` beside the code that writes them, outside ``docs/``.
This hook adds them to the site under ``benchmarks/results/`` so that the
benchmark pages can link to them and show their plots, without a copy in
``docs/`` that could go stale.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            files.append(
                File(
                    path.relative_to(ROOT).as_posix(),
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files
