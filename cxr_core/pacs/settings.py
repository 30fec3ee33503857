"""Settings of the DICOM node and the DICOMweb source: command line > environment > config file.

Environment: CXR_NODE_AET, CXR_NODE_HOST, CXR_NODE_PORT, CXR_NODE_ALLOW (comma-separated calling
AE titles), CXR_NODE_SEND_TO (comma-separated `AET@HOST:PORT` or DICOMweb STOW base URLs),
CXR_NODE_QUEUE (queue folder), CXR_NODE_RETRY_S / CXR_NODE_RETRY_MAX_S (back-off), CXR_DICOMWEB_URL,
CXR_DICOMWEB_USER, CXR_DICOMWEB_PASSWORD; CXR_PACS_CONFIG names a TOML file with [node] and
[dicomweb] tables holding the same keys in lower case without the prefix (docs/pacs.md).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..base.config import settings as app_settings
from ..base.errors import CxrError

AET_PATTERN = re.compile(r"^[ -~]{1,16}$")
DICOM_DEST = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


class PacsSettingsError(CxrError):
    """A node or DICOMweb setting is missing or malformed."""


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM C-STORE SCP (`AET@HOST:PORT`) or a DICOMweb STOW-RS base URL."""

    kind: str  # "dicom" or "stow"
    aet: str = ""
    host: str = ""
    port: int = 0
    url: str = ""
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @classmethod
    def parse(cls, text: str, user: str = "", password: str = "") -> Destination:
        text = text.strip()
        if text.startswith(("http://", "https://")):
            return cls("stow", url=text.rstrip("/"), user=user, password=password)
        match = DICOM_DEST.match(text)
        if not match or not 0 < int(match["port"]) < 65536:
            raise PacsSettingsError(f"The destination '{text}' is neither AET@HOST:PORT nor an http(s) "
                                    "DICOMweb URL.")
        return cls("dicom", aet=check_aet(match["aet"]), host=match["host"], port=int(match["port"]))

    @property
    def name(self) -> str:
        """How logs and the queue name it (never with credentials)."""
        if self.kind == "dicom":
            return f"{self.aet}@{self.host}:{self.port}"
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", "")) if not parts.port \
            else urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}", parts.path, "", ""))


@dataclass(frozen=True)
class DicomWebSettings:
    """A DICOMweb server: base URL (QIDO/WADO/STOW under it) and optional basic-auth credentials."""

    url: str = ""
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class NodeSettings:
    """The DICOM node: who it is, who may send, where results go, where its queue lives."""

    aet: str = "CXRREVIEW"
    host: str = "0.0.0.0"
    port: int = 11112
    allow: tuple[str, ...] = ()
    send_to: tuple[Destination, ...] = ()
    queue_dir: Path = field(default_factory=lambda: app_settings().data_dir / "node_queue")
    retry_s: float = 5.0
    retry_max_s: float = 300.0
    dicomweb: DicomWebSettings = field(default_factory=DicomWebSettings)

    def validated(self) -> NodeSettings:
        """Self, after checking what the node cannot run without."""
        check_aet(self.aet)
        if not self.allow:
            raise PacsSettingsError("No calling AE title is allowed to send: set --allow or CXR_NODE_ALLOW.")
        if not self.send_to:
            raise PacsSettingsError("No destination for the results: set --send-to or CXR_NODE_SEND_TO.")
        if not 0 < self.port < 65536:
            raise PacsSettingsError(f"The port {self.port} is not between 1 and 65535.")
        return self


def check_aet(aet: str) -> str:
    """An AE title: 1-16 printable ASCII characters, no backslash, not only spaces."""
    if not AET_PATTERN.match(aet) or "\\" in aet or not aet.strip():
        raise PacsSettingsError(f"'{aet}' is not a valid AE title (1 to 16 printable characters).")
    return aet.strip()


def _split(value: str | list | tuple | None) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _file_tables(path: str | Path | None) -> tuple[dict, dict]:
    path = path or os.environ.get("CXR_PACS_CONFIG")
    if not path:
        return {}, {}
    try:
        data = tomllib.loads(Path(path).expanduser().read_text())
    except OSError as exc:
        raise PacsSettingsError(f"The PACS configuration file {path} cannot be read: {exc.strerror}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PacsSettingsError(f"The PACS configuration file {path} is not valid TOML: {exc}.") from exc
    return dict(data.get("node", {})), dict(data.get("dicomweb", {}))


def dicomweb_settings(config: str | Path | None = None) -> DicomWebSettings:
    """The DICOMweb server from the environment, else the config file."""
    _, table = _file_tables(config)
    env = os.environ
    return DicomWebSettings(
        url=(env.get("CXR_DICOMWEB_URL") or table.get("url", "")).rstrip("/"),
        user=env.get("CXR_DICOMWEB_USER") or table.get("user", ""),
        password=env.get("CXR_DICOMWEB_PASSWORD") or table.get("password", ""),
    )


def node_settings(config: str | Path | None = None, **overrides) -> NodeSettings:
    """Node settings from the config file, then the environment, then `overrides` (the command
    line; None values are ignored). Destinations that are URLs use the DICOMweb credentials."""
    table, _ = _file_tables(config)
    env = os.environ
    web = dicomweb_settings(config)

    def pick(key: str, default=None):
        value = overrides.get(key)
        if value not in (None, (), []):
            return value
        return env.get(f"CXR_NODE_{key.upper()}") or table.get(key, default)

    try:
        port, retry_s, retry_max_s = int(pick("port", 11112)), float(pick("retry_s", 5.0)), \
            float(pick("retry_max_s", 300.0))
    except (TypeError, ValueError) as exc:
        raise PacsSettingsError(f"A node port or retry setting is not a number: {exc}.") from exc
    queue = pick("queue")
    base = NodeSettings()
    return replace(
        base, aet=check_aet(str(pick("aet", "CXRREVIEW"))), host=str(pick("host", "0.0.0.0")), port=port,
        allow=tuple(check_aet(a) for a in _split(pick("allow"))),
        send_to=tuple(Destination.parse(d, web.user, web.password) for d in _split(pick("send_to"))),
        queue_dir=Path(queue).expanduser() if queue else base.queue_dir,
        retry_s=retry_s, retry_max_s=retry_max_s, dicomweb=web,
    )
