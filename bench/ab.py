"""Run one benchmark at another commit and at this working tree, in turn, and print both with ratios.

The other commit is checked out in a temporary git worktree and imported through PYTHONPATH, so
both sides run on this machine, with this environment, minutes apart. Lines that have the same
shape in both outputs are printed once, each number followed by new / old.

    python bench/ab.py 043bfae bench/speed.py
    python bench/ab.py HEAD~3 bench/serve.py --requests 16
"""

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"^-?\d+(\.\d+)?[x%]?$")


def run(tree: Path, script: str, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'shared'}{os.pathsep}{tree}"}
    done = subprocess.run([sys.executable, script, *args], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{script} failed in {tree}:\n{done.stderr[-2000:]}")
    return done.stdout


def _value(field: str) -> float:
    return float(field.rstrip("x%"))


def _key(line: str) -> tuple[str, ...]:
    """A line's identity: its words, with every number after the first word that is not a number
    replaced by '#' (leading numbers, such as tokens and batch, name the row; the others are measured)."""
    words = line.split()
    label = next((i for i, word in enumerate(words) if not NUMBER.match(word)), len(words))
    return tuple(w if i <= label or not NUMBER.match(w) else "#" for i, w in enumerate(words))


def _with_ratios(old: str, new: str) -> str:
    """The new line, each measured number followed by (new/old); the row's labels as they are."""
    fa, fb = old.split(), new.split()
    cells = []
    for x, y, shape in zip(fa, fb, _key(new)):
        cells.append(f"{y}({_value(y) / _value(x):.2f})" if shape == "#" and _value(x) else y)
    return " ".join(cells)


def merge(old: str, new: str) -> list[str]:
    """Every line of the new output, in order; a line whose shape matches a line of the old output
    has each number followed by (new/old). Lines are paired by shape, so rows added, dropped or
    reordered in either output leave the others paired right."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(None, [_key(x) for x in old_lines], [_key(x) for x in new_lines], autojunk=False)
    out = list(new_lines)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            out[block.b + k] = _with_ratios(old_lines[block.a + k], new_lines[block.b + k])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", help="the other commit (the baseline)")
    parser.add_argument("script", help="benchmark script, relative to the repository root")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old_tree), args.base], cwd=ROOT, check=True)
        try:
            old = run(old_tree, args.script, args.args)
            new = run(ROOT, args.script, args.args)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=True)
    print(f"--- {args.script} at {args.base} (baseline)\n{old}")
    print(f"--- {args.script} in this tree, each number followed by (this / baseline)")
    print("\n".join(merge(old, new)))


if __name__ == "__main__":
    main()
