"""vexpress.metrics."""
