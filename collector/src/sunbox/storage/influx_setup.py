"""Apply the storage layout to a running InfluxDB 2, idempotently (``sunbox influx apply``).

What it converges, with an operator token (influxdb-client's management APIs):

* the org;
* the raw bucket, one bucket per tier and the alarm events' bucket, with their retention
  and shard group duration; buckets of tiers that left the layout are kept, never deleted;
* the user ``sunbox-tasks``, the identity that owns the downsampling tasks;
* three tokens, found by description and replaced only when their permissions differ:
  ``sunbox writer`` (write to the raw bucket and the alarm events' bucket only),
  ``sunbox dashboards`` (read every Sunbox bucket, and the org, which Flux needs to find the org by name), ``sunbox
  tasks`` (the tasks user: read and write the raw and tier buckets, read and write tasks,
  read the org);
* one task per tier, rendered from ``influx_tasks/downsample.flux``, and the hourly
  energy task (:mod:`sunbox.storage.energy`), created or updated (and tasks with the
  tiers' prefix that are no longer in the layout are deleted).

On task identity: InfluxDB 2.7 runs a task with the permissions its *owner* derives
from user-resource mappings (``task/backend/executor/executor.go`` calls
``FindPermissionForUser``, ``tenant/service_user.go``), and a bucket-level mapping grants
at most read (``user_resource_mapping.go``, ``memberPerms``). Writing to the tier buckets
therefore needs the owner to be an org owner. The owner is a dedicated user with no
password, not the admin, so its tasks can be audited and disabled on their own.

The result reports ``changed`` and the writer and dashboards tokens.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from influxdb_client import (
    Authorization,
    BucketRetentionRules,
    InfluxDBClient,
    Permission,
    PermissionResource,
    TaskCreateRequest,
    TaskUpdateRequest,
)
from influxdb_client.domain.add_resource_member_request_body import AddResourceMemberRequestBody
from influxdb_client.rest import ApiException
from influxdb_client.service.organizations_service import OrganizationsService

from .layout import StorageLayout, render_task

LOG = logging.getLogger(__name__)

TASKS_USER = "sunbox-tasks"
WRITER = "sunbox writer"
DASHBOARDS = "sunbox dashboards"
TASKS = "sunbox tasks"


class SetupError(RuntimeError):
    """InfluxDB refused or could not be reached; the message says which step."""


@dataclass
class ApplyResult:
    """What :func:`apply` did: ``changes`` lists each change in words."""

    changes: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    bucket_ids: dict[str, str] = field(default_factory=dict)
    task_ids: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _perm(action: str, type_: str, org_id: str, id_: str | None = None) -> Permission:
    return Permission(action=action, resource=PermissionResource(type=type_, org_id=org_id, id=id_))


def _perm_key(perms: list[Any]) -> set[tuple[str, str, str | None, str | None]]:
    return {(p.action, p.resource.type, p.resource.org_id, p.resource.id) for p in perms}


class _Applier:
    def __init__(self, client: InfluxDBClient, layout: StorageLayout, template: str, result: ApplyResult) -> None:
        self.client = client
        self.layout = layout
        self.template = template
        self.result = result
        self._tasks_user_id = ""

    def org_id(self) -> str:
        orgs = self.client.organizations_api().find_organizations(limit=100) or []
        for org in orgs:
            if org.name == self.layout.org:
                return str(org.id)
        org = self.client.organizations_api().create_organization(name=self.layout.org)
        self.result.changes.append(f"created org {self.layout.org}")
        return str(org.id)

    def buckets(self, org_id: str) -> None:
        api = self.client.buckets_api()
        existing = {b.name: b for b in api.find_buckets(org_id=org_id, limit=100).buckets or []}
        shards = self.layout.shard_groups()
        for name, retention in self.layout.buckets().items():
            shard = shards[name]
            rules = BucketRetentionRules(type="expire", every_seconds=retention, shard_group_duration_seconds=shard)
            bucket = existing.get(name)
            if bucket is None:
                bucket = api.create_bucket(bucket_name=name, org=org_id, retention_rules=[rules])
                self.result.changes.append(f"created bucket {name}")
            else:
                rule = (bucket.retention_rules or [None])[0]
                have = (rule.every_seconds, rule.shard_group_duration_seconds if shard else None) if rule else None
                if have != (retention, shard):
                    bucket.retention_rules = [rules]
                    api.update_bucket(bucket)
                    self.result.changes.append(f"set retention of bucket {name} to {retention} s (shards {shard})")
            self.result.bucket_ids[name] = str(bucket.id)
        for name in sorted(set(existing) - set(self.layout.buckets())):
            if name.startswith(self.layout.bucket_prefix + "_"):
                LOG.warning("bucket %s is not in the layout any more; kept (delete it by hand if unwanted)", name)

    def tasks_user(self, org_id: str) -> str:
        users = self.client.users_api().find_users(limit=100).users or []
        user = next((u for u in users if u.name == TASKS_USER), None)
        if user is None:
            user = self.client.users_api().create_user(name=TASKS_USER)
            self.result.changes.append(f"created user {TASKS_USER}")
        service = OrganizationsService(self.client.api_client)
        owners = service.get_orgs_id_owners(org_id=org_id).users or []
        if not any(o.id == user.id for o in owners):
            body = AddResourceMemberRequestBody(id=user.id)
            service.post_orgs_id_owners(org_id=org_id, add_resource_member_request_body=body)
            self.result.changes.append(f"made {TASKS_USER} an owner of org {self.layout.org}")
        return str(user.id)

    def token(self, org_id: str, description: str, perms: list[Permission], user_id: str | None = None) -> str:
        api = self.client.authorizations_api()
        want = _perm_key(perms)
        found = [a for a in api.find_authorizations(org_id=org_id) or [] if a.description == description]
        keep = None
        for auth in found:
            matches = _perm_key(auth.permissions) == want and auth.status == "active"
            if keep is None and matches and (user_id is None or auth.user_id == user_id):
                keep = auth
            else:
                api.delete_authorization(auth)
                self.result.changes.append(f"deleted outdated token {description!r}")
        if keep is None:
            request = Authorization(org_id=org_id, permissions=perms, description=description, user_id=user_id)
            keep = api.create_authorization(authorization=request)
            self.result.changes.append(f"created token {description!r}")
        return str(keep.token)

    def tasks(self, org_id: str, tasks_token: str) -> None:
        with InfluxDBClient(url=self.client.url, token=tasks_token, org_id=org_id, timeout=30_000) as as_tasks:
            api = as_tasks.tasks_api()
            existing = {t.name: t for t in api.find_tasks(org_id=org_id) or []}
            wanted: set[str] = set()
            scripts = [
                (self.layout.task_name(t), render_task(self.layout, t, self.template)) for t in self.layout.tiers
            ]
            scripts.append((self.layout.energy_task, self.layout.energy_task_flux()))
            for name, flux in scripts:
                wanted.add(name)
                task = existing.get(name)
                if task is None:
                    task = api.create_task(
                        task_create_request=TaskCreateRequest(org_id=org_id, flux=flux, status="active")
                    )
                    self.result.changes.append(f"created task {name}")
                elif task.flux != flux or task.status != "active" or task.owner_id != self._tasks_user_id:
                    if task.owner_id != self._tasks_user_id:
                        api.delete_task(task.id)
                        task = api.create_task(
                            task_create_request=TaskCreateRequest(org_id=org_id, flux=flux, status="active")
                        )
                    else:
                        api.update_task_request(task.id, TaskUpdateRequest(flux=flux, status="active"))
                    self.result.changes.append(f"updated task {name}")
                self.result.task_ids[name] = str(task.id)
            for name, task in existing.items():
                if name.startswith(self.layout.task_prefix + "_") and name not in wanted:
                    api.delete_task(task.id)
                    self.result.changes.append(f"deleted task {name} (tier removed)")

    def run(self) -> None:
        org_id = self.org_id()
        self.buckets(org_id)
        ids = self.result.bucket_ids
        self._tasks_user_id = self.tasks_user(org_id)
        raw = ids[self.layout.raw_bucket]
        events = ids[self.layout.events_bucket]
        self.result.tokens["writer"] = self.token(
            org_id, WRITER, [_perm("write", "buckets", org_id, raw), _perm("write", "buckets", org_id, events)]
        )
        read_org = Permission(action="read", resource=PermissionResource(type="orgs", id=org_id))
        self.result.tokens["dashboards"] = self.token(
            org_id,
            DASHBOARDS,
            [read_org] + [_perm("read", "buckets", org_id, ids[name]) for name in self.layout.buckets()],
        )
        task_perms = [read_org]
        task_perms += [_perm(a, "tasks", org_id) for a in ("read", "write")]
        task_perms += [
            _perm(a, "buckets", org_id, ids[n]) for n in self.layout.task_buckets() for a in ("read", "write")
        ]
        tasks_token = self.token(org_id, TASKS, task_perms, user_id=self._tasks_user_id)
        self.tasks(org_id, tasks_token)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except ValueError:
            message = str(exc.body)[:300]
        return f"HTTP {exc.status} {exc.reason}: {message}"
    return f"{type(exc).__name__}: {exc}"


def apply(url: str, operator_token: str, layout: StorageLayout, template: str) -> ApplyResult:
    """Converge InfluxDB at ``url`` to ``layout``; see the module docstring.

    Raises:
        SetupError: InfluxDB unreachable or a request refused (the message names the step).
    """
    result = ApplyResult()
    with InfluxDBClient(url=url, token=operator_token, timeout=30_000) as client:
        try:
            _Applier(client, layout, template, result).run()
        except Exception as exc:  # the client raises ApiException, urllib3 errors, ...
            done = "; ".join(result.changes) or "nothing"
            raise SetupError(f"influx apply failed: {_describe(exc)}; done so far: {done}") from exc
    return result
