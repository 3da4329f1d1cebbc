"""HTTP basic auth, throttled like the login page.

DRF hands its own Request to ``authenticate()``; django-axes marks a locked-out request
on the object it is given, and its middleware looks at Django's request. Passing
Django's request makes a lockout over basic auth answer 429, as on the login page,
instead of a 403 that reads like a wrong password.
"""
from rest_framework import authentication


class BasicAuthentication(authentication.BasicAuthentication):
    def authenticate_credentials(self, userid, password, request=None):
        return super().authenticate_credentials(userid, password, getattr(request, "_request", request))
