"""Admin pages: labels (order, add, rename, merge), users and roles, storage roots."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404, redirect

from ..models import Project, StorageRoot, Task
from ..models import Label
from ..services import labels as label_svc
from ..services import users as user_svc
from ..services.labels import ordered_labels, reorder_labels
from ..services.roles import ROLES, role_of, set_role
from .common import admin_required, int_or_none, page
from .forms import StorageRootForm, UserCreateForm


@admin_required
def label_order(request, slug):
    """Each task's labels in order; POST changes one task's labels.

    ``action`` is ``add`` (``name``), ``rename`` (``label``, ``name``), ``merge``
    (``label`` into ``into``), ``undo_merge`` (``reference``) or, for the order, absent:
    then the form posts either ``order`` (every label id, comma-separated: what drag and
    drop sends) or ``move`` = ``<label id>:up|down`` (the buttons, which work without JS).
    """
    project = get_object_or_404(Project, slug=slug)
    if request.method == "POST":
        task = get_object_or_404(Task, id=int_or_none(request.POST.get("task")), project=project)
        try:
            done = _edit_labels(request, task)
        except (ValueError, Label.DoesNotExist) as e:
            what = "change the labels of" if request.POST.get("action") else "reorder"
            messages.error(request, f"Could not {what} {task.name}: {e}")
        else:
            messages.success(request, done)
        return redirect(f"{request.path}#task-{task.id}")
    tasks = [(t, ordered_labels(t), label_svc.merges(t)) for t in project.tasks.all()]
    return page(request, "labeling/label_order.html", {"project": project, "tasks": tasks}, project=project)


def _edit_labels(request, task: Task) -> str:
    """Do the label edit the form asks for; the message to show, or ValueError with why not."""
    action, post = request.POST.get("action", ""), request.POST

    def label(field: str) -> Label:
        found = Label.objects.filter(task=task, id=int_or_none(post.get(field))).first()
        if found is None:
            raise ValueError(f"{field} is not a label of this task")
        return found

    if action == "add":
        return f"Added the label {label_svc.add_label(task, post.get('name')).name!r} to {task.name}."
    if action == "rename":
        lb = label("label")
        old = lb.name
        return f"Renamed {old!r} to {label_svc.rename_label(lb, post.get('name')).name!r}."
    if action == "merge":
        if not post.get("label") or not post.get("into"):
            raise ValueError("choose both labels, the one to merge and the one to merge it into; nothing was merged")
        source, target = label("label"), label("into")
        r = label_svc.merge_labels(source=source, target=target, by=request.user)
        return (f"Merged {source.name!r} into {target.name!r}: {r.moved} image{'s' * (r.moved != 1)} retagged "
                f"(one event each). \"Take back\" below puts them back.")
    if action == "undo_merge":
        r = label_svc.undo_merge(task=task, reference=post.get("reference", ""), by=request.user)
        kept = f"; {r.skipped} retagged again since keep their newer label" if r.skipped else ""
        return f"Took the merge back: {r.moved} image{'s' * (r.moved != 1)} back on their label{kept}."
    if action:
        raise ValueError(f"unknown action {action!r}")
    ids = [lb.id for lb in ordered_labels(task)]
    if post.get("order"):
        ids = [int_or_none(x) for x in post["order"].split(",")]
        if None in ids:
            raise ValueError("the order is label ids separated by commas")
    elif post.get("move"):
        label_id, _, direction = post["move"].partition(":")
        if int_or_none(label_id) not in ids or direction not in ("up", "down"):
            raise ValueError("move is <label id>:up or <label id>:down, of a label of this task")
        i = ids.index(int_or_none(label_id))
        j = i - 1 if direction == "up" else i + 1
        if 0 <= j < len(ids):
            ids[i], ids[j] = ids[j], ids[i]
    reorder_labels(task, ids)
    return f"Saved the label order of {task.name}."


@admin_required
def users(request):
    """People and their roles; POST ``action`` = create, set_role, deactivate, activate or
    reset_password (``user``, and ``role`` / ``password``)."""
    User = get_user_model()
    form = UserCreateForm(request.POST if request.POST.get("action") == "create" else None)
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            if form.is_valid():
                user = User.objects.create_user(form.cleaned_data["username"], password=form.cleaned_data["password"])
                set_role(user, form.cleaned_data["role"])
                messages.success(request, f"Created {user.username} as {form.cleaned_data['role']}.")
                return redirect("users")
        else:
            user = get_object_or_404(User, id=int_or_none(request.POST.get("user")))
            try:
                messages.success(request, _change_user(request, user, action))
            except ValueError as e:
                messages.error(request, f"{user.username}: {e}")
            return redirect("users")
    worked = user_svc.last_worked()
    people = [(u, role_of(u) or _held_role(u), worked.get(u.id))
              for u in User.objects.order_by("username").prefetch_related("groups")]
    return page(request, "labeling/users.html", {"people": people, "roles": ROLES, "form": form})


def _held_role(user) -> str | None:
    """The role an inactive user holds (role_of says None for them: they can do nothing)."""
    names = {g.name for g in user.groups.all()}
    return "admin" if user.is_superuser else next((r for r in reversed(ROLES) if r in names), None)


def _change_user(request, user, action: str) -> str:
    if action == "set_role":
        if user == request.user and request.POST.get("role") != "admin":
            raise ValueError("you cannot take away your own admin role")
        set_role(user, request.POST.get("role", ""))
        return f"{user.username} is now {request.POST['role']}."
    if action in ("deactivate", "activate"):
        user_svc.set_active(user, action == "activate", by=request.user)
        return (f"{user.username} can sign in again." if action == "activate" else
                f"Deactivated {user.username}: they cannot sign in, and their open sessions ended. "
                "Their retags and history stay.")
    if action == "reset_password":
        user_svc.reset_password(user, request.POST.get("password", ""))
        return f"Set a new password for {user.username}; they were signed out everywhere. Tell them the new one."
    raise ValueError(f"unknown action {action!r}")


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
