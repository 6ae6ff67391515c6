"""The command line as a shell pipeline sees it."""

from __future__ import annotations

import subprocess
import sys


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`pruneofa recipes | head -1`: the pipe closes before the listing is written; the command exits
    with the shell's SIGPIPE status and no traceback, rather than a BrokenPipeError."""
    proc = subprocess.Popen([sys.executable, "-m", "pruneofa", "recipes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has even imported pruneofa: every write hits a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
