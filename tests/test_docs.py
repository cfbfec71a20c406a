"""The documentation site: every page is in the navigation and every relative link resolves.

`mkdocs build --strict` (run by .ci/run with the `docs` extra) checks the same links with
MkDocs itself; this test needs nothing beyond the core install, so the fast tier catches a
page left out of the navigation (MkDocs only mentions those) or a link to a missing page.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {node!r}")


def test_every_docs_page_is_in_the_navigation_and_every_nav_entry_exists():
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav)), "a page is listed twice in the navigation"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_relative_links_in_docs_and_readme_resolve():
    broken = []
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in _relative_links(page.read_text()):
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


README = ROOT / "README.md"


def test_readme_is_a_front_page_of_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200


def test_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    pytest_line = next(line for line in ci.splitlines() if "-m pytest" in line)
    ci_args = pytest_line.split("-m pytest", 1)[1].strip()
    assert f"python -m pytest {ci_args}" in README.read_text()
    # ...after installing every extra CI installs for the tests (the docs extra only builds
    # the site), so a test needing an extra is never green in CI and red from the README.
    ci_extras = set(re.search(r'EXTRAS="([^"]+)"', ci).group(1).split(",")) - {"docs"}
    readme_extras = re.search(r"pip install -e '\.\[([^\]]+)\]' && python -m pytest", README.read_text())
    assert readme_extras and set(readme_extras.group(1).split(",")) == ci_extras


def test_every_option_in_the_readme_command_table_exists():
    """Each example line of the README's command table names options the command has."""
    from typer.testing import CliRunner

    from mrd_cli.cli.app import app

    text = README.read_text()
    table = text[text.index("## Commands") :].split("\n## ", 1)[0]
    examples = re.findall(r"\| `(mrd [^`]+)` \|\s*$", table, flags=re.M)
    assert len(examples) >= 10
    runner = CliRunner()
    for example in examples:
        words = example.split()
        command = words[1:3] if words[1] == "data" else words[1:2]
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (example, result.output)
        for option in (w for w in words if w.startswith("--")):
            assert option in result.output, f"{example}: {option} not in `mrd {' '.join(command)} --help`"
