"""``vexpress-extract-kps``: driving keypoints (512x512 coordinates) + the audio track of a video.

    vexpress-extract-kps video=driving.mp4 output=driving_kps.pth
"""

from __future__ import annotations

from pathlib import Path

from vexpress.cli._common import hydra_main, stops_cleanly, user_errors


@user_errors
@stops_cleanly
def run(cfg) -> tuple[Path, Path | None]:
    from vexpress.preprocessing.kps_extract import check_output_names, extract_kps_and_audio
    from vexpress.utils.io import check_writable, removing_empty_new_folders

    output = Path(str(cfg.output)).expanduser()
    audio = Path(str(cfg.audio_output)).expanduser() if cfg.audio_output else output.with_suffix(".wav")
    check_output_names(output, audio)  # before any work or folder creation
    with removing_empty_new_folders(output.parent, audio.parent):  # a failed run leaves no empty folder
        output = check_writable(output, "keypoint file")
        audio = check_writable(audio, "audio file")
        kps_path, audio_path = extract_kps_and_audio(Path(str(cfg.video)).expanduser(), output, audio,
                                                     size=int(cfg.size), mode=str(cfg.mode),
                                                     min_face_fraction=float(cfg.min_face_fraction))
    import torch

    n = torch.load(kps_path, weights_only=True).shape[0]
    print(f"keypoints: {kps_path} ({n} frames, {cfg.size}x{cfg.size} coordinates)")
    print(f"audio: {audio_path}" if audio_path else "audio: none (the video has no audio track)")
    return kps_path, audio_path


def main() -> None:
    hydra_main("extract_kps", run, "vexpress-extract-kps")  # one-line config errors, --help of its own groups


if __name__ == "__main__":
    main()
