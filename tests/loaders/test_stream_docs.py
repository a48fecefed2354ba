"""The documented stream snippet is a script a fork server can start workers from."""
import ast
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def _stream_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return next(b for b in blocks if "stream.loader(" in b)


def test_the_stream_snippet_guards_its_entry_and_passes_a_picklable_transform():
    """A fork server's worker imports the script as its main module: the training loop must sit under
    `if __name__ == "__main__":`, and the transform must be a module-level function (a lambda does not
    pickle into the workers)."""
    tree = ast.parse(_stream_snippet())
    guards = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert guards, "the snippet has no `if __name__ == \"__main__\":` guard"
    top_level_calls = [n for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert top_level_calls == []  # nothing runs when a worker imports it
    streams = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "DRRStream"]
    transforms = [k.value for s in streams for k in s.keywords if k.arg == "transform"]
    assert transforms and not any(isinstance(t, ast.Lambda) for t in transforms)
