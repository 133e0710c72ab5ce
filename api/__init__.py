"""REST API v1: authentication, scoping, serializers and thin views."""
