from django.apps import AppConfig


class OscarHostConfig(AppConfig):
    name = "oscar_host"
    default_auto_field = "django.db.models.AutoField"
