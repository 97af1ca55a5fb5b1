"""How the flow is launched: the CLI, the sandbox, (later) Prefect deployments and the HTTP API."""
