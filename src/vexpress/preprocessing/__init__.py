"""vexpress.preprocessing."""
