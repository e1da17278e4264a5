"""``vexpress-preprocess``: real talking-head videos (or an official preparation) -> a vexpress dataset.

    vexpress-preprocess input=/data/HDTF/clips output=/data/hdtf_prepared workers=8
    vexpress-preprocess official_meta=[hdtf.json] output=/data/hdtf_prepared
"""

from __future__ import annotations

import os
from pathlib import Path

from vexpress.cli._common import hydra_main, stops_cleanly, user_errors


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


@user_errors
@stops_cleanly
def run(cfg) -> dict:
    from omegaconf import OmegaConf

    from vexpress.errors import InputError
    from vexpress.preprocessing.clips import REPORT, format_report, preprocess
    from vexpress.utils.io import check_writable, removing_empty_new_folders

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(str(cfg.output)).expanduser()
    with removing_empty_new_folders(out):  # a failed run leaves no empty output folder behind
        check_writable(out / "manifest.json", "dataset manifest")
        metas = _as_list(cfg.official_meta)
        if metas:
            from vexpress.preprocessing.official import import_official

            report = import_official(metas, out, base_dir=cfg.official_base_dir)
        else:
            inputs = _as_list(cfg.input)
            if not inputs:
                raise InputError("give input=<folder, video or .txt list> (or official_meta=[...])")
            pcfg = OmegaConf.to_container(cfg.preprocess, resolve=True)
            report = preprocess(inputs, out, pcfg, workers=int(cfg.workers), progress=bool(cfg.progress),
                                input_root=cfg.input_root)
    print(format_report(report), flush=True)
    if not report["kept"]:
        raise InputError(f"no clip was usable: all {report['inputs']} input(s) were skipped; the reasons are above "
                         f"and in {out / REPORT}")
    return report


def main() -> None:
    hydra_main("preprocess", run, "vexpress-preprocess")  # one-line config errors, --help of its own groups


if __name__ == "__main__":
    main()
