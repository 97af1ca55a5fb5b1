"""The task store's schema revisions (Alembic): ``env.py`` runs them, ``versions/NNNN_*.py`` are the revisions, in
order, each with ``revision = "NNNN"``. ``flows/store/migrate.py`` drives them; nothing here is imported at run time."""
