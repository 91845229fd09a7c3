"""Reports: self-contained HTML pages with embedded plots, and the statistics they (and the CLI) show."""
