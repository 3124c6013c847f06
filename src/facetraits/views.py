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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from facetraits.errors import DataError
from facetraits.report.headline import HANDCRAFTED_KEY, HUMAN_CEILING_KEY, MAIN, read_metrics

VEGA_LITE = "5.21"  # DVC's templates are Vega-Lite 5 specifications
REMOTE_SCRIPT = re.compile(r"<script[^>]*\ssrc\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE)
HEADLINE = Path("results") / "report.json"  # in a study folder (the project root is the default study's)
MISSING = "—"


def headline_rows(report: Mapping[str, Any], path: Path) -> dict[str, float | None]:
    """The headline's numbers by dotted key, the methods' test r first (JSON keeps the other keys sorted)."""
    if "test_r_mean" not in report:
        raise DataError(f"{path}: no test_r_mean section: not a report headline (rerun the report stage: dvc repro)")
    rows: dict[str, float | None] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                rows[f"{prefix}{key}"] = value

    walk({"test_r_mean": report["test_r_mean"], **report}, "")
    return rows


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def headline_text(studies: Sequence[Path]) -> str:
    """Each study folder's results/report.json as aligned text: one study, a number a line under its file's path;
    several, one column per study (a key one study lacks shows as —), so two studies compare at a glance."""
    paths = [Path(folder) / HEADLINE for folder in studies]
    columns = [headline_rows(read_metrics(path), path) for path in paths]
    keys = list(dict.fromkeys(key for column in columns for key in column))
    sections = list(dict.fromkeys(key.split(".")[0] for key in keys))
    keys.sort(key=lambda key: sections.index(key.split(".")[0]))  # a study's extra method beside the others
    width = max(map(len, keys))
    if len(columns) == 1:
        return f"{paths[0]}\n" + "\n".join(f"{key:<{width}}  {_number(columns[0][key])}" for key in keys)
    names = [str(folder) for folder in studies]
    widths = [max(len(name), 5) for name in names]
    lines = [" " * width + "".join(f"  {name:>{w}}" for name, w in zip(names, widths, strict=True))]
    for key in keys:
        cells = "".join(f"  {_number(c.get(key)):>{w}}" for c, w in zip(columns, widths, strict=True))
        lines.append(f"{key:<{width}}{cells}")
    return "\n".join(lines)


def per_attribute_text(study: Path) -> str:
    """Test r of every method per attribute in a study folder, the human ceiling first (reads its params.yaml for
    the variants' names; imports the report library, so only this part of `facetraits results` is slow)."""
    import pandas as pd

    from facetraits.config import load_params
    from facetraits.report.study import HANDCRAFTED, collect_methods, human_reference

    results = Path(study) / HEADLINE.parent
    variants = load_params(Path(study) / "params.yaml").variants
    methods = collect_methods(results, MAIN, {name: name for name in variants})
    table = pd.DataFrame(methods.scores).rename(columns={HANDCRAFTED: HANDCRAFTED_KEY})
    human = human_reference(read_metrics(results / "baselines" / "metrics.json"))
    if human is not None:
        table.insert(0, HUMAN_CEILING_KEY, human["ceiling"].reindex(table.index))
    table.index.name = "test Pearson r"
    return table.to_string(float_format=lambda r: f"{r:.3f}", na_rep=MISSING)


def results_text(studies: Sequence[Path], per_attribute: bool) -> str:
    """What `facetraits results` prints: the headline of one study or several side by side; with
    `per_attribute`, each study's per-attribute table below it (headed by its folder when there are several)."""
    text = headline_text(studies)
    for study in studies if per_attribute else ():
        heading = f"{study}\n" if len(studies) > 1 else ""
        text += f"\n\n{heading}{per_attribute_text(study)}"
    return text


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
    if not page.is_file():  # DVC exits 0 when it cannot load a plot's files and then writes no page
        said = (done.stderr.strip() or done.stdout.strip() or "nothing").splitlines()[-1]
        hint = "run the stages that write the plots: dvc repro"
        raise DataError(f"dvc plots {command[0]} wrote no {page} ({hint}); DVC said: {said}")
    if REMOTE_SCRIPT.search(page.read_text(encoding="utf-8")):
        raise DataError(f"{page}: a script still loads from the network; the offline template was not applied")
    return page
