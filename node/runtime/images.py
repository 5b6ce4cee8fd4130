"""The one image Capstan can make without a registry: ``local/busybox:1``.

There is no image registry on the machines Capstan is tested and demonstrated on,
so the demo image is built locally from the host's static busybox: a tarball of
``/bin/busybox`` plus one symlink per applet, given ``ENV PATH=/bin``. The docker
runtime gets it with ``docker import``; the process runtime imports the same
content into its image store (``node.runtime.process.ensure_busybox_image``).

``ensure_image`` is per node on purpose, on docker too (each node has its own
image namespace on a shared engine): a caller chooses which nodes receive the
image (all of them today; one of them once images travel peer-to-peer).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from node.errors import FailedPrecondition, NotFound, RuntimeFailure
from node.runtime.base import Runtime

__all__ = [
    "BUSYBOX_BINARY",
    "BUSYBOX_IMAGE",
    "busybox_binary",
    "busybox_rootfs",
    "ensure_docker_busybox",
    "ensure_image",
]

BUSYBOX_IMAGE = "local/busybox:1"
BUSYBOX_BINARY = Path("/bin/busybox")  # Debian's busybox-static: no shared libraries
_LIST_TIMEOUT = 30.0


def busybox_binary() -> Path | None:
    """The host's busybox, or None when none is installed."""
    found = shutil.which("busybox")
    if found:
        return Path(found)
    return BUSYBOX_BINARY if BUSYBOX_BINARY.is_file() else None


def _applets(busybox: Path) -> list[str]:
    try:
        out = subprocess.run(
            [str(busybox), "--list"], capture_output=True, check=True, timeout=_LIST_TIMEOUT
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeFailure(f"{busybox} --list failed: {exc}") from None
    # busybox lists itself; a "busybox -> busybox" link would replace the binary.
    return sorted({a for a in out.split() if a != "busybox" and "/" not in a})


def busybox_rootfs(busybox: Path | None = None) -> bytes:
    """A root filesystem tarball: ``bin/busybox``, its applet links and ``/tmp``."""
    binary = busybox or busybox_binary()
    if binary is None or not binary.is_file():
        raise FailedPrecondition("no busybox binary is installed (install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        try:
            info = tar.gettarinfo(str(binary), arcname="bin/busybox")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with binary.open("rb") as fh:
                tar.addfile(info, fh)
        except OSError as exc:
            raise RuntimeFailure(f"cannot read {binary}: {exc.strerror}") from None
        for applet in _applets(binary):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type = tarfile.DIRTYPE
        tmp.mode = 0o1777
        tar.addfile(tmp)
    return buf.getvalue()


def ensure_docker_busybox(ref: str = BUSYBOX_IMAGE, *, busybox: Path | None = None) -> str:
    """``ref`` in the local Docker Engine, imported from the host's busybox when missing."""
    import docker  # imported here: only docker users pay for the SDK

    from node.runtime._docker_errors import docker_errors

    with docker_errors(f"image {ref!r}", field="ref"):
        client = docker.from_env(timeout=60)
        try:
            try:
                client.api.inspect_image(ref)
                return ref
            except docker.errors.ImageNotFound:
                pass
            repository, _, tag = ref.rpartition(":")
            client.api.import_image_from_data(
                busybox_rootfs(busybox), repository=repository, tag=tag, changes=["ENV PATH=/bin"]
            )
            client.api.inspect_image(ref)  # fails loudly if the import did not tag it
        finally:
            client.close()
    return ref


def ensure_image(runtime: Runtime, ref: str = BUSYBOX_IMAGE) -> str:
    """Make ``ref`` present for ``runtime`` (this node only).

    Docker nodes have their own image namespace on a shared engine: they adopt the
    engine's own ``ref``, which for the busybox image is imported first when
    missing. Process nodes get the busybox image built into their store. Any other
    image the node lacks is NotFound: there is no registry to pull from.
    """
    if runtime.image_exists(ref):
        return ref
    from node.runtime.docker import DockerRuntime
    from node.runtime.process import ProcessRuntime, ensure_busybox_image

    if isinstance(runtime, DockerRuntime):
        if ref == BUSYBOX_IMAGE:
            ensure_docker_busybox(ref)
        try:
            return runtime.adopt_image(ref)
        except NotFound:
            raise NotFound(
                f"image {ref!r} is in neither the node nor the engine (no registry)"
            ) from None
    if ref != BUSYBOX_IMAGE:
        raise NotFound(f"image {ref!r} is not present and cannot be built here (no registry)")
    if not isinstance(runtime, ProcessRuntime):
        raise FailedPrecondition(f"cannot build {ref!r} for the {runtime.name} runtime")
    binary = busybox_binary()
    if binary is None:
        raise FailedPrecondition("no busybox binary is installed (install busybox-static)")
    return ensure_busybox_image(runtime, ref, busybox=binary)
