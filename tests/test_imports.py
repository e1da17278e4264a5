"""Importing the package is cheap, and every module imports."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import vexpress


def test_import_vexpress_is_cheap():
    code = ("import sys, vexpress, vexpress.errors, vexpress.utils.io; "
            "heavy = [m for m in ('torch', 'diffusers', 'lightning', 'mediapipe', 'av', 'wandb', 'transformers') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"`import vexpress` pulled in heavy modules: {out}"


def test_every_module_imports():
    failures = {}
    for info in pkgutil.walk_packages(vexpress.__path__, prefix="vexpress."):
        try:
            importlib.import_module(info.name)
        except Exception as err:  # noqa: BLE001 - report all at once
            failures[info.name] = f"{type(err).__name__}: {err}"
    assert failures == {}
