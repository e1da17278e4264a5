"""vexpress.training."""
