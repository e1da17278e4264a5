"""vexpress.data."""
