"""Work on a host: SSH, agent control, the inventory, and one Prefect task per kind of DAG node."""
