"""Run one benchmark at another commit and at this working tree, in turn, and print both with ratios.

The other commit is checked out in a temporary git worktree and imported through PYTHONPATH, so
both sides run on this machine, with this environment, minutes apart. Lines that have the same
shape in both outputs are printed once, each number followed by new / old.

    python bench/ab.py 043bfae bench/speed.py
    python bench/ab.py HEAD~3 bench/serve.py --requests 16
"""

import argparse
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


def merge(old: str, new: str) -> list[str]:
    """New output, each number of a line shaped like its old twin followed by (new/old)."""
    out = []
    for a, b in zip(old.splitlines(), new.splitlines()):
        fa, fb = a.split(), b.split()
        numeric = [NUMBER.match(x) and NUMBER.match(y) for x, y in zip(fa, fb)]
        if len(fa) != len(fb) or not any(numeric):
            out.append(b)
            continue
        cells = []
        for x, y, is_number in zip(fa, fb, numeric):
            ratio = f"({_value(y) / _value(x):.2f})" if is_number and _value(x) else ""
            cells.append(f"{y}{ratio}")
        out.append(" ".join(cells))
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
