"""HTTP basic auth, throttled like the login page.

DRF hands its own Request to ``authenticate()``; django-axes marks a locked-out request
on the object it is given, and its middleware looks at Django's request. Passing
Django's request makes a lockout over basic auth answer 429, as on the login page,
instead of a 403 that reads like a wrong password.
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication


class BasicAuthentication(authentication.BasicAuthentication):
    def authenticate_credentials(self, userid, password, request=None):
        return super().authenticate_credentials(userid, password, getattr(request, "_request", request))


class BasicScheme(OpenApiAuthenticationExtension):
    """The schema's name for it: HTTP basic, as DRF's own."""

    target_class = "labeling.api.authentication.BasicAuthentication"
    name = "basicAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic"}
