"""The ground floor: errors, strict config loading, durable file writes, strict JSON, logs, the image spec, exit codes."""
