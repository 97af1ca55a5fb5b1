"""How the flow is launched: the CLI, the OCP-compatible HTTP API, Prefect deployments, and the sandbox."""
