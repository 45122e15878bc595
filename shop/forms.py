"""The store's forms: add to cart (with the stock rule), checkout details, and signup."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import UserCreationForm

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
            raise forms.ValidationError(f"{self.product.name} is out of stock.")
        if quantity + self.in_cart > stock:
            if self.in_cart:
                raise forms.ValidationError(
                    f"Only {stock} left in stock and {self.in_cart} already in your cart; "
                    f"you can add at most {max(stock - self.in_cart, 0)} more."
                )
            raise forms.ValidationError(f"Only {stock} left in stock.")
        return quantity


class CheckoutForm(forms.ModelForm):
    """Delivery details; required here even though the model allows blanks (orders from imports may lack them)."""

    class Meta:
        model = Order
        fields = ["full_name", "email", "address"]
        labels = {"full_name": "Full name", "email": "Email", "address": "Delivery address"}
        widgets = {"address": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = True
        self.fields["full_name"].widget.attrs["autocomplete"] = "name"
        self.fields["email"].widget.attrs["autocomplete"] = "email"
        self.fields["address"].widget.attrs["autocomplete"] = "street-address"


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional; used to prefill checkout.")

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")
