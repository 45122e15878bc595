"""The demo shop's URLs: the store pages, accounts, the admin, the recommendations app's API and its docs."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from shop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("products/", views.product_list, name="product_list"),
    path("products/<slug:slug>/", views.product_detail, name="product_detail"),
    path("cart/", views.cart_detail, name="cart"),
    path("cart/add/<int:product_id>/", views.cart_add, name="cart_add"),
    path("cart/remove/<int:product_id>/", views.cart_remove, name="cart_remove"),
    path("checkout/", views.checkout, name="checkout"),
    path("orders/<int:pk>/", views.order_detail, name="order_detail"),
    path("favorites/", views.favorites, name="favorites"),
    path("favorites/toggle/<int:product_id>/", views.favorite_toggle, name="favorite_toggle"),
    path("account/", views.account, name="account"),
    path("account/email/", views.account_email, name="account_email"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    # Django 5's LogoutView accepts POST only, so logging out cannot be triggered by a link or an <img>.
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # set_language: the header's language buttons POST here (the language cookie, then back to the page).
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("recommendations.urls")),
    # The API's OpenAPI schema and its Swagger UI (files from drf-spectacular-sidecar, served as static files).
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
]
