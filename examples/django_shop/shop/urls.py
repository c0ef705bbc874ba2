"""The shop's URLs: the admin, where the data tasks page is."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
