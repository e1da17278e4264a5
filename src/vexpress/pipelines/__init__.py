"""vexpress.pipelines."""
