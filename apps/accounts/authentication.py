"""DRF authentication by ``Authorization: Bearer <api key>``."""

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from apps.accounts.models import APIKey
from apps.accounts.selectors import api_key_get_by_raw
from apps.accounts.services import api_key_record_use


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, APIKey] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        try:
            parts = header.decode("ascii").split()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.") from None
        if not parts or parts[0].lower() != self.keyword.lower():
            # Another scheme (e.g. Basic): not ours, and not a valid way in.
            raise exceptions.AuthenticationFailed(
                "Use 'Authorization: Bearer <api key>' to authenticate."
            )
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer <api key>'."
            )
        api_key = api_key_get_by_raw(raw_key=parts[1])
        if api_key is None or not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.is_revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if api_key.is_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        api_key_record_use(api_key=api_key)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


def request_api_key(request: Request) -> APIKey | None:
    """The API key that authenticated ``request``; None for a session or no authentication."""
    return request.auth if isinstance(request.auth, APIKey) else None
