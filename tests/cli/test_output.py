"""Output formats and the convergence judgement of ``apply --wait``."""

from __future__ import annotations

import json

import yaml

from orchestrator._cli._output import (
    OutputFormat,
    age,
    app_columns,
    jsonpath,
    memory,
    node_columns,
    render,
    workload_columns,
)
from orchestrator._cli.apply import progress
from protos import control_pb2 as cpb

NOW = 1_700_000_000.0


def _workloads() -> list[cpb.Workload]:
    return [
        cpb.Workload(id="acme.shop.web.0", tenant="acme", app="shop", service="web", index=0,
                     node="node-1", desired="running", state="running", restarts=2,
                     image="local/busybox:1", updated_at=NOW - 90, spec_hash="h1",
                     endpoints=["127.0.0.31:18080"]),
        cpb.Workload(id="acme.shop.web.1", tenant="acme", app="shop", service="web", index=1,
                     node="", desired="running", state="unschedulable", updated_at=NOW - 5,
                     message="web: unschedulable (2 nodes:\n cordoned)", spec_hash="h1"),
    ]


def test_table_and_wide() -> None:
    text = render(_workloads(), workload_columns(NOW), "table")
    lines = text.splitlines()
    assert lines[0].split() == ["TENANT", "APP", "INSTANCE", "NODE", "STATE", "RESTARTS", "AGE"]
    assert lines[1].split() == ["acme", "shop", "web.0", "node-1", "running", "2", "1m"]
    assert lines[2].split() == ["acme", "shop", "web.1", "-", "unschedulable", "0", "5s"]
    wide = render(_workloads(), workload_columns(NOW), "wide").splitlines()
    assert wide[0].split() == ["TENANT", "APP", "INSTANCE", "NODE", "DESIRED", "STATE",
                               "RESTARTS", "AGE", "IMAGE", "CONTAINER", "ENDPOINTS", "MESSAGE"]
    assert "127.0.0.31:18080" in wide[1].split()  # where the published port is reached
    assert wide[2].endswith("web: unschedulable (2 nodes: cordoned)")  # one line


def test_empty_table_is_the_header() -> None:
    assert render([], app_columns(NOW), "table").split() == [
        "TENANT", "NAME", "SERVICES", "READY", "GENERATION", "UPDATED"]


def test_json_and_yaml_are_the_records() -> None:
    as_json = json.loads(render(_workloads(), workload_columns(NOW), "json"))
    as_yaml = yaml.safe_load(render(_workloads(), workload_columns(NOW), "yaml"))
    assert as_json == as_yaml
    assert [w["id"] for w in as_json] == ["acme.shop.web.0", "acme.shop.web.1"]
    assert as_json[0]["restarts"] == 2
    assert as_json[1]["node"] == ""  # fields at their defaults are present
    assert json.loads(render([], node_columns(NOW), "json")) == []


def test_node_columns() -> None:
    node = cpb.NodeRecord(name="n1", state="ready", cordoned=True, cpus=4, allocated_cpu=0.5,
                          memory=8 << 30, allocated_memory=96 << 20, address="127.0.0.2:7302",
                          workloads=3, runtime="process", id="spiffe://d/node/n1")
    row = render([node], node_columns(NOW), "table").splitlines()[1].split()
    assert row == ["n1", "ready", "cordoned", "3", "0.5/4", "96Mi/8Gi", "127.0.0.2:7302"]


def test_value_formats() -> None:
    assert age(0, NOW) == "-"
    assert age(NOW - 59, NOW) == "59s"
    assert age(NOW - 7200, NOW) == "2h"
    assert age(NOW - 3 * 86400, NOW) == "3d"
    assert age(NOW + 10, NOW) == "0s"  # clock skew never prints a negative age
    assert memory(64 << 20) == "64Mi"
    assert memory(2 << 30) == "2Gi"
    assert memory(24105 << 20) == "23.5Gi"
    assert memory(512 << 10) == "512Ki"


def _w(service: str, index: int, state: str, desired: str = "running", spec: str = "new",
       message: str = "") -> cpb.Workload:
    return cpb.Workload(service=service, index=index, state=state, desired=desired,
                        spec_hash=spec, message=message)


def test_progress_counts_running_instances_of_the_applied_spec() -> None:
    changes = [cpb.ServiceChange(service="web", action="update", replicas=3, spec_hash="new"),
               cpb.ServiceChange(service="db", action="unchanged", replicas=1, spec_hash="db")]
    workloads = [
        _w("web", 0, "running"),
        _w("web", 1, "creating"),
        _w("web", 2, "running", spec="old"),  # still the old spec: to be replaced
        _w("db", 0, "running", spec="db"),
    ]
    web, db = progress(changes, workloads)
    assert (web.running, web.desired, web.extra, web.done) == (1, 3, 1, False)
    assert web.line() == "web 1/3 running, 1 to remove"
    assert db.done and db.line() == "db 1/1 running"
    workloads = [_w("web", i, "running") for i in range(3)] + [_w("db", 0, "running", spec="db")]
    assert all(p.done for p in progress(changes, workloads))


def test_progress_scale_down_and_delete_wait_for_removal() -> None:
    changes = [cpb.ServiceChange(service="web", action="scale", replicas=1, spec_hash="new"),
               cpb.ServiceChange(service="old", action="delete", replicas=0)]
    workloads = [_w("web", 0, "running"), _w("web", 1, "running", desired="removed"),
                 _w("old", 0, "exited", desired="removed")]
    web, old = progress(changes, workloads)
    assert (web.running, web.extra, web.done) == (1, 1, False)
    assert (old.desired, old.extra, old.done) == (0, 1, False)
    workloads = [_w("web", 0, "running"), _w("web", 1, "removed", desired="removed")]
    assert all(p.done for p in progress(changes, workloads))


def test_progress_reports_refusals() -> None:
    changes = [cpb.ServiceChange(service="web", action="create", replicas=1, spec_hash="new")]
    (web,) = progress(changes, [_w("web", 0, "unschedulable", message="no\nnodes")])
    assert web.problems == ("web.0: unschedulable: no nodes",)


def test_age_counts_from_creation_not_the_last_update() -> None:
    w = cpb.Workload(app="a", service="s", state="running", desired="running",
                     created_at=NOW - 3 * 3600, updated_at=NOW - 10)
    row = render([w], workload_columns(NOW), "table").splitlines()[1].split()
    assert row[-1] == "3h"


def test_a_deleted_instance_shows_terminating_until_it_is_gone() -> None:
    going = cpb.Workload(tenant="t", app="a", service="s", index=0, node="n", state="running",
                         desired="removed")
    gone = cpb.Workload(tenant="t", app="a", service="s", index=1, node="n", state="removed",
                        desired="removed")
    rows = render([going, gone], workload_columns(NOW), "table").splitlines()
    assert rows[1].split()[4] == "terminating"
    assert rows[2].split()[4] == "removed"


def test_output_name_and_jsonpath() -> None:
    ws = _workloads()
    names = render(ws, workload_columns(NOW), "name", kind="workload",
                   names=lambda w: f"{w.app}/{w.service}.{w.index}")  # type: ignore[attr-defined]
    assert names.splitlines() == ["workload/shop/web.0", "workload/shop/web.1"]
    assert render(ws, [], "jsonpath={.items[*].node}") == "node-1 "
    assert render(ws, [], 'jsonpath={.items[0].state}{"\\n"}') == "running\n"
    assert render(ws[:1], [], "jsonpath={.restarts}", single=True) == "2"
    assert jsonpath({"a": [{"b": 1}, {"b": 2}]}, "b={.a[*].b}") == "b=1 2"


def test_bad_output_formats_are_usage_errors() -> None:
    import click
    import pytest

    fmt = OutputFormat()
    assert fmt.convert("jsonpath={.items}", None, None) == "jsonpath={.items}"
    for bad in ("xml", "jsonpath={.items[", "jsonpath={unclosed"):
        with pytest.raises(click.BadParameter):
            fmt.convert(bad, None, None)


def test_json_log_lines() -> None:
    import logging

    from protos.wire.logs import JsonFormatter

    record = logging.LogRecord("capstan.node", logging.WARNING, __file__, 1, "refused %s", ("x",),
                               None)
    record.created = 1_700_000_000.5
    doc = json.loads(JsonFormatter().format(record))
    assert doc == {"time": "2023-11-14T22:13:20.500Z", "level": "warning",
                   "logger": "capstan.node", "message": "refused x"}
