from django.urls import path

from . import admin_pages, images, imports, projects

urlpatterns = [
    path("", projects.home, name="home"),
    path("p/<slug:slug>/", projects.project_grid, name="project_grid"),
    path("p/<slug:slug>/problems/", projects.project_problems, name="project_problems"),
    path("p/<slug:slug>/labels/", admin_pages.label_order, name="label_order"),
    path("images/<int:image_id>/", images.image_detail, name="image_detail"),
    path("images/<int:image_id>/original", images.image_original, name="image_original"),
    path("images/<int:image_id>/thumb.jpg", images.image_thumbnail, name="image_thumbnail"),
    path("imports/", imports.import_list, name="imports"),
    path("imports/<int:job_id>/", imports.import_job, name="import_job"),
    path("manage/users/", admin_pages.users, name="users"),
    path("manage/storage-roots/", admin_pages.storage_roots, name="storage_roots"),
]
