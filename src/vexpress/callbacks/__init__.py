"""vexpress.callbacks."""
