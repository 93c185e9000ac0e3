"""Running explanations past one process: Ray actors for the batches of one plan, Ray Serve for replicas."""
