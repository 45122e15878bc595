"""The demo store: pages, cart, checkout, favourites, accounts, and the exact events each action records."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from recommendations.models import Event, ProductProfile, RecommendationSet, StoredList
from recommendations.tracking import valid_visitor_id
from shop.cart import Cart
from shop.models import Favorite, Order
from tests.factories import make_brand, make_category, make_product, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
VISITOR = "0123456789abcdef0123456789abcdef"


def events() -> list[Event]:
    """What the shopper did; the impressions of the blocks a page rendered are tested in serving/test_pipeline."""
    return list(Event.objects.exclude(event_type="impression").order_by("pk"))


def visitor_of(client: Client) -> str:
    return client.cookies["rec_vid"].value


@pytest.fixture
def synced(django_capture_on_commit_callbacks):
    """Make products with their engine profiles: the post_save sync runs on commit, which tests must trigger."""

    def make(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return make_product(*args, **kwargs)

    return make


@pytest.fixture
def product(synced):
    return synced("Cast iron skillet", price=Decimal("24.50"), stock=5, brand=make_brand("Copperline"))


def add_to_cart(client: Client, product, quantity=1):
    return client.post(reverse("cart_add", args=[product.pk]), {"quantity": quantity})


# --- the product profile sync the shop relies on -----------------------------------------------------------


def test_saving_a_product_creates_its_profile_on_commit(django_capture_on_commit_callbacks):
    category = make_category("Kitchen", slug="kitchen")
    with django_capture_on_commit_callbacks(execute=True):
        p = make_product("Pan", category=category, price=Decimal("9.99"), stock=0)
    profile = ProductProfile.objects.get(product_id=str(p.pk))
    assert (profile.name, profile.category, profile.price, profile.in_stock) == (
        "Pan",
        "kitchen",
        Decimal("9.99"),
        False,
    )


# --- visitor cookie and page views -------------------------------------------------------------------------


def test_anonymous_visitor_gets_a_cookie_and_keeps_it(client):
    first = client.get(reverse("home"))
    vid = first.cookies["rec_vid"].value
    assert valid_visitor_id(vid)
    second = client.get(reverse("home"))
    assert "rec_vid" not in second.cookies  # not re-issued
    assert visitor_of(client) == vid


def test_product_page_records_exactly_one_view_for_the_visitor(client, product):
    response = client.get(product.get_absolute_url())
    assert response.status_code == 200
    [event] = events()
    assert event.event_type == "view"
    assert event.product_id == str(product.pk)
    assert event.value == Decimal("24.50")
    assert event.visitor_id == visitor_of(client)
    assert event.user_id == ""
    assert event.shopper == f"v:{visitor_of(client)}"


def test_view_by_a_logged_in_user_is_theirs(client, product):
    user = make_user()
    client.force_login(user)
    client.get(product.get_absolute_url())
    [event] = events()
    assert (event.event_type, event.user_id, event.shopper) == ("view", str(user.pk), f"u:{user.pk}")


def test_inactive_or_unknown_product_is_404_and_records_nothing(client, synced):
    hidden = synced(is_active=False)
    assert client.get(hidden.get_absolute_url()).status_code == 404
    assert client.get(reverse("product_detail", args=["no-such-thing"])).status_code == 404
    assert events() == []


# --- cart ---------------------------------------------------------------------------------------------------


def test_add_to_cart_records_one_event_with_quantity_and_value(client, product):
    response = add_to_cart(client, product, 3)
    assert response.status_code == 302
    assert response["Location"] == reverse("cart")
    [event] = events()
    assert event.event_type == "add_to_cart"
    assert event.product_id == str(product.pk)
    assert event.quantity == 3
    assert event.value == Decimal("73.50")
    assert event.visitor_id == visitor_of(client)
    page = client.get(reverse("cart"))
    assert "Cast iron skillet" in page.content.decode()
    assert page.context["total"] == Decimal("73.50")
    assert page.context["cart_count"] == 3


@pytest.mark.parametrize("quantity", ["", "abc", "0", "-2", "1.5", "100", "99999999999999999999"])
def test_bad_quantity_is_a_400_with_a_field_error_and_no_event(client, product, quantity):
    response = add_to_cart(client, product, quantity)
    assert response.status_code == 400
    assert response.context["form"].errors["quantity"]
    assert 'class="errorlist field-errors"' in response.content.decode()
    assert events() == []
    assert client.get(reverse("cart")).context["lines"] == []


def test_cannot_add_beyond_stock(client, synced):
    p = synced(stock=2)
    assert add_to_cart(client, p, 2).status_code == 302
    response = add_to_cart(client, p, 1)
    assert response.status_code == 400
    assert "Only 2 left in stock and 2 already in your cart" in response.content.decode()
    assert [e.event_type for e in events()] == ["add_to_cart"]
    assert client.get(reverse("cart")).context["lines"][0].quantity == 2


def test_out_of_stock_product_cannot_be_added(client, synced):
    p = synced("Sold out mug", stock=0)
    page = client.get(p.get_absolute_url()).content.decode()
    assert "Out of stock" in page
    assert reverse("cart_add", args=[p.pk]) not in page  # no add form
    Event.objects.all().delete()
    response = add_to_cart(client, p, 1)
    assert response.status_code == 400
    assert "Sold out mug is out of stock." in response.content.decode()
    assert events() == []


def test_state_changes_are_post_only(client, product):
    for name in ("cart_add", "cart_remove", "favorite_toggle"):
        assert client.get(reverse(name, args=[product.pk])).status_code == 405
    assert client.get(reverse("logout")).status_code == 405
    assert events() == []


def test_remove_from_cart_records_one_event(client, product):
    add_to_cart(client, product, 2)
    Event.objects.all().delete()
    response = client.post(reverse("cart_remove", args=[product.pk]))
    assert response.status_code == 302
    [event] = events()
    assert (event.event_type, event.product_id, event.quantity, event.value) == (
        "remove_from_cart",
        str(product.pk),
        2,
        Decimal("49.00"),
    )
    assert client.get(reverse("cart")).context["lines"] == []


def test_removing_what_is_not_in_the_cart_records_nothing(client, product):
    client.post(reverse("cart_remove", args=[product.pk]))
    assert events() == []


def test_cart_ignores_tampered_session_entries():
    session = SessionStore()
    session["cart"] = {"abc": 1, "5": -3, "6": "2", "7": 2}
    request = RequestFactory().get("/")
    request.session = session
    assert len(Cart(request)) == 2


# --- checkout and orders ------------------------------------------------------------------------------------


def checkout_form(**overrides):
    return {"full_name": "Ada Lovelace", "email": "ada@example.com", "address": "1 Analytical Way\nLondon", **overrides}


def test_anonymous_checkout_places_the_order_and_records_one_purchase_per_line(client, product, synced):
    other = synced("Oak board", price=Decimal("12.00"), stock=4)
    add_to_cart(client, product, 2)
    add_to_cart(client, other, 1)
    Event.objects.all().delete()

    response = client.post(reverse("checkout"), checkout_form())

    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("order_detail", args=[order.pk])
    assert order.user is None
    assert order.email == "ada@example.com"
    assert order.total == Decimal("61.00")
    assert sorted((line.product_id, line.quantity, line.unit_price) for line in order.lines.all()) == sorted(
        [(product.pk, 2, Decimal("24.50")), (other.pk, 1, Decimal("12.00"))]
    )
    product.refresh_from_db()
    other.refresh_from_db()
    assert (product.stock, other.stock) == (3, 3)

    recorded = events()
    assert {e.event_type for e in recorded} == {"purchase"}
    assert sorted((e.product_id, e.quantity, e.value) for e in recorded) == sorted(
        [(str(product.pk), 2, Decimal("49.00")), (str(other.pk), 1, Decimal("12.00"))]
    )
    assert all(e.context == {"order_id": order.pk} for e in recorded)
    assert all(e.visitor_id == visitor_of(client) and e.user_id == "" for e in recorded)

    assert client.get(reverse("cart")).context["lines"] == []
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "Order #" in page.content.decode()


def test_logged_in_checkout_belongs_to_the_user(client, product):
    user = make_user(email="me@example.com")
    client.force_login(user)
    add_to_cart(client, product, 1)
    assert client.get(reverse("checkout")).context["form"].initial["email"] == "me@example.com"
    client.post(reverse("checkout"), checkout_form())
    order = Order.objects.get()
    assert order.user == user
    [purchase] = Event.objects.filter(event_type="purchase")
    assert (purchase.user_id, purchase.shopper) == (str(user.pk), f"u:{user.pk}")
    account = client.get(reverse("account"))
    assert account.status_code == 200
    assert f"#{order.pk}" in account.content.decode()


def test_invalid_checkout_form_is_a_400_and_changes_nothing(client, product):
    add_to_cart(client, product, 1)
    Event.objects.all().delete()
    response = client.post(reverse("checkout"), checkout_form(email="not-an-email", address=""))
    assert response.status_code == 400
    assert set(response.context["form"].errors) == {"email", "address"}
    assert Order.objects.count() == 0
    assert events() == []
    product.refresh_from_db()
    assert product.stock == 5


def test_checkout_with_an_empty_cart_goes_back_to_the_cart(client):
    assert client.get(reverse("checkout"))["Location"] == reverse("cart")
    assert client.post(reverse("checkout"), checkout_form())["Location"] == reverse("cart")
    assert Order.objects.count() == 0


def test_checkout_refuses_when_stock_ran_out_meanwhile(client, product):
    add_to_cart(client, product, 3)
    product.stock = 1
    product.save()
    Event.objects.all().delete()
    response = client.post(reverse("checkout"), checkout_form(), follow=True)
    assert response.redirect_chain[-1][0] == reverse("cart")
    assert "Only 1 of Cast iron skillet left in stock" in response.content.decode()
    assert Order.objects.count() == 0
    assert events() == []
    product.refresh_from_db()
    assert product.stock == 1


def test_buying_the_last_unit_marks_the_profile_out_of_stock(client, synced, django_capture_on_commit_callbacks):
    last = synced(stock=1)
    add_to_cart(client, last, 1)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("checkout"), checkout_form())
    assert ProductProfile.objects.get(product_id=str(last.pk)).in_stock is False


def test_someone_elses_order_is_404(client, product):
    owner = make_user()
    client.force_login(owner)
    add_to_cart(client, product, 1)
    client.post(reverse("checkout"), checkout_form())
    order = Order.objects.get()
    url = reverse("order_detail", args=[order.pk])
    assert client.get(url).status_code == 200

    intruder = Client()
    assert intruder.get(url).status_code == 404
    intruder.force_login(make_user())
    assert intruder.get(url).status_code == 404


def test_a_guest_order_is_visible_only_to_the_session_that_placed_it(client, product):
    add_to_cart(client, product, 1)
    client.post(reverse("checkout"), checkout_form())
    url = reverse("order_detail", args=[Order.objects.get().pk])
    assert client.get(url).status_code == 200
    assert Client().get(url).status_code == 404


# --- favourites ---------------------------------------------------------------------------------------------


def test_favourite_on_records_one_event_and_off_records_none(client, product):
    user = make_user()
    client.force_login(user)
    url = reverse("favorite_toggle", args=[product.pk])

    response = client.post(url)
    assert response["Location"] == product.get_absolute_url()
    assert Favorite.objects.filter(user=user, product=product).exists()
    [event] = events()
    assert (event.event_type, event.product_id, event.user_id) == ("favorite", str(product.pk), str(user.pk))

    client.post(url)
    assert not Favorite.objects.filter(user=user, product=product).exists()
    assert len(events()) == 1

    client.post(url)
    assert Event.objects.filter(event_type="favorite").count() == 2


def test_anonymous_favourite_goes_to_login_and_comes_back(client, product):
    response = client.post(reverse("favorite_toggle", args=[product.pk]))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={product.get_absolute_url().replace('/', '%2F')}"
    assert Favorite.objects.count() == 0
    assert events() == []


def test_favourite_toggle_ignores_an_offsite_next(client, product):
    client.force_login(make_user())
    response = client.post(reverse("favorite_toggle", args=[product.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == product.get_absolute_url()


def test_favourites_page_lists_them_and_needs_login(client, product):
    url = reverse("favorites")
    assert client.get(url)["Location"].startswith(reverse("login"))
    user = make_user()
    Favorite.objects.create(user=user, product=product)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    assert "Cast iron skillet" in response.content.decode()


# --- search and listing -------------------------------------------------------------------------------------


def test_search_records_one_event_with_the_query(client, synced):
    tea = synced("Green tea", description="Sencha from Shizuoka")
    synced("Coffee grinder")
    response = client.get(reverse("product_list"), {"q": "  tea "})
    assert list(response.context["page"].object_list) == [tea]
    [event] = events()
    assert (event.event_type, event.query, event.product_id) == ("search", "tea", "")
    assert event.visitor_id == visitor_of(client)


def test_empty_search_and_later_pages_record_nothing(client, synced):
    for n in range(15):
        synced(f"Tea {n}")
    client.get(reverse("product_list"), {"q": "   "})
    client.get(reverse("product_list"))
    assert events() == []
    client.get(reverse("product_list"), {"q": "tea", "page": 2})
    assert events() == []


def test_category_filter_and_pagination(client, synced):
    kitchen = make_category("Kitchen", slug="kitchen")
    garden = make_category("Garden", slug="garden")
    for n in range(14):
        synced(f"Pan {n}", category=kitchen)
    synced("Rake", category=garden)
    response = client.get(reverse("product_list"), {"category": "kitchen"})
    page = response.context["page"]
    assert page.paginator.count == 14
    assert len(page.object_list) == 12
    html = response.content.decode()
    assert "Rake" not in html
    assert "category=kitchen&amp;page=2" in html
    assert client.get(reverse("product_list"), {"category": "kitchen", "page": 2}).context["page"].number == 2
    assert client.get(reverse("product_list"), {"category": "nope"}).status_code == 404
    assert events() == []


def test_user_text_is_escaped(client, synced):
    p = synced("<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in client.get(p.get_absolute_url()).content.decode()
    html = client.get(reverse("product_list"), {"q": "<script>x</script>"}).content.decode()
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html


# --- accounts and the visitor merge -------------------------------------------------------------------------


def test_login_links_the_visitors_earlier_events_to_the_user(client, product):
    user = make_user(password=PASSWORD)
    client.get(product.get_absolute_url())
    add_to_cart(client, product, 1)
    vid = visitor_of(client)
    assert [e.shopper for e in events()] == [f"v:{vid}"] * 2

    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302

    for event in events():
        assert (event.user_id, event.visitor_id, event.shopper) == (str(user.pk), vid, f"u:{user.pk}")
    # The session cart survives the login.
    assert client.get(reverse("cart")).context["cart_count"] == 1


def test_signup_logs_in_and_links_the_visitors_events(client, product):
    client.get(product.get_absolute_url())
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "email": "n@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("account")
    user = get_user_model().objects.get(username="newbie")
    [event] = events()
    assert event.shopper == f"u:{user.pk}"
    assert client.get(reverse("account")).status_code == 200


def test_signup_errors_are_shown(client):
    response = client.post(reverse("signup"), {"username": "x", "password1": "a", "password2": "b"})
    assert response.status_code == 400
    assert "password2" in response.context["form"].errors


def test_logout_is_a_post_form(client):
    client.force_login(make_user())
    html = client.get(reverse("home")).content.decode()
    assert f'action="{reverse("logout")}" method="post"' in html
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("account")).status_code == 302


# --- pages and recommendation blocks ------------------------------------------------------------------------


def test_pages_render(client, product):
    category_url = product.category.get_absolute_url()
    for url in (reverse("home"), reverse("product_list"), category_url, reverse("product_list") + "?q=skillet"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "Cast iron skillet" in response.content.decode(), url
    detail = client.get(product.get_absolute_url()).content.decode()
    assert "Copperline" in detail
    assert "$24.50" in detail
    assert "In stock" in detail
    assert 'name="csrfmiddlewaretoken"' in detail
    add_to_cart(client, product, 1)
    for url in (reverse("cart"), reverse("checkout"), reverse("login"), reverse("signup")):
        assert client.get(url).status_code == 200, url
    user = make_user()
    client.force_login(user)
    assert client.get(reverse("account")).status_code == 200


def test_header_shows_categories_and_cart_count(client, product):
    add_to_cart(client, product, 2)
    html = client.get(reverse("home")).content.decode()
    assert f'href="{product.category.get_absolute_url()}"' in html
    assert '<span class="cart-count" aria-label="2 items in cart">2</span>' in html


def test_home_shows_for_you_from_popular_before_any_precompute(client, product):
    html = client.get(reverse("home")).content.decode()
    assert html.count('data-rec-placement="for_you"') == 1
    assert html.count(f'data-rec-product="{product.pk}"') == 1  # the trending block below does not repeat it
    assert "Popular" in html


def test_home_shows_the_shoppers_precomputed_list(client, synced):
    anchor = synced("Pour-over dripper")
    pick = synced("Paper filters")
    rec_set = RecommendationSet.objects.create(status=RecommendationSet.Status.ACTIVE, activated_at=timezone.now())
    StoredList.objects.create(
        recommendation_set=rec_set,
        placement="for_you",
        subject=f"v:{VISITOR}",
        items=[[str(pick.pk), 0.9, f"because:{anchor.pk}"]],
    )
    client.cookies["rec_vid"] = VISITOR
    html = client.get(reverse("home")).content.decode()
    block = html.split('data-rec-placement="for_you"', 1)[1].split("</section>", 1)[0]
    first = block.split('class="rec-item"', 2)[1]
    assert f'data-rec-product="{pick.pk}"' in first
    assert "Because you looked at Pour-over dripper" in first


def test_product_page_shows_similar_products_and_list_shows_category_trending(client, synced):
    kitchen = make_category("Kitchen", slug="kitchen")
    a = synced("Pan", category=kitchen)
    others = [synced(f"Pot {n}", category=kitchen) for n in range(12)]
    html = client.get(a.get_absolute_url()).content.decode()
    # Nothing was ever bought with it: no "Frequently bought together" made of fillers, only similar products.
    assert 'data-rec-placement="bought_together"' not in html
    shown = re.findall(r'data-rec-product="([^"]+)"', html)
    assert len(shown) == len(set(shown)) == 8
    assert set(shown) <= {str(p.pk) for p in others}
    assert f'data-rec-product="{a.pk}"' not in html  # never recommends the page's own product
    listing = client.get(reverse("product_list"), {"category": "kitchen"}).content.decode()
    assert 'data-rec-placement="trending"' in listing


def test_admin_pages_render_for_staff(client, product):
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", PASSWORD)
    client.force_login(admin)
    Favorite.objects.create(user=admin, product=product)
    order = Order.objects.create(user=admin, email="boss@example.com")
    order.lines.create(product=product, quantity=2, unit_price=product.price)
    for model in ("category", "brand", "product", "order", "favorite"):
        assert client.get(reverse(f"admin:shop_{model}_changelist")).status_code == 200, model
        assert client.get(reverse(f"admin:shop_{model}_add")).status_code == 200, model
    change = client.get(reverse("admin:shop_order_change", args=[order.pk]))
    assert change.status_code == 200
    assert "49.00" in change.content.decode()  # the inline's line total
    assert client.get(reverse("admin:shop_product_changelist"), {"q": "skillet"}).context["cl"].result_count == 1
