"""Build-time pages for the docs site (``hooks:`` in mkdocs.yml), made from the code so
that they cannot drift from it:

- ``reference/config.md``: every config key, from ``suite/config/schema.py``'s dataclass
  fields (type, default and the comment written beside each field, read with ``ast`` and
  ``tokenize``), the keys of registered variants (``suite.extend``), the tasks and the
  presets;
- ``reference/spec.md``: a spec's top-level keys and ``[report]`` keys, from the constants
  ``suite.sweeps`` checks specs with; a key there without an entry in ``SPEC_KEYS`` or
  ``REPORT_KEYS`` below stops the build;
- ``reference/cli.md``: every command's ``--help``, from ``suite.cli.build_parser()``.

The pages show committed figures (``results/...png``); mkdocs serves only files under
``docs/``, so each figure a page links by ``results/...`` is added to the site from the
repository at build time instead of being copied into ``docs/``.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import re
import tokenize
import typing
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "suite" / "config" / "schema.py"
DEMO = ROOT / "ablations" / "demo.toml"
SECTION_CLASSES = {"seed": "Config", "model": "ModelConfig", "data": "DataConfig",
                   "train": "TrainConfig"}
FIGURE = re.compile(r"\]\((?:\.\./)*(results/[^)\s]+\.(?:png|svg))\)")

# What each top-level spec key and [report] key means. The keys themselves come from the
# code (suite.sweeps); one missing here, or one here that the code no longer has, stops
# the build, so a new key cannot ship without its line.
SPEC_KEYS = {
    "name": "the experiment's name (letters, digits, `_.-`; `/` groups results, e.g. "
            "`fashion_mnist/latents`); the results folder is `results/<name>/`. Default: "
            "the file's name without `.toml`",
    "description": "one line for the report's page",
    "preset": "the starting config every run builds on (`perceiver-suite presets` lists "
              "them; see below). Default: `digits`",
    "seeds": "the seeds axis: a list of distinct integers >= 0, every cell runs each. "
             "Default: `[0]`",
    "plugins": "user code loaded before the keys are checked: `.py` files (relative to "
               "the spec) or module names that register models or part variants "
               "(`suite.extend`)",
    "fixed": "a table of config keys set for every run (`\"train.steps\" = 300`)",
    "grid": "a table of config keys, each a list of values: the runs are their Cartesian "
            "product",
    "zip": "a table of config keys, lists of equal length varied together (the i-th "
           "values of every list make one point), crossed with the grid",
    "report": "how `report` lays out the results (the keys below); optional",
}
REPORT_KEYS = {
    "metric": "the metric tabulated, plotted and tested (`eval/accuracy`, `eval/loss`, "
              "`train_eval/accuracy`, `gap`, ...). Default: `eval/accuracy`, or `eval/mAP` "
              "on a multi-label task; `report --metric` overrides it",
    "rows": "the varied keys whose values label the table's rows. Default: every varied "
            "key; `report --rows` overrides it",
    "cols": "varied keys spread across the columns: the report adds the paper's layout, a "
            "table of rows x cols of the metric. Default: none; `report --cols` overrides it",
    "x": "the varied key on the x axis of the main figure (the metric against it, one line "
         "per value of `hue`). Default: the first varied key",
    "hue": "the varied key drawn as one line (and colour) per value. Default: the first "
           "varied key other than `x`",
    "reference": "the cell every cell is tested against instead of the best, named by "
                 "varied keys and values (`{\"model.num_latents\" = 64}`); naming only some "
                 "varied keys tests each cell against the matching cell with its own values "
                 "of the others (`{\"data.permutation\" = \"none\"}`: every permuted "
                 "cell against its own model's raw cell). Default: the best cell; "
                 "`report --reference` overrides it",
    "title": "the report's heading, followed by the overrides its run took. Default: the "
             "spec's `name`",
}


# -- config keys: the schema's fields and the comments beside them ------------------------

def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """line -> (comment text, whether it stands on a line of its own)."""
    out: dict[int, tuple[str, bool]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            alone = not tok.line[: tok.start[1]].strip()
            out[tok.start[0]] = (tok.string.lstrip("#").strip(), alone)
    return out


def _aliases(tree: ast.Module, source: str) -> dict[str, str]:
    """Module-level ``Name = Literal[...]`` -> ``"a" | "b"``; other aliases by name."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript):
            name = node.targets[0].id if isinstance(node.targets[0], ast.Name) else ""
            head = ast.get_source_segment(source, node.value.value)
            text = ast.get_source_segment(source, node.value) or ""
            table = re.fullmatch(r"tuple\[tuple\[str, (.+)\], \.\.\.\]", text)
            if name and head == "Literal":
                args = ast.literal_eval(node.value.slice)
                out[name] = " | ".join(f'"{a}"' for a in (args if isinstance(args, tuple)
                                                           else (args,)))
            elif name and table:  # a per-modality table
                out[name] = f"{{modality: {table.group(1)}}}"
    return out


@dataclasses.dataclass
class Field:
    key: str
    type: str
    default: str
    text: str  # the comment beside the field and its continuation lines
    lead: str  # a comment block above the field: a heading for the fields that follow


def _class_fields(cls: ast.ClassDef, source: str, comments: dict[int, tuple[str, bool]],
                  aliases: dict[str, str], section: str) -> list[Field]:
    fields: list[Field] = []
    last = cls.body[0].end_lineno if cls.body else cls.lineno
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        line = node.lineno
        above = [comments[n][0] for n in range(last + 1, line) if n in comments]
        beside = comments.get(line, ("", True))
        text = "" if beside[1] else beside[0]
        follow = line + 1  # a comment continues on the next lines when it starts lowercase
        while text and follow in comments and comments[follow][1] and \
                comments[follow][0][:1].islower():
            text += " " + comments[follow][0]
            follow += 1
        if fields and above and above[0][:1].islower():  # the previous field's continuation
            above = []
        last = max(follow - 1, node.end_lineno or line)
        annotation = ast.get_source_segment(source, node.annotation) or ""
        shown = re.sub(r"\b\w+\b", lambda m: aliases.get(m.group(0), m.group(0)), annotation)
        default = ast.get_source_segment(source, node.value) if node.value else ""
        name = node.target.id
        key = name if section == "seed" else f"{section}.{name}"
        fields.append(Field(key, shown, default or "", text, " ".join(above)))
    return fields


def schema_fields() -> tuple[dict[str, list[Field]], dict[str, str]]:
    """Every section's fields as the schema's source writes them, and each section's
    docstring."""
    source = SCHEMA.read_text()
    tree = ast.parse(source)
    comments, aliases = _comments(source), _aliases(tree, source)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    out, docs = {}, {}
    for section, name in SECTION_CLASSES.items():
        fields = _class_fields(classes[name], source, comments, aliases, section)
        if section == "seed":
            fields = [f for f in fields if f.key == "seed"]
        out[section] = [f for f in fields if not f.key.endswith(".variants")]
        docs[section] = ast.get_docstring(classes[name]) or ""
    return out, docs


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(fields: list[Field]) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in fields:
        meaning = f.text or f.lead
        rows.append(f"| `{f.key}` | `{_cell(f.type)}` | `{_cell(f.default)}` | "
                    f"{_cell(meaning)} |")
    return rows


def _section(fields: list[Field]) -> list[str]:
    """One table per run of fields; a heading comment above a commented field opens a new
    table with the heading as its paragraph."""
    lines: list[str] = []
    group: list[Field] = []
    for f in fields:
        if f.lead and f.text:
            if group:
                lines += [*_table(group), ""]
            lines += [f.lead, ""]
            group = []
        group.append(f)
    return lines + [*_table(group), ""]


def _knob_lines() -> list[str]:
    """The keys of registered variants' knobs (``model.<variant>.<field>``)."""
    from suite import extend

    lines = ["## Variant knobs", "",
             "A registered model or part variant with knobs (`suite.extend`, "
             "[Your own variant](../extend.md)) adds one key per knob, "
             "`model.<variant>.<field>`, checked like the keys above. Registered here:", ""]
    rows = []
    for entry in extend.entries():
        if not entry.has_knobs:
            continue
        hints = typing.get_type_hints(entry.knobs)
        for f in dataclasses.fields(entry.knobs):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append(f"| `model.{entry.name}.{f.name}` | {extend.LABELS[entry.part]} "
                        f"`{entry.name}` | `{_cell(_type_name(hints[f.name]))}` | "
                        f"`{default!r}` |")
    if not rows:
        return lines[:-2] + [lines[-2].replace(" Registered here:", " No built-in variant "
                                               "has knobs; a plugin's appear here when it "
                                               "is installed as an entry point."), ""]
    return [*lines, "| key | of | type | default |", "|---|---|---|---|", *rows, ""]


def _type_name(tp: object) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _task_lines() -> list[str]:
    from suite.tasks import TASKS

    lines = ["## Tasks", "", "`data.task` takes one of these (`suite/tasks.py`); "
             "`data.index_dims`, `data.channels` and `data.num_classes` left unset come "
             "from here.", "", "| task | inputs | channels | classes | extras | what |",
             "|---|---|---|---|---|---|"]
    for name, info in TASKS.items():
        dims = ("; ".join(f"{m}: {list(d)} x {c}" for m, (d, c) in info.modalities)
                if info.modalities else str(list(info.index_dims)))
        extras = ", ".join(f"`.[{e}]`" for e in info.extras) or "-"
        channels = "-" if info.modalities else info.channels
        lines.append(f"| `{name}` | {_cell(dims)} | {channels} | {info.num_classes} | "
                     f"{extras} | {_cell(info.description)} |")
    return [*lines, ""]


def _preset_lines() -> list[str]:
    from suite import config as cfg_lib

    lines = ["## Presets", "", "`--preset NAME` (and a spec's `preset`) starts from one of "
             "these; each sets the keys listed, the rest keep the defaults above "
             "(`perceiver-suite describe --preset NAME` prints the whole resolved config).",
             "", "| preset | keys it sets |", "|---|---|"]
    for name in cfg_lib.PRESETS:
        changed = cfg_lib.non_default(cfg_lib.preset(name))
        text = ", ".join(f"`{k}={_cell(repr(v))}`" for k, v in changed.items())
        lines.append(f"| `{name}` | {text or '(the defaults)'} |")
    return [*lines, ""]


def config_page() -> str:
    fields, docs = schema_fields()
    lines = ["# Config keys", "",
             "Every key a run's config has, generated from `suite/config/schema.py` when "
             "these pages are built: the type, the default and the comment beside each "
             "field. Set a key on the command line (`model.num_latents=64`, after any "
             "command that builds a config) or in a spec's `[fixed]`, `[grid]` or `[zip]` "
             "([Your first ablation](../first-ablation.md)). `Literal` choices are shown "
             "as `\"a\" | \"b\"`; a type `X | tuple[tuple[str, X], ...]` also takes a "
             "per-modality table (`model.fourier_bands=audio=64,video=32`, or "
             "`{audio = 64, video = 32}` in a spec).", ""]
    for section in SECTION_CLASSES:
        lines += [f"## {section}", "", docs[section].split("\n\n")[0], ""]
        lines += _section(fields[section])
    lines += ["`model.cross_attend_every` is derived, not set: the latent blocks between "
              "cross-attends with interleaved placement (`config.json` and `describe` show "
              "it).", ""]
    return "\n".join([*lines, *_knob_lines(), *_task_lines(), *_preset_lines()])


# -- spec keys ----------------------------------------------------------------------------

def _spec_constants() -> tuple[set[str], tuple[str, ...], tuple[str, ...], tuple[str, ...], int]:
    from suite.sweeps import spec

    try:
        from suite.sweeps import report_keys as rk
    except ImportError:  # the [report] keys' older home
        rk = spec
    return (set(spec.TOP_KEYS), tuple(rk.REPORT_KEYS), tuple(getattr(rk, "LIST_KEYS", ())),
            tuple(getattr(rk, "ONE_KEYS", ())), spec.MAX_RUNS)


def _described(kind: str, keys: set[str], described: dict[str, str]) -> None:
    missing, stale = sorted(keys - set(described)), sorted(set(described) - keys)
    if missing or stale:
        raise PluginError(f"docs/hooks.py: {kind} keys without a line in the docs: "
                          f"{missing}; lines for keys the code does not have: {stale}")


def spec_page() -> str:
    top, _, _, _, max_runs = _spec_constants()
    _described("spec top-level", top, SPEC_KEYS)
    lines = ["# Spec keys", "",
             "An ablation spec is a TOML file (`ablations/*.toml`); these are all the keys "
             "it may hold, generated from the constants `run` and `report` check a spec "
             "against (`suite/sweeps/`). Any other key is one line naming the file and "
             "the key, with the nearest known one. How to write one: "
             "[Your first ablation](../first-ablation.md). The quick start's spec, "
             "`ablations/demo.toml`:", "", "```toml", DEMO.read_text().strip(), "```", "",
             "## Top-level keys", "",
             "| key | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {SPEC_KEYS[k]} |" for k in sorted(top, key=list(SPEC_KEYS).index)]
    lines += ["", f"Runs = grid x zip x seeds; a spec of more than {max_runs} runs needs "
              "`--force`.", "", "## `[report]` keys", "", report_table()]
    return "\n".join(lines) + "\n"


def report_table() -> str:
    """The ``[report]`` keys as a table; also where a page writes its marker."""
    _, report, lists, ones, _ = _spec_constants()
    _described("[report]", set(report), REPORT_KEYS)
    lines = ["| key | takes | meaning |", "|---|---|---|"]
    for k in report:
        takes = ("a list of varied keys" if k in lists else
                 "one varied key" if k in ones else
                 "a table of varied keys and values" if k == "reference" else "one string")
        lines.append(f"| `{k}` | {takes} | {REPORT_KEYS[k]} |")
    lines += ["", "Keys that name config keys (" + ", ".join(f"`{k}`" for k in
              (*lists, *ones)) + ") must name keys the spec varies (`[grid]` or `[zip]`); "
              "`run` checks this, with every other key and value, when it loads the spec, "
              "before anything trains: a mistake is one line naming the file, the key and "
              "the nearest known one (exit status 2)."]
    return "\n".join(lines)


# -- the command line ---------------------------------------------------------------------

def cli_page() -> str:
    from suite.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the page's width
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if a.choices and hasattr(a, "_choices_actions"))
        helps = {a.dest: a.help for a in sub._choices_actions}
        lines = ["# Command line", "", "Every `perceiver-suite` command's `--help`, "
                 "generated from the parser when these pages are built. Dotted `key=value` "
                 "config overrides may come anywhere after the command; a user mistake "
                 "prints one line and exits with status 2.", "", "| command | what it does |",
                 "|---|---|"]
        lines += [f"| [`{n}`](#{n}) | {_cell(helps.get(n) or '')} |" for n in sub.choices]
        for name, p in sub.choices.items():
            lines += ["", f"## {name}", "", "```text", p.format_help().rstrip(), "```"]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(lines) + "\n"


# -- mkdocs events ------------------------------------------------------------------------

PAGES = {"reference/config.md": config_page, "reference/spec.md": spec_page,
         "reference/cli.md": cli_page}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages, and the committed figures the pages link."""
    for uri, make in PAGES.items():
        files.append(File.generated(config, uri, content=make()))
    figures: set[str] = set()
    for f in files.documentation_pages():
        if f.abs_src_path:
            figures |= set(FIGURE.findall(Path(f.abs_src_path).read_text()))
    for uri in sorted(figures):
        path = ROOT / uri
        if not path.is_file():
            raise PluginError(f"docs: a page shows {uri}, which is not in the repository")
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


MARKERS = {"<!-- generated: report keys -->": report_table}


def on_page_markdown(markdown: str, **_: object) -> str:
    """A hand-written page shows a generated table where it writes that table's marker."""
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown


ROLE = re.compile(r":(?:class|func|mod|data|meth|attr|exc):(?=<code>)")


def on_page_content(html: str, **_: object) -> str:
    """Docstrings name objects with Sphinx roles (``:func:`x```); show them as code."""
    return ROLE.sub("", html)
