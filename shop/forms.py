"""The store's forms: add to cart (with the stock rule), checkout details, and signup."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from shop.cart import MAX_LINE_QUANTITY
from shop.models import Order, Product


class AddToCartForm(forms.Form):
    """Validates a quantity against what is left: stock minus what the cart already holds."""

    quantity = forms.IntegerField(min_value=1, max_value=MAX_LINE_QUANTITY, initial=1)

    def __init__(self, *args: Any, product: Product, in_cart: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.product = product
        self.in_cart = in_cart
        self.fields["quantity"].widget.attrs.update({"class": "qty-input", "inputmode": "numeric"})
        available = max(product.stock - in_cart, 0)
        if available:
            self.fields["quantity"].widget.attrs["max"] = min(available, MAX_LINE_QUANTITY)

    def clean_quantity(self) -> int:
        quantity = self.cleaned_data["quantity"]
        stock = self.product.stock
        if stock <= 0:
            raise forms.ValidationError(_("%(product)s is out of stock.") % {"product": self.product.name})
        if quantity + self.in_cart > stock:
            if self.in_cart:
                raise forms.ValidationError(
                    _(
                        "Only %(stock)s left in stock and %(in_cart)s already in your cart; "
                        "you can add at most %(more)s more."
                    )
                    % {"stock": stock, "in_cart": self.in_cart, "more": max(stock - self.in_cart, 0)}
                )
            raise forms.ValidationError(_("Only %(stock)s left in stock.") % {"stock": stock})
        return quantity


class CheckoutForm(forms.ModelForm):
    """Delivery details; required here even though the model allows blanks (orders from imports may lack them)."""

    class Meta:
        model = Order
        fields = ["full_name", "email", "address"]
        labels = {
            "full_name": gettext_lazy("Full name"),
            "email": gettext_lazy("Email"),
            "address": gettext_lazy("Delivery address"),
        }
        widgets = {"address": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = True
        self.fields["full_name"].widget.attrs["autocomplete"] = "name"
        self.fields["email"].widget.attrs["autocomplete"] = "email"
        self.fields["address"].widget.attrs["autocomplete"] = "street-address"


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text=gettext_lazy("Optional; used to prefill checkout."))

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")
