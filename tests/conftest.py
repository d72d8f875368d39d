"""Test-session setup: every temporary file of the run lives under one directory, removed at the end.

Tests and the helpers in lbd.testing use ``tempfile`` freely (work dirs for
lbd, Apache, sockets); pointing ``tempfile.tempdir`` at a per-run directory
keeps /tmp clean without each test having to clean up after itself.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_BASE = tempfile.mkdtemp(prefix="lbd-tests-")
os.chmod(_BASE, 0o755)  # Apache's workers (www-data) traverse into their ServerRoot below it
tempfile.tempdir = _BASE

if not os.environ.get("LBD_KEEP_TMP"):
    # At exit, after pytest has finished with its own tmp_path directories below it.
    atexit.register(shutil.rmtree, _BASE, True)
