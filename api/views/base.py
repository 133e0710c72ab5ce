"""The base view: every view gets its principal here and resolves objects via tracker.access."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from tracker.access import Principal

from ..authentication import principal


class TrackerView(GenericAPIView):
    # Views declare their own input/output serializers; this keeps spectacular quiet.
    serializer_class = None

    @property
    def principal(self) -> Principal:
        return principal(self.request)

    def require_login(self) -> Principal:
        p = self.principal
        if not p.is_authenticated:
            raise exceptions.NotAuthenticated()
        return p

    def require_user(self) -> Principal:
        """Endpoints about a person (tokens, creating workspaces) need a real user."""
        p = self.require_login()
        if p.user is None:
            raise exceptions.PermissionDenied("This needs a user, not a service account.")
        return p

    def validated(self, serializer_cls: type, data: Any = None, **kwargs: Any) -> dict[str, Any]:
        ser = serializer_cls(data=self.request.data if data is None else data, **kwargs)
        ser.is_valid(raise_exception=True)
        return dict(ser.validated_data)

    def page(self, queryset: Any, serializer_cls: type, **context: Any) -> Response:
        page = self.paginate_queryset(queryset)
        ctx = {"request": self.request, **context}
        data = serializer_cls(page, many=True, context=ctx).data
        return self.get_paginated_response(data)
