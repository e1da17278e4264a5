"""Data: dataset records, video I/O and training samples (see ``docs/data.md``).

    vexpress.data.records     load_manifest(root, split) -> list[ClipRecord]; write_clip; write_manifest
    vexpress.data.video       VideoReader (seek decoding), probe_video, iter_frames, write_video
    vexpress.data.talking_face TalkingFaceDataset, EpochSampler
    vexpress.data.batch       the batch keys (VideoBatch, check_batch)
    vexpress.data.cache       build_latent_cache / LatentCache (memory-mapped VAE latents + audio features)

Nothing heavy is imported here; import the submodules you need. The training app's LightningDataModule over these
(``conf/data/*.yaml``) is :class:`vexpress.training.datamodule.TalkingFaceDataModule`: it also generates the
synthetic set, so it sits above both ``data`` and ``synthetic``.
"""
