"""Orchestration: the Prefect flow, the plan, the task store and the view."""
