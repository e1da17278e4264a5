"""``python -m vexpress.app weights=...``: the same as ``vexpress-app``."""

from vexpress.app.cli import main

main()
