"""Paper tables as data, written out as Markdown or LaTeX (booktabs).

A ``PaperTable`` holds plain-text cells; ``to_markdown`` and ``to_latex`` escape them for
their format (``±`` and ``Δ`` become math in LaTeX, ``|`` and ``*`` are escaped in Markdown).
``recipes/report.py`` fills the tables from a run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# LaTeX's special characters in text mode, and the symbols the tables use.
_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "−": r"$-$",
    "†": r"$^\dagger$",
    "<": r"$<$",
    ">": r"$>$",
}


@dataclass
class PaperTable:
    """One table: ``columns`` headers, ``rows`` of cells (strings), ``align`` one letter
    (l, c, r) per column, a ``\\midrule`` before each row index in ``rules``. ``wide`` tables
    span both columns of a two-column paper (``table*``)."""

    name: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    align: str
    rules: list[int] = field(default_factory=list)
    wide: bool = False

    def __post_init__(self) -> None:
        widths = {len(self.columns), len(self.align), *(len(r) for r in self.rows)}
        if len(widths) != 1:
            raise ValueError(f"table {self.name}: columns, align and rows differ in width")


def latex_escape(text: str) -> str:
    """``text`` safe in LaTeX text mode (special characters escaped, symbols as math)."""
    return "".join(_LATEX.get(ch, ch) for ch in text)


def markdown_escape(text: str) -> str:
    """``text`` safe in a Markdown table cell (no column break, no emphasis)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def to_markdown(table: PaperTable) -> str:
    """A caption line and a pipe table (GitHub-flavoured Markdown)."""
    colon = {"l": (":", "-"), "c": (":", ":"), "r": ("-", ":")}
    lines = [
        f"**Table ({table.name}).** {markdown_escape(table.caption)}",
        "",
        "| " + " | ".join(markdown_escape(c) for c in table.columns) + " |",
        "|" + "|".join(f"{colon[a][0]}---{colon[a][1]}" for a in table.align) + "|",
    ]
    lines += ["| " + " | ".join(markdown_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def to_latex(table: PaperTable) -> str:
    """A ``table`` (``table*`` when wide) with a booktabs ``tabular``: needs
    ``\\usepackage{booktabs}``; the label is ``tab:mrd-<name>``."""
    env = "table*" if table.wide else "table"
    lines = [
        f"\\begin{{{env}}}[t]",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(table.caption)}}}",
        f"\\label{{tab:mrd-{table.name}}}",
        f"\\begin{{tabular}}{{{table.align}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + " \\\\",
        "\\midrule",
    ]
    for i, row in enumerate(table.rows):
        if i in table.rules and i > 0:
            lines.append("\\midrule")
        lines.append(" & ".join(latex_escape(c) for c in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\end{{{env}}}"]
    return "\n".join(lines) + "\n"


def latex_document(tables: list[PaperTable], title: str) -> str:
    """A standalone LaTeX document holding ``tables`` (compiles with pdflatex/lualatex)."""
    body = "\n".join(to_latex(t) for t in tables)
    return (
        "\\documentclass{article}\n"
        "\\usepackage[utf8]{inputenc}\n"
        "\\usepackage[T1]{fontenc}\n"
        "\\usepackage[margin=1.5cm,landscape]{geometry}\n"
        "\\usepackage{booktabs}\n"
        "\\begin{document}\n"
        f"\\section*{{{latex_escape(title)}}}\n"
        f"{body}"
        "\\end{document}\n"
    )
