"""The stored lists. Write side: the batch precompute, the per-shopper refresh, purchase events read for their lists,
and the serving model loaded to score them. Read side: `store` (the active set, list reads, the process hold).

Imports nothing itself: `store` sits below the tunables and serving, `precompute` and `refresh` above `store`, and
importing any of them runs this module first.
"""
