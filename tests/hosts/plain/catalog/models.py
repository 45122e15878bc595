"""A host catalogue whose fields are named its own way (no `name`, no `price` attribute on the product)."""

from django.db import models


class Shelf(models.Model):
    slug = models.SlugField(unique=True)

    def __str__(self) -> str:
        return self.slug


class Item(models.Model):
    title = models.CharField(max_length=200)
    shelf = models.ForeignKey(Shelf, on_delete=models.PROTECT)
    cost = models.DecimalField(max_digits=8, decimal_places=2)
    stock = models.IntegerField(default=10)
    blurb = models.TextField(blank=True)
    added = models.DateTimeField(auto_now_add=True)
    published = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return f"/items/{self.pk}/"
