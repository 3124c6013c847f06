"""What a researcher reads from the shell: the study's headline table (`facetraits results`) and DVC's plots as
one HTML page that needs no network (`facetraits plots`).

`dvc plots show` writes a page that loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline its charts are
silently missing. vl-convert (a registry package) ships those libraries bundled; their code is inlined into the
page through DVC's own `--html-template` option, so DVC still collects and fills every plot.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from facetraits.errors import DataError
from facetraits.report.headline import HANDCRAFTED_KEY, HUMAN_CEILING_KEY, MAIN, headline_table

VEGA_LITE = "5.21"  # DVC's templates are Vega-Lite 5 specifications
REMOTE_SCRIPT = re.compile(r"<script[^>]*\ssrc\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)


def results_text(results: Path, variants: list[str], per_attribute: bool) -> str:
    """results/report.json's headline; with `per_attribute`, test r of every method per attribute beside it."""
    from facetraits.report.study import HANDCRAFTED, collect_methods, human_reference, read_metrics

    path = Path(results) / "report.json"
    text = f"{path}\n{headline_table(read_metrics(path), path)}"
    if not per_attribute:
        return text
    methods = collect_methods(Path(results), MAIN, {name: name for name in variants})
    table = pd.DataFrame(methods.scores).rename(columns={HANDCRAFTED: HANDCRAFTED_KEY})
    human = human_reference(read_metrics(Path(results) / "baselines" / "metrics.json"))
    if human is not None:
        table.insert(0, HUMAN_CEILING_KEY, human["ceiling"].reindex(table.index))
    table.index.name = "test Pearson r"
    return f"{text}\n\n{table.to_string(float_format=lambda r: f'{r:.3f}', na_rep='—')}"


def offline_template() -> str:
    """A DVC HTML template with Vega, Vega-Lite and Vega-Embed inlined: no `{scripts}` anchor, so DVC adds no CDN."""
    try:
        import vl_convert
    except ImportError:
        raise DataError("vl-convert-python is not installed (a facetraits dependency): pip install -e .") from None
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script")
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>facetraits: DVC plots</title>\n"
        f"<script type=\"text/javascript\">\n{bundle}\n</script>\n"
        "<style>body { font-family: sans-serif; } div { margin: 12px; }</style>\n</head>\n"
        "<body>\n{plot_divs}\n</body>\n</html>\n"
    )


def write_offline_plots(out: Path, revisions: list[str], targets: list[str]) -> Path:
    """`dvc plots show` (or `dvc plots diff REV...`, to compare commits and experiments) into out/index.html, from
    the inlined template; an error names the page if a script from the network still got in."""
    command = ["diff", *revisions, *(["--targets", *targets] if targets else [])] if revisions else ["show", *targets]
    with tempfile.TemporaryDirectory(prefix="facetraits-plots-") as tmp:
        template = Path(tmp) / "offline.html"
        template.write_text(offline_template(), encoding="utf-8")
        args = [sys.executable, "-m", "dvc", "plots", *command, "--html-template", str(template), "-o", str(out)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DataError(f"dvc plots {command[0]} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    page = Path(out) / "index.html"
    if REMOTE_SCRIPT.search(page.read_text(encoding="utf-8")):
        raise DataError(f"{page}: a script still loads from the network; the offline template was not applied")
    return page
