from __future__ import annotations

from django.urls import path

from opsdash.savings import report_views, views, workflow_views

app_name = "savings"
urlpatterns = [
    path("", views.index, name="index"),
    path("prices/", views.prices, name="prices"),
    path("prices/add/", views.price_add, name="price_add"),
    path("prices/<int:pk>/close/", views.price_close, name="price_close"),
    path("workflows/<slug:slug>/", views.workflow_detail, name="workflow"),
    path("workflows/<slug:slug>/costing/", views.workflow_costing, name="workflow_costing"),
]

# Scheduled reports (issue 12, section 5).
urlpatterns += [
    path("reports/", report_views.reports_page, name="reports"),
    path("reports/subscribe/", report_views.subscribe, name="report_subscribe"),
    path("reports/subscriptions/add/", report_views.subscription_add, name="report_add"),
    path("reports/subscriptions/<int:pk>/", report_views.subscription_change, name="report_change"),
    path("reports/preview/", report_views.preview, name="report_preview"),
]

# Editing, archiving and restoring a workflow (issue 12, section 1).
urlpatterns += [
    path("workflows/<slug:slug>/edit/", workflow_views.workflow_edit, name="workflow_edit"),
    path(
        "workflows/<slug:slug>/archive/", workflow_views.workflow_archive, name="workflow_archive"
    ),
    path(
        "workflows/<slug:slug>/restore/", workflow_views.workflow_restore, name="workflow_restore"
    ),
]
