"""Learning from the database: events and profiles read from the ORM, training runs and the gate, model artefacts.

The arithmetic lives in `recommendations.engine` (pure numpy/TensorFlow, no Django); this package feeds it rows
and records what it made.
"""
