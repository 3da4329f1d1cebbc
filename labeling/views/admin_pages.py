"""Admin pages: label order, users and roles, storage roots."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404, redirect

from ..models import Project, StorageRoot, Task
from ..services.labels import ordered_labels, reorder_labels
from ..services.roles import ROLES, role_of, set_role
from .common import admin_required, int_or_none, page
from .forms import StorageRootForm, UserCreateForm


@admin_required
def label_order(request, slug):
    """Each task's labels in order; POST reorders one task.

    The form posts either ``order`` (every label id, comma-separated: what drag and drop
    sends) or ``move`` = ``<label id>:up|down`` (the buttons, which work without JS).
    """
    project = get_object_or_404(Project, slug=slug)
    if request.method == "POST":
        task = get_object_or_404(Task, id=int_or_none(request.POST.get("task")), project=project)
        ids = [lb.id for lb in ordered_labels(task)]
        try:
            if request.POST.get("order"):
                ids = [int_or_none(x) for x in request.POST["order"].split(",")]
                if None in ids:
                    raise ValueError("the order is label ids separated by commas")
            elif request.POST.get("move"):
                label_id, _, direction = request.POST["move"].partition(":")
                if int_or_none(label_id) not in ids or direction not in ("up", "down"):
                    raise ValueError("move is <label id>:up or <label id>:down, of a label of this task")
                i = ids.index(int_or_none(label_id))
                j = i - 1 if direction == "up" else i + 1
                if 0 <= j < len(ids):
                    ids[i], ids[j] = ids[j], ids[i]
            reorder_labels(task, ids)
        except ValueError as e:
            messages.error(request, f"Could not reorder {task.name}: {e}")
        else:
            messages.success(request, f"Saved the label order of {task.name}.")
        return redirect(f"{request.path}#task-{task.id}")
    tasks = [(t, ordered_labels(t)) for t in project.tasks.all()]
    return page(request, "labeling/label_order.html", {"project": project, "tasks": tasks}, project=project)


@admin_required
def users(request):
    User = get_user_model()
    form = UserCreateForm(request.POST if request.POST.get("action") == "create" else None)
    if request.method == "POST":
        if request.POST.get("action") == "create":
            if form.is_valid():
                user = User.objects.create_user(form.cleaned_data["username"], password=form.cleaned_data["password"])
                set_role(user, form.cleaned_data["role"])
                messages.success(request, f"Created {user.username} as {form.cleaned_data['role']}.")
                return redirect("users")
        elif request.POST.get("action") == "set_role":
            user = get_object_or_404(User, id=int_or_none(request.POST.get("user")))
            try:
                if user == request.user and request.POST.get("role") != "admin":
                    raise ValueError("you cannot take away your own admin role")
                set_role(user, request.POST.get("role", ""))
            except ValueError as e:
                messages.error(request, str(e))
            else:
                messages.success(request, f"{user.username} is now {request.POST['role']}.")
            return redirect("users")
    people = [(u, role_of(u)) for u in User.objects.order_by("username").prefetch_related("groups")]
    return page(request, "labeling/users.html", {"people": people, "roles": ROLES, "form": form})


@admin_required
def storage_roots(request):
    from ..services import storage_roots as roots

    form = StorageRootForm(request.POST if request.POST.get("action") == "add" else None)
    if request.method == "POST":
        if request.POST.get("action") == "add":
            if form.is_valid():
                try:
                    root = roots.add_root(uri=form.cleaned_data["uri"].strip(), note=form.cleaned_data["note"])
                except ValueError as e:
                    form.add_error("uri", str(e))
                else:
                    messages.success(request, f"Imports may now read from {root.uri}.")
                    return redirect("storage_roots")
        elif request.POST.get("action") == "remove":
            root = get_object_or_404(StorageRoot, id=int_or_none(request.POST.get("root")))
            root.delete()  # takes effect at once: allowed roots are read on every check
            messages.success(request, f"Removed {root.uri}; imports can no longer read from it.")
            return redirect("storage_roots")
    return page(request, "labeling/storage_roots.html", {
        "roots": StorageRoot.objects.order_by("uri"),
        "form": form,
        "settings_roots": settings.IMPORT_ROOTS,
    })
