"""``ProcessRuntime.images()``: the refs of the node's image index, as heartbeats report."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.errors import InvalidArgument
from node.runtime.base import Runtime
from node.runtime.process import ProcessRuntime

from .conftest import IMAGE, busybox_rootfs


def test_images_lists_what_was_imported(tmp_path: Path, busybox_archive: bytes) -> None:
    state = tmp_path / "state"
    rt = ProcessRuntime("node-list", state)
    try:
        assert isinstance(rt, Runtime)
        assert rt.images() == []
        rt.import_rootfs("local/tools", [busybox_rootfs(("sh",))])
        rt.import_rootfs("localhost:5000/team/app:2", [busybox_rootfs(("true",))])
        assert rt.image_import([busybox_archive]) == [IMAGE]
        listed = rt.images()
        # Every ref carries its tag; the list is what image_exists says yes to.
        assert listed == ["local/busybox:1", "local/tools:latest", "localhost:5000/team/app:2"]
        assert all(rt.image_exists(ref) for ref in listed)
        assert rt.image_exists("local/tools")
    finally:
        rt.close()
    again = ProcessRuntime("node-list", state)
    try:
        assert again.images() == listed  # the index outlives the agent
    finally:
        again.close()


def test_a_refused_import_lists_nothing_new(tmp_path: Path) -> None:
    rt = ProcessRuntime("node-refused", tmp_path / "state")
    try:
        with pytest.raises(InvalidArgument) as err:
            rt.image_import([b"not an archive" * 64])
        assert err.value.field == "image"
        assert rt.images() == []
    finally:
        rt.close()
