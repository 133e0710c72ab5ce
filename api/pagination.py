"""Keyset (cursor) pagination for every list: stable under inserts, constant cost per page."""

from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-id"
