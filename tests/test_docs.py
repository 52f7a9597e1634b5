"""The docs: the site builds with ``mkdocs build --strict`` (no broken link, anchor or
page), its generated reference pages name every config key and every spec and
``[report]`` key the code accepts, and the README stays a front door."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs packages are in the test extra")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def code_spans(site: Path, page: str) -> set[str]:
    """Every ``<code>`` span of a built page: where the reference tables put their keys."""
    return set(re.findall(r"<code>([^<]*)</code>", (site / page / "index.html").read_text()))


def test_the_site_builds_strictly_with_every_page_of_the_nav(site):
    for page in ("install", "first-ablation", "sweeps", "reports", "extend", "notebook",
                 "training", "data", "models", "weights", "inference", "scaling-out",
                 "speed", "reference-results", "layout", "reference/config",
                 "reference/spec", "reference/cli", "reference/api"):
        assert (site / page / "index.html").is_file(), page


def test_every_config_key_is_on_the_generated_config_page(site):
    from suite import config

    shown = code_spans(site, "reference/config")
    assert [k for k in config.known_keys() if k not in shown] == []


def test_every_spec_and_report_key_is_on_the_generated_spec_page(site):
    from suite.sweeps import spec

    try:
        from suite.sweeps.report_keys import REPORT_KEYS
    except ImportError:  # their older home
        REPORT_KEYS = spec.REPORT_KEYS
    shown = code_spans(site, "reference/spec")
    keys = [*sorted(spec.TOP_KEYS), *REPORT_KEYS]
    assert [k for k in keys if k not in shown] == []
    explained = code_spans(site, "first-ablation")  # the page that teaches specs
    assert [k for k in REPORT_KEYS if k not in explained] == []


def test_every_command_has_its_help_on_the_generated_cli_page(site):
    from suite.cli import build_parser

    html = (site / "reference" / "cli" / "index.html").read_text()
    sub = next(a for a in build_parser()._actions if getattr(a, "choices", None))
    assert [n for n in sub.choices if f"usage: perceiver-suite {n}" not in html] == []


def test_the_figures_the_pages_show_are_in_the_site(site):
    shown = re.findall(r'src="(?:\.\./)+(results/[^"]+\.png)"',
                       (site / "reference-results" / "index.html").read_text())
    assert shown and [s for s in shown if not (site / s).is_file()] == []


def test_the_readme_is_a_front_door_of_at_most_400_lines_with_contents():
    lines = README.read_text().splitlines()
    assert len(lines) <= 400
    assert "## Contents" in lines
    headings = [ln[3:] for ln in lines if ln.startswith("## ") and ln != "## Contents"]
    contents = lines[lines.index("## Contents"):]
    listed = [m for ln in contents for m in re.findall(r"^- \[([^\]]+)\]\(#", ln)]
    assert listed == headings
