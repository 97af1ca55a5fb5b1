"""Work on one host, knowing nothing of tasks or Prefect: SSH (and a fake runner), the agent CLI, the inventory."""
