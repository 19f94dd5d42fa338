"""Progressive delivery: a pure rollout engine shared by local mode and the operator."""
