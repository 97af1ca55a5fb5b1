"""Orchestration: the plan, OCP's task state machine, the task store, the view, and the Prefect flow."""
