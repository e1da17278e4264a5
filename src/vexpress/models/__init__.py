"""vexpress.models."""
