"""vexpress.audio."""
