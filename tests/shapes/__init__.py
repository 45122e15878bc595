"""A host product shape the demo shop does not have, installed for the tests only (tests/settings.py).

UUID primary keys, a many-to-many `categories` (with a depth, for "the deepest category"), and the price and stock
on related offer rows: the shape of the issue's wrong-features case (issue 12).
"""
