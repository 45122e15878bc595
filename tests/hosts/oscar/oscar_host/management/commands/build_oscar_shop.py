"""Build a small Oscar catalogue: a few hundred products in nested categories, with stock records and variants.

Books are standalone products, one stock record each (every tenth also sits in a second category, every fifteenth
is sold out); clothing items are parents whose sizes are child products with their own prices and stock, and a
"brand" attribute. Three products have fixed UPCs the tests look for:
- HOST-TWOCATS: a book in "Books > Fiction" and in the deeper "Books > Non-fiction > History";
- HOST-PARENT: a shirt whose sizes cost 13.00 (in stock) and 9.00 (sold out);
- HOST-SOLDOUT: a shirt whose every size is sold out.
The same arguments build the same shop (a seeded random generator).
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from oscar.apps.catalogue.categories import create_from_breadcrumbs
from oscar.core.loading import get_model

Category = get_model("catalogue", "Category")
Product = get_model("catalogue", "Product")
ProductClass = get_model("catalogue", "ProductClass")
ProductAttribute = get_model("catalogue", "ProductAttribute")
Partner = get_model("partner", "Partner")
StockRecord = get_model("partner", "StockRecord")
Country = get_model("address", "Country")

BOOK_CATEGORIES = [
    "Books > Fiction > Crime",
    "Books > Fiction > Fantasy",
    "Books > Fiction > Romance",
    "Books > Non-fiction > History",
    "Books > Non-fiction > Science",
    "Books > Non-fiction > Cooking",
]
CLOTHING_CATEGORIES = ["Clothing > Shirts", "Clothing > Trousers", "Clothing > Hats"]
BRANDS = ["Acme", "Northwind", "Contoso"]
SIZES = ["S", "M", "L"]


class Command(BaseCommand):
    help = "Build a small Oscar catalogue (nested categories, stock records, variants) for the host tests."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--products", type=int, default=300, help="Parent and standalone products in all.")
        parser.add_argument("--seed", type=int, default=12)

    @transaction.atomic
    def handle(self, *args: Any, products: int, seed: int, **options: Any) -> None:
        rng = random.Random(seed)
        Country.objects.update_or_create(
            iso_3166_1_a2="GB",
            defaults={"printable_name": "United Kingdom", "name": "United Kingdom", "is_shipping_country": True},
        )
        partner, _ = Partner.objects.get_or_create(name="Warehouse")
        books = ProductClass.objects.create(name="Book", requires_shipping=True, track_stock=True)
        clothing = ProductClass.objects.create(name="Clothing", requires_shipping=True, track_stock=True)
        ProductAttribute.objects.create(product_class=clothing, name="Brand", code="brand", type="text")
        book_leaves = [create_from_breadcrumbs(path) for path in BOOK_CATEGORIES]
        clothing_leaves = [create_from_breadcrumbs(path) for path in CLOTHING_CATEGORIES]
        fiction = Category.objects.get(name="Fiction")
        history = Category.objects.get(name="History")
        shirts = Category.objects.get(name="Shirts")

        def stock(product: Any, price: str | Decimal, num: int) -> None:
            StockRecord.objects.create(
                product=product,
                partner=partner,
                partner_sku=f"SKU-{product.pk}",
                price=Decimal(price),
                num_in_stock=num,
            )

        def book(title: str, upc: str, categories: list[Any], price: str | Decimal, num: int) -> Any:
            product = Product.objects.create(
                title=title, upc=upc, product_class=books, structure="standalone", description=f"<p>{title}.</p>"
            )
            product.categories.add(*categories)
            stock(product, price, num)
            return product

        def shirt(title: str, upc: str, category: Any, brand: str, sizes: list[tuple[str, str, int]]) -> Any:
            parent = Product(title=title, upc=upc, product_class=clothing, structure="parent")
            parent.description = f"{title}, in {len(sizes)} sizes."
            parent.attr.brand = brand
            parent.save()
            parent.categories.add(category)
            for size, price, num in sizes:
                child = Product.objects.create(
                    title=f"{title} ({size})", upc=f"{upc}-{size}", structure="child", parent=parent
                )
                stock(child, price, num)
            return parent

        book("Two shelves", "HOST-TWOCATS", [fiction, history], "12.50", 5)
        shirt("Anchor shirt", "HOST-PARENT", shirts, "Acme", [("M", "13.00", 4), ("S", "9.00", 0)])
        shirt("Sold-out shirt", "HOST-SOLDOUT", shirts, "Northwind", [("M", "20.00", 0), ("L", "22.00", 0)])
        count = 3
        parents = products // 5
        for index in range(parents - 2):
            leaf = clothing_leaves[index % len(clothing_leaves)]
            base = Decimal(rng.randrange(1500, 6000)) / 100
            sizes = [
                (size, str(base + offset), 0 if index % 11 == 0 else rng.randrange(1, 20))
                for offset, size in enumerate(SIZES[: 2 + index % 2])
            ]
            shirt(f"{leaf.name} {index}", f"CL-{index:04d}", leaf, BRANDS[index % len(BRANDS)], sizes)
            count += 1
        for index in range(products - count):
            leaf = book_leaves[index % len(book_leaves)]
            categories = [leaf]
            if index % 10 == 0:
                categories.append(book_leaves[(index + 3) % len(book_leaves)])
            price = Decimal(rng.randrange(500, 4000)) / 100
            book(f"{leaf.name} book {index}", f"BK-{index:04d}", categories, price, 0 if index % 15 == 0 else 7)
            count += 1
        self.stdout.write(f"Built {count} products ({Product.objects.filter(structure='child').count()} variants).")
