"""One file per schema revision, ``NNNN_what.py`` with ``revision = "NNNN"``: a package so that wheels ship them."""
