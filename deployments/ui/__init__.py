"""Screenshots of the Prefect UI as the operator's console (not part of the package's runtime or CI)."""
