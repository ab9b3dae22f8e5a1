"""The configured Label Studio, as this backend calls it: task images (from that host only) and
the project webhook's credentials. Token: a legacy API token (``Token``) or a personal access
token (a JWT refresh token, exchanged for an access token)."""

from __future__ import annotations

import logging
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from core.errors import ConfigurationError, InvalidInputError
from core.serving import BackendError

log = logging.getLogger("insid3.labelstudio")

TIMEOUT_S = 30.0


class ImageUnavailable(InvalidInputError):
    """A task without an image URL, or one Label Studio does not serve. HTTP 422."""

    code = "image_unavailable"


class ImageHostNotAllowed(InvalidInputError):
    """A task image on a host other than the configured Label Studio. HTTP 422."""

    code = "image_host_not_allowed"


class LabelStudioUnreachable(BackendError):
    """The configured Label Studio did not answer, or refused the token. HTTP 502."""

    code = "label_studio_unreachable"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class LabelStudio:
    """An HTTP session with the configured Label Studio for one request (``async with``)."""

    def __init__(self, url: str | None, token: str | None, max_bytes: int) -> None:
        self._base = (url or "").rstrip("/")
        self._token = token
        self._max_bytes = max_bytes
        self._http = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        self._auth: str | None = None

    async def __aenter__(self) -> LabelStudio:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self._http.aclose()

    def image_url(self, reference: object) -> str:
        """The absolute URL of a task's image, which must be on the configured Label Studio."""
        if not isinstance(reference, str) or not reference:
            raise ImageUnavailable("the task has no image URL under the labeling config's image key")
        if not self._base:
            raise ConfigurationError("INSID3_LABEL_STUDIO_URL is not set: the service cannot read task images")
        if reference.startswith("/") and not reference.startswith("//"):
            return self._base + reference
        if _origin(reference) != _origin(self._base):
            raise ImageHostNotAllowed(
                f"task image {reference[:200]!r} is not on the configured Label Studio ({self._base}); "
                "images are read from there only (upload them to Label Studio, or serve them from it)"
            )
        return reference

    async def _authorization(self, renew: bool = False) -> dict[str, str]:
        if not self._token:
            return {}
        if self._token.count(".") != 2:  # a legacy API token
            return {"Authorization": f"Token {self._token}"}
        if self._auth is None or renew:
            answer = await self._call("POST", "/api/token/refresh/", json={"refresh": self._token})
            try:
                access = answer.json()["access"]
            except (ValueError, KeyError, TypeError):
                raise LabelStudioUnreachable(
                    f"Label Studio answered {answer.status_code} exchanging INSID3_LABEL_STUDIO_TOKEN (a personal "
                    "access token) for an access token") from None
            self._auth = f"Bearer {access}"
        return {"Authorization": self._auth}

    async def _call(self, method: str, path_or_url: str, renewed: bool = False, **options: object) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self._base + path_or_url
        headers = {} if path_or_url == "/api/token/refresh/" else await self._authorization()
        try:
            response = await self._http.request(method, url, headers=headers, **options)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise LabelStudioUnreachable(f"Label Studio at {self._base} did not answer: {exc!r}") from None
        if response.status_code == 401 and self._auth is not None and not renewed:
            await self._authorization(renew=True)
            return await self._call(method, path_or_url, renewed=True, **options)
        if response.status_code in (401, 403):
            raise LabelStudioUnreachable(
                f"Label Studio refused INSID3_LABEL_STUDIO_TOKEN ({response.status_code} on {method} {url})"
            )
        return response

    async def image(self, reference: object) -> bytes:
        """The bytes of a task's image (at most the upload limit)."""
        url = self.image_url(reference)
        response = await self._call("GET", url)
        if response.status_code != 200:
            raise ImageUnavailable(f"Label Studio answered {response.status_code} for the task image {url}")
        if len(response.content) > self._max_bytes:
            raise ImageUnavailable(f"task image {url} is over {self._max_bytes} bytes (INSID3_MAX_UPLOAD_BYTES)")
        return response.content

    async def annotated_tasks(self, project: str) -> list[dict]:
        """Every task of the project that has annotations, with them (Label Studio's JSON export)."""
        answer = await self._call("GET", f"/api/projects/{project}/export",
                                  params={"exportType": "JSON", "download_all_tasks": "false"})
        tasks = answer.json() if answer.status_code == 200 else None
        if not isinstance(tasks, list):
            raise LabelStudioUnreachable(f"Label Studio answered {answer.status_code} exporting project {project}")
        return tasks

    async def authorize_webhook(self, project: str, authorization: str) -> bool:
        """Give the project's webhooks to this backend (``.../labelstudio/webhook``) the caller's
        ``Authorization`` header, so that annotation events reach its tenant. False when no token
        is configured or no such webhook exists."""
        if not self._base or not self._token:
            return False
        hooks = await self._call("GET", "/api/webhooks", params={"project": project})
        if hooks.status_code != 200:
            raise LabelStudioUnreachable(f"Label Studio answered {hooks.status_code} listing the webhooks")
        found = False
        for hook in hooks.json():
            if str(hook.get("url", "")).rstrip("/").endswith("/labelstudio/webhook"):
                found = True
                if (hook.get("headers") or {}).get("Authorization") != authorization:
                    await self._call("PATCH", f"/api/webhooks/{hook['id']}",
                                     json={"headers": {**(hook.get("headers") or {}), "Authorization": authorization}})
        return found
