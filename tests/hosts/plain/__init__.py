"""A plain Django project that adds the app by following the README's three steps and nothing else."""
