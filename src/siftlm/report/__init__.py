"""Reports: self-contained HTML pages with embedded plots and Markdown tables, and what siftlm's benchmarks say about a
score."""
