"""Task kinds: what the orchestrator asks a node to do on its behalf (the ``kind`` of
a ``Task``), and which NodeService operation of the source node each one delegates."""

from __future__ import annotations

from collections.abc import Mapping

#: Fetch an image from another node (``resource`` is the image reference).
IMAGE_FETCH = "image.fetch"
#: Fetch a volume's content from another node (``resource`` is the volume name).
VOLUME_FETCH = "volume.fetch"

#: kind -> the ``op`` of the delegated token the fetching node presents to the source.
EXPORT_OP: Mapping[str, str] = {IMAGE_FETCH: "image.export", VOLUME_FETCH: "volume.export"}

KINDS = frozenset(EXPORT_OP)
