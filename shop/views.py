"""Store pages: catalog, cart, checkout, orders, favourites and accounts, with the tracking calls each one owes.

Every shopper action is reported through the recommendations app's public API (`record_event`) exactly
once, at the point where it actually happened (after validation, after the order is saved), so the
engine learns from what shoppers did and not from what they merely attempted.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from recommendations.push.consent import preferences, set_email_consent
from recommendations.tracking import record_event
from shop.cart import Cart
from shop.forms import AddToCartForm, CheckoutForm, SignupForm
from shop.models import Category, Favorite, Order, OrderLine, Product

PAGE_SIZE = 12
SORTS = {"new": ("-created_at", "id"), "price": ("price", "id"), "-price": ("-price", "id"), "name": ("name", "id")}
SESSION_ORDERS_KEY = "orders"  # ids of orders placed in this session, so anonymous buyers can see theirs
MAX_QUERY_LENGTH = 100


def _active_products():
    return Product.objects.filter(is_active=True).select_related("category", "brand")


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return fallback


def home(request: HttpRequest) -> HttpResponse:
    context = {
        "new_arrivals": _active_products()[:8],
        "featured_categories": Category.objects.filter(products__is_active=True).distinct()[:6],
    }
    return render(request, "shop/home.html", context)


def product_list(request: HttpRequest) -> HttpResponse:
    products = _active_products()
    category = None
    category_slug = request.GET.get("category", "").strip()
    if category_slug:
        category = get_object_or_404(Category, slug=category_slug)
        products = products.filter(category=category)
    query = request.GET.get("q", "").strip()[:MAX_QUERY_LENGTH]
    if query:
        products = products.filter(
            Q(name__icontains=query) | Q(description__icontains=query) | Q(brand__name__icontains=query)
        )
    sort = request.GET.get("sort", "new")
    if sort not in SORTS:
        sort = "new"
    products = products.order_by(*SORTS[sort])
    page = Paginator(products, PAGE_SIZE).get_page(request.GET.get("page"))
    # One search per search, not one per page of its results.
    if query and page.number == 1:
        record_event(
            request,
            "search",
            query=query,
            context={"results": page.paginator.count, **({"category": category.slug} if category else {})},
        )
    params = request.GET.copy()
    params.pop("page", None)
    return render(
        request,
        "shop/product_list.html",
        {
            "page": page,
            "category": category,
            "query": query,
            "sort": sort,
            "sort_choices": [
                ("new", _("Newest")),
                ("price", _("Price: low to high")),
                ("-price", _("Price: high to low")),
                ("name", _("Name")),
            ],
            "page_params": params.urlencode(),
        },
    )


def _product_context(request: HttpRequest, product: Product, form: AddToCartForm) -> dict:
    is_favorite = request.user.is_authenticated and Favorite.objects.filter(user=request.user, product=product).exists()
    return {"product": product, "form": form, "is_favorite": is_favorite, "in_cart": form.in_cart}


def product_detail(request: HttpRequest, slug: str) -> HttpResponse:
    product = get_object_or_404(_active_products(), slug=slug)
    record_event(request, "view", product_id=str(product.pk), value=product.price)
    form = AddToCartForm(product=product, in_cart=Cart(request).quantity_of(product))
    return render(request, "shop/product_detail.html", _product_context(request, product, form))


def cart_detail(request: HttpRequest) -> HttpResponse:
    lines = Cart(request).lines()
    context = {"lines": lines, "total": Cart.total_of(lines), "cart_products": [line.product for line in lines]}
    return render(request, "shop/cart.html", context)


@require_POST
def cart_add(request: HttpRequest, product_id: int) -> HttpResponse:
    product = get_object_or_404(_active_products(), pk=product_id)
    cart = Cart(request)
    form = AddToCartForm(request.POST, product=product, in_cart=cart.quantity_of(product))
    if not form.is_valid():
        # The product page again with the error next to the field; 400 because the request was wrong.
        return render(request, "shop/product_detail.html", _product_context(request, product, form), status=400)
    quantity = form.cleaned_data["quantity"]
    cart.add(product, quantity)
    record_event(request, "add_to_cart", product_id=str(product.pk), quantity=quantity, value=product.price * quantity)
    messages.success(
        request, _("Added %(quantity)s x %(product)s to your cart.") % {"quantity": quantity, "product": product.name}
    )
    return redirect(_safe_next(request, reverse("cart")))


@require_POST
def cart_remove(request: HttpRequest, product_id: int) -> HttpResponse:
    product = get_object_or_404(Product, pk=product_id)
    removed = Cart(request).remove(product)
    if removed:
        record_event(
            request, "remove_from_cart", product_id=str(product.pk), quantity=removed, value=product.price * removed
        )
        messages.info(request, _("Removed %(product)s from your cart.") % {"product": product.name})
    return redirect("cart")


def _place_order(request: HttpRequest, cart: Cart, form: CheckoutForm) -> Order | None:
    """Create the order and its lines and take the stock, all or nothing; None (with a message) if stock ran out."""
    wanted = {line.product.pk: line.quantity for line in cart.lines()}
    with transaction.atomic():
        # Lock the rows so two shoppers cannot both buy the last unit.
        products = {p.pk: p for p in Product.objects.select_for_update().filter(pk__in=wanted, is_active=True)}
        short = [p for pk, p in products.items() if p.stock < wanted[pk]]
        missing = set(wanted) - set(products)
        if short or missing:
            for product in short:
                messages.error(
                    request,
                    _("Only %(stock)s of %(product)s left in stock; please update your cart.")
                    % {"stock": product.stock, "product": product.name},
                )
            if missing:
                messages.error(request, _("Some products in your cart are no longer available."))
            return None
        order = form.save(commit=False)
        if request.user.is_authenticated:
            order.user = request.user
        order.save()
        lines = [
            OrderLine(order=order, product=products[pk], quantity=quantity, unit_price=products[pk].price)
            for pk, quantity in wanted.items()
        ]
        OrderLine.objects.bulk_create(lines)
        for line in lines:
            line.product.stock -= line.quantity
            # save() (not a queryset update) so the product signal refreshes the engine's in-stock flag.
            line.product.save(update_fields=["stock"])
        order.total = sum(line.line_total for line in lines)
        order.save(update_fields=["total"])
        for line in lines:
            record_event(
                request,
                "purchase",
                product_id=str(line.product.pk),
                quantity=line.quantity,
                value=line.line_total,
                context={"order_id": order.pk},
            )
    return order


@require_http_methods(["GET", "POST"])
def checkout(request: HttpRequest) -> HttpResponse:
    cart = Cart(request)
    lines = cart.lines()
    if not lines:
        messages.info(request, _("Your cart is empty."))
        return redirect("cart")
    if request.method == "POST":
        form = CheckoutForm(request.POST)
        if form.is_valid():
            order = _place_order(request, cart, form)
            if order is None:
                return redirect("cart")
            cart.clear()
            request.session[SESSION_ORDERS_KEY] = [*request.session.get(SESSION_ORDERS_KEY, []), order.pk]
            messages.success(request, _("Thank you! Your order #%(number)s has been placed.") % {"number": order.pk})
            return redirect("order_detail", pk=order.pk)
        status = 400
    else:
        initial = {}
        if request.user.is_authenticated:
            initial = {"email": request.user.email, "full_name": request.user.get_full_name()}
        form = CheckoutForm(initial=initial)
        status = 200
    return render(
        request, "shop/checkout.html", {"form": form, "lines": lines, "total": Cart.total_of(lines)}, status=status
    )


def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(Order.objects.prefetch_related("lines__product"), pk=pk)
    owns = (request.user.is_authenticated and order.user_id == request.user.pk) or (
        order.user_id is None and pk in request.session.get(SESSION_ORDERS_KEY, [])
    )
    if not owns:
        # 404, not 403: whether an order number exists is nobody else's business.
        raise Http404(_("No such order."))
    return render(request, "shop/order_detail.html", {"order": order})


@require_POST
def favorite_toggle(request: HttpRequest, product_id: int) -> HttpResponse:
    product = get_object_or_404(_active_products(), pk=product_id)
    back = _safe_next(request, product.get_absolute_url())
    if not request.user.is_authenticated:
        # Back to the page they were on, not to this POST-only URL.
        messages.info(request, _("Log in to keep a list of favourites."))
        return HttpResponseRedirect(f"{reverse('login')}?{urlencode({'next': back})}")
    deleted, _kinds = Favorite.objects.filter(user=request.user, product=product).delete()
    if deleted:
        messages.info(request, _("Removed %(product)s from your favourites.") % {"product": product.name})
    else:
        Favorite.objects.get_or_create(user=request.user, product=product)
        record_event(request, "favorite", product_id=str(product.pk), value=product.price)
        messages.success(request, _("Saved %(product)s to your favourites.") % {"product": product.name})
    return redirect(back)


@login_required
def favorites(request: HttpRequest) -> HttpResponse:
    favs = Favorite.objects.filter(user=request.user).select_related("product__category", "product__brand")
    return render(request, "shop/favorites.html", {"favorites": favs.order_by("-created_at")})


@login_required
def account(request: HttpRequest) -> HttpResponse:
    orders = request.user.orders.prefetch_related("lines__product").order_by("-created_at")
    favs = Favorite.objects.filter(user=request.user).select_related("product__category", "product__brand")
    wants_email, _left = preferences(str(request.user.pk))
    context = {"orders": orders, "favorites": favs.order_by("-created_at")[:8], "email_recommendations": wants_email}
    return render(request, "shop/account.html", context)


EMAIL_CHOICE_FIELD = "email_recommendations"


@login_required
@require_POST
def account_email(request: HttpRequest) -> HttpResponse:
    """The account page's "Recommendations by e-mail" switch: the shopper's marketing opt-in, the only thing that lets
    the app's flows e-mail them (recommendations.push.consent keeps it; an unsubscribe link turns it off again)."""
    choice = request.POST.get(EMAIL_CHOICE_FIELD, "")
    if choice not in ("0", "1"):
        return HttpResponseBadRequest(
            _("The field “%(field)s” must be 1 (yes) or 0 (no).") % {"field": EMAIL_CHOICE_FIELD},
            content_type="text/plain; charset=utf-8",
        )
    set_email_consent(request.user.pk, choice == "1")
    if choice == "1":
        messages.success(request, _("We will e-mail you recommendations. Every e-mail has a link to stop them."))
    else:
        messages.success(request, _("We will not e-mail you recommendations any more."))
    return redirect("account")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("account")
    if request.method == "POST":
        form = SignupForm(request.POST)
        if form.is_valid():
            user = form.save()
            # login() fires user_logged_in, which links this browser's anonymous events to the new account.
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, _("Welcome, %(name)s! Your account is ready.") % {"name": user.username})
            return redirect(_safe_next(request, reverse("account")))
        status = 400
    else:
        form = SignupForm()
        status = 200
    return render(request, "registration/signup.html", {"form": form, "next": _safe_next(request, "")}, status=status)
