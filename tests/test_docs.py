"""Every code block of the README and of docs/*.md runs in a test, as written.

- ``python`` blocks of a page run in order in one fresh process (so a later block uses what an earlier
  one made), in a temporary working folder: the ``runs/`` and ``saved_models/`` they write land there.
- ``sh`` blocks: every command runs. ``tf-lth run ...`` with ``--dry-run`` added (in this process): every
  option, file and TF_CONFIG is checked exactly as the real run checks them, and the plan printed, but
  nothing trains (the documented runs take minutes to days). ``make X`` runs as ``make -n X`` (what it
  would do). Other ``tf-lth`` commands and ``python scripts/...`` commands name run folders the
  documented runs would have written: they are parsed by their own parsers (flags, choices, values)
  and, for a script, run with ``--help``. Installing system packages (``sudo apt-get ...``) is not run.
- ``text`` / ``json`` blocks are output or file layouts, not code; a fence without a language fails
  (say which it is).
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
NOT_CODE = ("text", "json", "yaml")
NOT_RUN = ("sudo ", "apt-get ", "pip install ")  # installing packages on the machine


def blocks(page: Path) -> list[tuple[str, str]]:
    return FENCE.findall(page.read_text())


def commands(script: str) -> list[tuple[dict, list[str]]]:
    """``(environment, argv)`` of each command of a shell block (continuation lines joined, comments
    and ``VAR=value`` prefixes taken apart)."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if words:
            found.append((env, words))
    return found


def test_every_fence_says_what_it_holds():
    for page in PAGES:
        bad = [i for i, (language, _) in enumerate(blocks(page)) if not language]
        assert not bad, f"{page.name}: code blocks {bad} have no language (python, sh, or text for output)"


@pytest.mark.heavy
def test_shell_commands_are_checked_by_their_own_parsers(tmp_path, monkeypatch, capsys):
    from tf_lth import cli

    monkeypatch.chdir(tmp_path)
    checked, scripts = 0, []
    for page in PAGES:
        for language, script in blocks(page):
            if language not in ("sh", "bash", "console"):
                continue
            for env, argv in commands(script):
                line = " ".join(argv)
                if line.startswith(NOT_RUN):
                    continue
                if argv[0] == "make":
                    done = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True)
                    assert done.returncode == 0, (page.name, line, done.stderr)
                elif argv[0] == "tf-lth" and argv[1] == "run":
                    with monkeypatch.context() as m:
                        for key, value in env.items():
                            m.setenv(key, value)
                        code = cli.main([*argv[1:], "--dry-run"])
                    out = capsys.readouterr()
                    assert code == 0 and out.out.startswith("would run:"), (page.name, line, out.err)
                elif argv[0] == "tf-lth":
                    try:
                        cli.build_parser().parse_args(argv[1:])
                    except SystemExit as e:
                        assert e.code == 0, (page.name, line)
                elif argv[0] in ("python", "python3") and argv[1].startswith("scripts/"):
                    assert (ROOT / argv[1]).is_file(), (page.name, line)
                    scripts.append(argv[1])
                else:
                    pytest.fail(f"{page.name}: no rule to check `{line}`")
                checked += 1
    assert checked >= 10
    # every script named answers --help (one process: TensorFlow loads once)
    code = ("import runpy, sys\nfor script in sys.argv[1:]:\n    sys.argv = [script, '--help']\n    try:\n"
            "        runpy.run_path(script, run_name='__main__')\n    except SystemExit as e:\n"
            "        assert e.code in (0, None), script\n    else:\n        raise AssertionError(script + ' ran on')\n")
    done = subprocess.run([sys.executable, "-c", code, *sorted(set(scripts))], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.heavy
@pytest.mark.parametrize("page", [p for p in PAGES if any(lang == "python" for lang, _ in blocks(p))],
                         ids=lambda p: p.name)
def test_python_blocks_run_as_written(page, tmp_path):
    code = "\n\n".join(script for language, script in blocks(page) if language == "python")
    (tmp_path / "page.py").write_text(code)
    done = subprocess.run([sys.executable, "page.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"
