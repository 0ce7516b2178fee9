"""Every ```python block in README.md and docs/*.md runs as pasted.

Each block runs alone in a fresh interpreter, so a block that leans on names from an earlier
block fails here as it would for a reader. The code is compiled under the Markdown file's path
with its line numbers, so a traceback names the file and line of the failing statement. Blocks
that are not meant to run (long jobs, shell, output) are fenced as bash or text instead.
"""
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")
# Runs the block the way `python file.py` would, but compiled under the Markdown file's name,
# padded so that line numbers in a traceback are the Markdown file's.
RUNNER = ("import sys; path, first = sys.argv[1], int(sys.argv[2]); "
          "source = '\\n' * (first - 1) + sys.stdin.read(); "
          "exec(compile(source, path, 'exec'), {'__name__': '__main__'})")
TIMEOUT_S = 300


def fenced_blocks(path):
    """(info string, first line number of the code, code) of every fenced block in a Markdown
    file; the fence's own indentation (a block inside a list item) is removed from its lines."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body, i = [], i + 1
        first = i + 1
        while i < len(lines) and not re.match(
                rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path.name}:{first - 1}: fence never closed")
        blocks.append((opening["info"].lower(), first, "\n".join(body) + "\n"))
        i += 1
    return blocks


def python_blocks(paths):
    return [(path, first, code) for path in paths
            for info, first, code in fenced_blocks(path) if info in ("python", "py", "python3")]


def run_block(path, first, code, cwd):
    return subprocess.run([sys.executable, "-c", RUNNER, str(path), str(first)], input=code,
                          capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT_S)


BLOCKS = python_blocks(DOCS)


@pytest.mark.parametrize("path, first, code", BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{first}" for p, first, _ in BLOCKS])
def test_python_block_runs(path, first, code, tmp_path):
    # A scratch directory as cwd: blocks may write files, and the installed package is imported.
    done = run_block(path, first, code, tmp_path)
    assert done.returncode == 0, (
        f"the ```python block at {path.relative_to(ROOT)}:{first} failed "
        f"(exit {done.returncode}):\n{done.stderr[-4000:]}")


def test_docs_have_python_blocks():
    files = {path.name for path, _, _ in BLOCKS}
    assert "README.md" in files and len(BLOCKS) >= 5, files


def test_runner_names_the_file_and_line_of_a_failure(tmp_path):
    doc = tmp_path / "broken.md"
    doc.write_text("Text.\n\n```python\nx = 1\nprint(y)\n```\n\n```bash\nnot python\n```\n"
                   "  ```python\n  assert True\n  ```\n")
    (bad, bad_first, bad_code), (good, good_first, good_code) = python_blocks([doc])
    assert (bad_first, good_first, good_code) == (4, 12, "assert True\n")
    done = run_block(bad, bad_first, bad_code, tmp_path)
    assert done.returncode != 0
    assert f'File "{doc}", line 5' in done.stderr and "NameError" in done.stderr, done.stderr
    assert run_block(good, good_first, good_code, tmp_path).returncode == 0


def anchors(path):
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped,
    spaces as hyphens (headings inside fenced blocks are not headings)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
            for title in re.findall(r"^#{1,6} (.*)$", text, flags=re.M)}


def test_relative_links_resolve():
    # Sections moved between README.md and docs/; a link to a file or heading that is not
    # there is stale.
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            path, _, anchor = target.partition("#")
            if "://" in target:
                continue
            linked = (doc.parent / path) if path else doc
            if not linked.exists() or (anchor and linked.suffix == ".md"
                                       and anchor not in anchors(linked)):
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_test_command_is_what_ci_runs():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    for command in ('pip install ".[test]"', "python -m pytest tests -q"):
        assert command in readme and command in ci, command
