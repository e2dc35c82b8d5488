from __future__ import annotations

from django.urls import path

from opsdash.savings import views

app_name = "savings"
urlpatterns = [
    path("", views.index, name="index"),
    path("prices/", views.prices, name="prices"),
    path("prices/add/", views.price_add, name="price_add"),
    path("prices/<int:pk>/close/", views.price_close, name="price_close"),
    path("workflows/<slug:slug>/", views.workflow_detail, name="workflow"),
    path("workflows/<slug:slug>/costing/", views.workflow_costing, name="workflow_costing"),
]
