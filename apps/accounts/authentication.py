"""DRF authentication by ``Authorization: Bearer <api key>``, or ``x-api-key: <api key>``
as Anthropic's clients send it."""

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from apps.accounts.models import APIKey
from apps.accounts.selectors import api_key_get_by_raw
from apps.accounts.services import api_key_record_use
from contextos.timing import stage


class APIKeyAuthentication(authentication.BaseAuthentication):
    """The ``Authorization`` header when there is one, else ``x-api-key``.

    A view whose every answer passes through the admission of its call (``key_on_trust``:
    the gateway's calls) takes a key this process knows on trust; the admission's round
    trip confirms it (:mod:`apps.accounts.key_cache`), and the view serves the request
    again if it cannot (:class:`apps.ai_interactions.gateway.GatewayView`).
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, APIKey] | None:
        on_trust = getattr(request.parser_context.get("view"), "key_on_trust", False)
        header = authentication.get_authorization_header(request)
        if not header:
            raw_key = request.META.get("HTTP_X_API_KEY", "").strip()
            return self._authenticated(raw_key, on_trust) if raw_key else None
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
        return self._authenticated(parts[1], on_trust)

    @staticmethod
    def _authenticated(raw_key: str, on_trust: bool) -> tuple[AbstractBaseUser, APIKey]:
        with stage("auth"):
            api_key = api_key_get_by_raw(raw_key=raw_key, on_trust=on_trust)
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
