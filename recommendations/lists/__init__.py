"""The stored lists' write side: the batch precompute, the per-shopper refresh, purchase events read for their
lists, and the serving model loaded to score them (its read side is `recommendations.store`)."""
