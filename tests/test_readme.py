"""The README's tour runs the bundled starter: every `unmask generate` shown there prints what it shows."""

import re
import shlex
from pathlib import Path

import pytest

from diffusion_core.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _sessions() -> list[tuple[str, str]]:
    """(command, printed output) for each `$ unmask generate ...` in the tour's first code block."""
    text = README.read_text()
    section = text[text.index("### Generate from the command line") :]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "the tour's command-line section has a code block"
    sessions, current = [], None
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            current = [line[2:], []]
            sessions.append(current)
        elif current is not None and line:
            current[1].append(line)
    return [(command, "\n".join(output)) for command, output in sessions]


SESSIONS = _sessions()


def test_the_tour_shows_generation_with_steps_blanks_samples_and_an_error():
    commands = [c for c, _ in SESSIONS]
    assert len(commands) >= 4 and all(c.startswith("unmask generate") for c in commands)
    assert any("--show-steps" in c for c in commands) and any("<mask>" in c for c in commands)


@pytest.mark.parametrize(("command", "shown"), SESSIONS, ids=[c[:60] for c, _ in SESSIONS])
def test_each_command_prints_what_the_readme_shows(command, shown, capsys, monkeypatch):
    monkeypatch.delenv("UNMASK_MODEL", raising=False)  # the bundled starter
    code = main(shlex.split(command)[1:])
    out, err = capsys.readouterr()
    printed = (out + err).rstrip("\n")
    if code:
        printed += f"\n(exit status {code})"
    assert printed == shown
