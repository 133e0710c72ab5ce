"""API routes of the query area (issue 6: read it back fast).

Histograms, text and PR curves are read under runs/<id>/media/...: the plain
runs/<id>/histograms/ etc. paths belong to the logging area's POST views.
"""

from django.urls import path

from .views import query as v

P = "projects/<slug:ws>/<slug:project>/"

urlpatterns: list = [
    path(f"{P}runs/table", v.RunsTableView.as_view(), name="runs-table"),
    path(f"{P}columns", v.ColumnsView.as_view(), name="project-columns"),
    path(f"{P}series", v.ProjectSeriesView.as_view(), name="project-series"),
    path(f"{P}hparams", v.HparamsView.as_view(), name="project-hparams"),
    path(f"{P}export", v.ProjectExportView.as_view(), name="project-export"),
    path(f"{P}export.zip", v.ProjectZipView.as_view(), name="project-export-zip"),
    path("runs/<int:run_id>/series/", v.RunSeriesView.as_view(), name="run-series"),
    path("runs/<int:run_id>/series/export", v.SeriesExportView.as_view(), name="series-export"),
    path("runs/<int:run_id>/keys", v.RunKeysView.as_view(), name="run-keys"),
    path("runs/<int:run_id>/export", v.RunExportView.as_view(), name="run-export"),
    path(
        "runs/<int:run_id>/media/histograms", v.HistogramsView.as_view(), name="run-histograms-read"
    ),
    path("runs/<int:run_id>/media/text", v.TextView.as_view(), name="run-text-read"),
    path("runs/<int:run_id>/media/pr-curves", v.PRCurvesView.as_view(), name="run-pr-curves-read"),
]
