"""From an applied Application to workload records: validation and the plan.

Apply is idempotent: the same application twice changes nothing. A changed service
template gives its workloads a new spec hash (the reconciler replaces them one at a
time); a changed replica count adds or retires instances; a removed service retires
all of its instances. Nothing is written until the whole plan is known.
"""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator import quantities
from orchestrator.errors import OrchestratorError
from orchestrator.topology import template_hash
from protos import control_pb2, topology_pb2
from protos.wire import names, rules


class InvalidApplication(OrchestratorError):
    """An Application message breaks a topology rule (INVALID_ARGUMENT)."""


def validate(app: topology_pb2.Application) -> None:
    """The server-side twin of the topology loader's checks: a client could send any
    message, so every field a node will see is checked again here."""
    problems: list[str] = []

    def check(path: str, message: str | None) -> None:
        if message:
            problems.append(f"{path}: {message}")

    check("name", rules.check_dns_label(app.name))
    check("tenant", rules.check_dns_label(app.tenant))
    if not app.services:
        problems.append("services: at least one service is required")
    if len(app.services) > quantities.MAX_SERVICES:
        problems.append(f"services: at most {quantities.MAX_SERVICES}")
    seen: set[str] = set()
    for s in app.services:
        p = f"services.{s.name or '?'}"
        check(f"{p}.name", rules.check_dns_label(s.name))
        if s.name in seen:
            problems.append(f"{p}: duplicate service name")
        seen.add(s.name)
        check(f"{p}.image", rules.check_image_ref(s.image))
        check(f"{p}.command", rules.check_command(list(s.command)))
        for k in s.env:
            check(f"{p}.env.{k}", rules.check_env_name(k))
        check(f"{p}.env", rules.check_env_total(s.env.items()))
        check(f"{p}.user", rules.check_user(s.user))
        check(f"{p}.seccomp", rules.check_seccomp(s.seccomp))
        for i, cap in enumerate(s.cap_add):
            check(f"{p}.capAdd[{i}]", rules.check_capability(cap))
        if len(set(s.cap_add)) != len(s.cap_add) or len(s.cap_add) > rules.MAX_CAP_ADD:
            problems.append(f"{p}.capAdd: at most {rules.MAX_CAP_ADD}, each named once")
        replicas = s.replicas if s.HasField("replicas") else 1
        if not 0 <= replicas <= quantities.MAX_REPLICAS:
            problems.append(f"{p}.replicas: must be between 0 and {quantities.MAX_REPLICAS}")
        if not 0 <= s.resources.cpu <= quantities.MAX_CPU or s.resources.cpu != s.resources.cpu:
            problems.append(f"{p}.resources.cpu: must be between 0 and {quantities.MAX_CPU}")
        if s.resources.memory and not rules.MIN_MEMORY <= s.resources.memory <= rules.MAX_MEMORY:
            problems.append(f"{p}.resources.memory: must be 0 or at least {rules.MIN_MEMORY} bytes")
        for i, v in enumerate(s.volumes):
            check(f"{p}.volumes[{i}].name", rules.check_dns_label(v.name))
            check(f"{p}.volumes[{i}].path", rules.check_mount_path(v.path))
        for link in s.links:
            if link not in {x.name for x in app.services}:
                problems.append(f"{p}.links: unknown service {link!r}")
    if problems:
        raise InvalidApplication("; ".join(problems))


def replicas_of(s: topology_pb2.Service) -> int:
    return s.replicas if s.HasField("replicas") else 1


def workload_id(tenant: str, app: str, service: str, index: int) -> str:
    return f"{tenant}.{app}.{service}.{index}"


def container_name(w: control_pb2.Workload) -> str:
    """Node-unique and deterministic: the same workload and spec always get the same
    name, so a repeated create after a crash is ALREADY_EXISTS, never a duplicate.
    It starts with the tenant and application (``protos.wire.names``)."""
    return names.container_name(w.tenant, w.app, w.service, w.index, w.spec_hash)


def plan(
    app: topology_pb2.Application,
    current: control_pb2.AppRecord | None,
    workloads: Iterable[control_pb2.Workload],
    *,
    now: float,
) -> tuple[control_pb2.AppRecord, list[control_pb2.ServiceChange], list[control_pb2.Workload]]:
    """The new app record, the per-service changes, and every workload record to write."""
    existing: dict[str, dict[int, control_pb2.Workload]] = {}
    for w in workloads:
        existing.setdefault(w.service, {})[w.index] = w
    record = control_pb2.AppRecord()
    if current is not None:
        record.CopyFrom(current)
    else:
        record.created_at = now
    record.app.CopyFrom(app)
    record.deleting = False
    changes: list[control_pb2.ServiceChange] = []
    writes: list[control_pb2.Workload] = []
    old_hashes = dict(current.spec_hashes) if current else {}
    record.spec_hashes.clear()
    for s in app.services:
        h = template_hash(s)
        record.spec_hashes[s.name] = h
        n = replicas_of(s)
        mine = existing.get(s.name, {})
        live = {i: w for i, w in mine.items() if w.desired != "removed"}
        if s.name not in old_hashes:
            action = "create"
        elif old_hashes[s.name] != h:
            action = "update"
        elif len(live) != n:
            action = "scale"
        else:
            action = "unchanged"
        changes.append(
            control_pb2.ServiceChange(service=s.name, action=action, replicas=n, spec_hash=h)
        )
        for i in range(n):
            found = mine.get(i)
            if found is None:
                w = control_pb2.Workload(
                    id=workload_id(app.tenant, app.name, s.name, i),
                    tenant=app.tenant,
                    app=app.name,
                    service=s.name,
                    index=i,
                    state="pending",
                    created_at=now,
                )
            elif found.desired == "running" and found.spec_hash == h and found.image == s.image:
                continue
            else:
                w = _copy(found)
            w.desired = "running"
            w.spec_hash = h
            w.image = s.image
            w.cpu = s.resources.cpu
            w.memory = s.resources.memory
            w.generation += 1
            w.updated_at = now
            w.attempts = 0
            w.next_attempt_at = 0
            writes.append(w)
        for i, w in mine.items():
            if i >= n and w.desired != "removed":
                writes.append(_retire(w, now))
    for name, mine in existing.items():
        if name not in record.spec_hashes:
            changes.append(control_pb2.ServiceChange(service=name, action="delete", replicas=0))
            writes.extend(_retire(w, now) for w in mine.values() if w.desired != "removed")
    if any(c.action != "unchanged" for c in changes) or current is None:
        record.generation = (current.generation if current else 0) + 1
        record.updated_at = now
    return record, changes, writes


def retire_all(
    workloads: Iterable[control_pb2.Workload], *, now: float
) -> list[control_pb2.Workload]:
    return [_retire(w, now) for w in workloads if w.desired != "removed"]


def _retire(w: control_pb2.Workload, now: float) -> control_pb2.Workload:
    out = _copy(w)
    out.desired = "removed"
    out.updated_at = now
    out.attempts = 0
    out.next_attempt_at = 0
    return out


def _copy(w: control_pb2.Workload) -> control_pb2.Workload:
    out = control_pb2.Workload()
    out.CopyFrom(w)
    return out
