"""Create a first user, workspace, project and API token, and print them.

Idempotent: running it again reuses what exists and mints a fresh token.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from tracker.models import Membership, Project, Role, Workspace
from tracker.services.sharing import create_token


class Command(BaseCommand):
    help = "Create a first user, workspace, project and API token, and print them."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--username", default="demo")
        parser.add_argument("--email", default="demo@example.com")
        parser.add_argument("--password", default=None, help="default: generated and printed")
        parser.add_argument("--workspace", default="demo")
        parser.add_argument("--project", default="getting-started")
        parser.add_argument(
            "--token-file", default=None, help="also write the token to this file (0600)"
        )
        parser.add_argument(
            "--demo-data", action="store_true", help="log two example runs if the project is empty"
        )

    def handle(self, *args, **opts):  # type: ignore[no-untyped-def]
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=opts["username"], defaults={"email": opts["email"]}
            )
            password = opts["password"]
            if created or password:
                password = password or secrets.token_urlsafe(9)
                user.set_password(password)
                user.save()
            ws, _ = Workspace.objects.get_or_create(
                slug=opts["workspace"], defaults={"name": opts["workspace"], "created_by": user}
            )
            Membership.objects.get_or_create(workspace=ws, user=user, defaults={"role": Role.OWNER})
            project, _ = Project.objects.get_or_create(
                workspace=ws,
                slug=opts["project"],
                defaults={"name": opts["project"], "created_by": user},
            )
            _, secret = create_token(user=user, name="bootstrap")
        if opts["demo_data"] and not project.runs.exists():
            _demo_runs(project, user)
        if opts["token_file"]:
            import os

            fd = os.open(opts["token_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secret + "\n")
        url = settings.TRACKER_PUBLIC_URL
        self.stdout.write(f"user:      {user.username}")
        self.stdout.write(
            f"password:  {password if (created or opts['password']) else '(unchanged)'}"
        )
        self.stdout.write(
            f"project:   {ws.slug}/{project.slug}  ->  {url}/{ws.slug}/{project.slug}/"
        )
        self.stdout.write(f"api token: {secret}")
        self.stdout.write(
            f"try:       TRACKER_URL={url} TRACKER_TOKEN={secret} "
            f"tracker upload ./logs --project {ws.slug}/{project.slug}"
        )


def _demo_runs(project, user) -> None:  # type: ignore[no-untyped-def]
    """Two small synthetic runs so a first visit has charts to look at."""
    import time

    import numpy as np

    from tracker.services.metrics import append_points
    from tracker.services.runs import create_run, update_run
    from tracker.services.series_codec import Points

    rng = np.random.default_rng(0)
    now = time.time() - 3600
    for name, lr in (("baseline-lr1e-3", 1e-3), ("resnet-lr3e-4", 3e-4)):
        run = create_run(
            project=project,
            user=user,
            name=name,
            tags=["demo"],
            params={"lr": lr, "batch_size": 64, "optimizer": {"name": "adam", "beta1": 0.9}},
        )
        steps = np.arange(0, 2000)
        walls = now + steps * 0.5
        decay = np.exp(-steps * lr * 2)
        loss = 2.3 * decay + 0.1 + rng.normal(0, 0.03, steps.size)
        acc = 1 - 0.9 * decay + rng.normal(0, 0.01, steps.size)
        append_points(
            run,
            {
                "train/loss": Points.of(steps, walls, loss),
                "train/acc": Points.of(steps, walls, acc),
                "validation/loss": Points.of(steps[::100], walls[::100], loss[::100] + 0.05),
                "sys/cpu_percent": Points.of(
                    np.arange(200), now + np.arange(200) * 5.0, 50 + rng.normal(0, 10, 200)
                ),
            },
        )
        update_run(run, status="finished")
