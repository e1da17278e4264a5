"""Data: dataset records, video I/O, training samples and the DataModule (see ``docs/data.md``).

    vexpress.data.records     load_manifest(root, split) -> list[ClipRecord]; write_clip; write_manifest
    vexpress.data.video       VideoReader (seek decoding), probe_video, iter_frames, write_video
    vexpress.data.talking_face TalkingFaceDataset, EpochSampler
    vexpress.data.datamodule  TalkingFaceDataModule (conf/data/*.yaml)
    vexpress.data.batch       the batch keys (VideoBatch, check_batch)
    vexpress.data.cache       build_latent_cache / LatentCache (memory-mapped VAE latents + audio features)

Nothing heavy is imported here; import the submodules you need.
"""
