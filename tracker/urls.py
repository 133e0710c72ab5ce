from django.urls import include, path

urlpatterns = [
    path("api/v1/", include("api.urls")),
    path("", include("tracker.web.urls")),
]

handler400 = "api.errors.json_400"
handler403 = "api.errors.json_403"
handler404 = "api.errors.json_404"
handler500 = "api.errors.json_500"
