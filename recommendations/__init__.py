"""django-recommendations: a reusable Django app that recommends products from what a shop's own shoppers do."""

__version__ = "0.2.0"
