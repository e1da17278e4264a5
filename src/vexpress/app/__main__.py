"""``python -m vexpress.app weights=...``: the same as ``vexpress-app``."""

from vexpress.app.cli import main

if __name__ == "__main__":
    main()
