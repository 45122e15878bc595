"""The shop's adapter: Oscar's, with the clothing's "brand" attribute named as the brand."""

from recommendations.contrib.oscar import OscarProductAdapter


class ShopProductAdapter(OscarProductAdapter):
    brand_attribute = "brand"
