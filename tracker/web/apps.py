from django.apps import AppConfig


class WebConfig(AppConfig):
    """Registers tracker/web as an app so its templates/ and static/ are found."""

    name = "tracker.web"
    label = "tracker_web"
