"""The wheel facts layer: index listings, PEP 658 metadata and single members of remote wheels, cached."""
