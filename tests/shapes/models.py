"""The test host's catalog: a product in several categories, priced and stocked by its offers."""

from __future__ import annotations

import uuid

from django.db import models


class Category(models.Model):
    slug = models.SlugField(unique=True)
    depth = models.PositiveSmallIntegerField(default=1)

    def __str__(self) -> str:
        return self.slug


class Product(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    blurb = models.TextField(blank=True, default="")
    categories = models.ManyToManyField(Category, related_name="products", blank=True)
    published = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.title


class Offer(models.Model):
    product = models.ForeignKey(Product, related_name="offers", on_delete=models.CASCADE)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.product} at {self.price}"
