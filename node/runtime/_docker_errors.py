"""The one place where docker SDK and HTTP errors become ``node.errors``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import docker.errors
import requests.exceptions

from node.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NodeError,
    NotFound,
    RuntimeFailure,
    RuntimeUnavailable,
)

# What the SDK says when it cannot even ask the engine for its API version.
_UNREACHABLE_HINTS = (
    "Error while fetching server API version",
    "Connection aborted",
    "Connection refused",
    "No such file or directory",
)


def _explanation(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text or exc).strip()


@contextlib.contextmanager
def docker_errors(subject: str, *, field: str = "request") -> Iterator[None]:
    """Map every docker/requests/socket failure raised inside to a ``NodeError``.

    ``subject`` names the object for NotFound/AlreadyExists messages ("container 'web'");
    ``field`` is the request field blamed when the engine rejects a parameter.
    """
    try:
        yield
    except NodeError:
        raise
    except docker.errors.NotFound:
        raise NotFound(f"{subject} not found on this node") from None
    except docker.errors.APIError as exc:
        status = exc.status_code
        text = _explanation(exc)
        if status == 409:
            if "already in use" in text:
                raise AlreadyExists(f"{subject} already exists on this node") from None
            raise FailedPrecondition(f"{subject}: {text}") from None
        if status == 400:
            raise InvalidArgument(field, text) from None
        raise RuntimeFailure(f"{subject}: docker engine error {status}: {text}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise RuntimeUnavailable(f"docker engine does not answer: {exc}") from None
    except requests.exceptions.RequestException as exc:
        raise RuntimeFailure(f"{subject}: docker engine request failed: {exc}") from None
    except docker.errors.DockerException as exc:
        if any(hint in str(exc) for hint in _UNREACHABLE_HINTS):
            raise RuntimeUnavailable(f"docker engine does not answer: {exc}") from None
        raise RuntimeFailure(f"{subject}: {exc}") from None
    except OSError as exc:
        # Raw socket reads of attached/streamed output bypass requests.
        raise RuntimeUnavailable(f"docker engine connection failed: {exc}") from None


class MappedStream:
    """An SDK byte stream with errors mapped. ``close`` may be called from another
    thread (the call it serves ended): it closes the engine's response, which wakes a
    read blocked on it; the stream also closes when exhausted or abandoned."""

    def __init__(self, chunks: Iterable[bytes], subject: str) -> None:
        self._chunks = chunks
        self._subject = subject
        self._iter = iter(chunks)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            with docker_errors(self._subject):
                while True:
                    chunk = next(self._iter)
                    if chunk:
                        return chunk
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()

    def __del__(self) -> None:
        self.close()


def mapped_stream(chunks: Iterable[bytes], subject: str) -> Iterator[bytes]:
    """Iterate an SDK byte stream with errors mapped; closes the stream when abandoned."""
    return MappedStream(chunks, subject)
