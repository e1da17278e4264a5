"""vexpress.synthetic."""
