"""vexpress.evaluation."""
