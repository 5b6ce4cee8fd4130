"""Which image content the orchestrator vouches for, and which nodes hold it.

A node is never believed about images: what it reports says only whether *it* needs
a copy (and it checks the digest itself before running anything). The nodes a copy
may be fetched from are the ones recorded here, and only two things record one:

- the admin seeding a node (``SeedImage``): "node N holds ``name:tag@sha256:...``",
  which also pins ``name:tag`` to that digest for later applies;
- a delegated fetch of a pinned image completing on the node that received it (the
  receiver checked the bytes against the digest the token named before loading).

A compromised node claiming any image is thus never chosen as a source
(regression: one was, and its content ran on a healthy node); a compromised holder
can still refuse to serve or serve garbage, which the receiver refuses.

Everything is kept in the store (keys ``/imagepins/`` and ``/imageholders/``), read
when needed: any orchestrator that leads sees the same catalog.
"""

from __future__ import annotations

from orchestrator.store import Store, keys
from protos.wire import images

SEEDED = b"seeded"
RECEIVED = b"received"


class Catalog:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def pin_of(self, ref: str) -> str | None:
        """The digest the admin pinned a plain reference to, if any."""
        entry = await self._store.get(keys.image_pin(images.with_tag(ref)))
        return entry.value.decode() if entry is not None else None

    async def resolve(self, ref: str) -> str:
        """``ref`` pinned: as given when it carries a digest, else by the admin's pin;
        an unpinned ref without a pin is returned unchanged."""
        plain, digest = images.split(ref)
        if digest is not None:
            return images.pin(plain, digest)
        pinned = await self.pin_of(plain)
        return images.pin(plain, pinned) if pinned else ref

    async def holders(self, pinned: str) -> set[str]:
        """Names of the nodes recorded as holding exactly this pinned image."""
        plain, digest = images.split(pinned)
        if digest is None:
            return set()
        prefix = keys.image_holders(images.pin(plain, digest))
        result = await self._store.range(prefix)
        return {keys.unpart(e.key[len(prefix) :]) for e in result}

    async def seed(self, node: str, pinned: str) -> str:
        """The admin's word: ``node`` holds ``pinned``, and its ref is pinned to it."""
        plain, digest = images.split(pinned)
        if digest is None:
            raise images.NotPinned(f"{pinned[:120]!r} has no @sha256: digest")
        canonical = images.pin(plain, digest)
        await self._store.put(keys.image_pin(images.with_tag(plain)), digest.encode())
        await self._store.put(keys.image_holder(canonical, node), SEEDED)
        return canonical

    async def received(self, node: str, pinned: str) -> None:
        """``node`` completed a verified fetch of ``pinned``."""
        plain, digest = images.split(pinned)
        if digest is not None:
            await self._store.put(keys.image_holder(images.pin(plain, digest), node), RECEIVED)

    async def forget_node(self, node: str) -> None:
        """A revoked node holds nothing anyone should fetch."""
        result = await self._store.range(keys.IMAGE_HOLDERS)
        suffix = "/" + keys.part(node)
        for entry in result:
            if entry.key.endswith(suffix):
                await self._store.delete(entry.key)
