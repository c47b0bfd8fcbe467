"""Signal dispositions for the child processes of tests that signal them.

A shell runs background jobs with SIGINT ignored, and an ignored signal stays
ignored across ``exec``: a Python child then never turns Ctrl-C into
``KeyboardInterrupt``. A test that sends a signal sets the disposition it relies on.
"""

from __future__ import annotations

import signal


def default_signals() -> None:
    """``preexec_fn`` for ``subprocess.Popen``: SIGINT and SIGTERM as a terminal gives them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
