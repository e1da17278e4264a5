"""``vexpress-app``: serve the browser app (``conf/app.yaml``).

    vexpress-app weights=EXPORT_DIR [vae=DIR] [audio_encoder.path=DIR] [port=7860] [height=64 width=64 fps=25]

The weights are found and loaded exactly as ``vexpress-generate`` does it (``weights=`` a training export, the
official release folder, or ``tiny``); the app's defaults for size, frame rate and sampling are those of
``conf/generate.yaml``, which ``conf/app.yaml`` extends. A problem the user can fix ends with ``error: <one line>``
and exit code 2 before the server starts.
"""

from __future__ import annotations

from vexpress.cli._common import user_errors


@user_errors
def run(cfg) -> None:
    from vexpress.app.ui import start

    start(cfg, block=True)


def main() -> None:
    from vexpress.cli import _common

    hydra_main = getattr(_common, "hydra_main", None)
    if hydra_main is not None:  # one-line configuration errors, --help of this command's groups
        hydra_main("app", run, "vexpress-app")
        return
    import hydra

    hydra.main(config_path=_common.config_path(), config_name="app", version_base="1.3")(run)()


if __name__ == "__main__":
    main()
