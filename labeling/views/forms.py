"""The forms of the admin pages. Validation of what a person types; the work is in services."""
from django import forms
from django.contrib.auth import get_user_model, password_validation

from ..models import ImportJob, Project
from ..services.roles import ROLES

NEW_PROJECT = "__new__"


class ImportForm(forms.Form):
    project = forms.ChoiceField(help_text="Import into an existing project, or create one.")
    new_project = forms.CharField(required=False, max_length=200, label="New project name")
    kind = forms.ChoiceField(choices=ImportJob.Kind.choices)
    source_uri = forms.CharField(max_length=2048, label="Source URI",
                                 widget=forms.TextInput(attrs={"placeholder": "file:///data/photos/ or s3://bucket/prefix/",
                                                               "spellcheck": "false"}))
    task = forms.CharField(required=False, max_length=100, label="Task name",
                           help_text="For folder and S3 layouts (split/label/image): the facet the "
                                     "folder names label, e.g. neckline.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(str(p.id), p.name) for p in Project.objects.only("id", "name")]
        self.fields["project"].choices = choices + [(NEW_PROJECT, "+ New project…")]

    def clean(self):
        data = super().clean()
        if data.get("project") == NEW_PROJECT:
            name = (data.get("new_project") or "").strip()
            if not name:
                self.add_error("new_project", "Give the new project a name.")
            elif Project.objects.filter(name=name).exists():
                self.add_error("new_project", "A project with this name exists; pick it above.")
        if data.get("kind") in (ImportJob.Kind.FOLDER, ImportJob.Kind.S3_PREFIX) and not (data.get("task") or "").strip():
            self.add_error("task", "Folder layouts need the task their label folders name.")
        return data


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, min_length=1)
    role = forms.ChoiceField(choices=[(r, r) for r in ROLES])

    def clean_username(self):
        name = self.cleaned_data["username"].strip()
        if get_user_model().objects.filter(username=name).exists():
            raise forms.ValidationError("This username is taken.")
        return name

    def clean_password(self):
        pw = self.cleaned_data["password"]
        password_validation.validate_password(pw)
        return pw


class StorageRootForm(forms.Form):
    uri = forms.CharField(max_length=1024, label="URI",
                          widget=forms.TextInput(attrs={"placeholder": "file:///data/photos/ or s3://bucket/prefix/",
                                                        "spellcheck": "false"}))
    note = forms.CharField(max_length=200, required=False)
