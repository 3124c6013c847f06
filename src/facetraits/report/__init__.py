"""The study's comparison report: humans against every model variant, with the statistics and figures."""
