"""vexpress.kps."""
