from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"

    def ready(self) -> None:
        # Registers the OpenAPI authentication extensions (drf-spectacular finds them on import).
        from . import schema  # noqa: F401
