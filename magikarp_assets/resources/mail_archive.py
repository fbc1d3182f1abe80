"""Every email the platform sends is also kept, for audit, as an ``.eml`` object in the deployment's storage
(S3 in the cloud), and a deployment without real email keeps its outbox there instead of on local disk."""

import logging
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import ClassVar

from pydantic import Field, PrivateAttr

from magikarp_assets.core.notify import DeliveryError, DeliveryReceipt, Transport, outbox_name
from magikarp_assets.core.storage import BlobStore
from magikarp_assets.resources.io_manager import make_blob_store
from magikarp_assets.resources.notifier import NotifierResource

ARCHIVE_PREFIX = "outbox"
log = logging.getLogger(__name__)


def _recipients(message: EmailMessage) -> tuple[str, ...]:
    return tuple(addr for _, addr in getaddresses(message.get_all("To", []) + message.get_all("Cc", [])))


@dataclass
class BlobOutboxTransport:
    """Stores each message as ``outbox/{YYYYMMDD}-{level}-{slug}-{digest}.eml`` in a blob store (one PUT,
    SSE on S3); a rerun of the same message replaces its object."""

    store: BlobStore
    prefix: str = ARCHIVE_PREFIX
    name: ClassVar[str] = "outbox"

    @property
    def target(self) -> str:
        return self.store.uri(self.prefix)

    def key(self, message: EmailMessage) -> str:
        """The object key of ``message``."""
        return f"{self.prefix}/{outbox_name(message)}"

    def send(self, message: EmailMessage) -> DeliveryReceipt:
        key = self.key(message)
        try:
            self.store.put_bytes(key, message.as_bytes())
        except Exception as exc:  # any storage failure is a transient delivery failure
            raise DeliveryError(self.name, self.target, f"{type(exc).__name__}: {exc}") from None
        subject, msg_id = str(message["Subject"]), str(message["Message-ID"])
        return DeliveryReceipt(self.name, self.store.uri(key), subject, _recipients(message), msg_id)


@dataclass
class ArchivingTransport:
    """Delivers through ``inner`` (SES or SMTP), then keeps a copy in the archive.

    The copy is made after delivery: a failed copy is logged as an error but does not fail the delivery,
    since retrying would send the email twice.
    """

    inner: Transport
    archive: BlobOutboxTransport

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def target(self) -> str:
        return self.inner.target

    def send(self, message: EmailMessage) -> DeliveryReceipt:
        receipt = self.inner.send(message)
        try:
            self.archive.send(message)
        except DeliveryError as exc:
            log.error("delivered %r but could not archive it: %s", receipt.subject, exc)
        return receipt


class ArchivedNotifierResource(NotifierResource):
    """The notifier with an email archive in a blob store: transport ``outbox`` writes there only (no local
    folder), ``ses``/``smtp`` deliver and then archive there. The delivery queue's pending folder defaults
    to a temporary folder, so the durable copy of every message is the archived one."""

    archive_backend: str = Field(default="s3", description="'local' (a folder) or 's3'.")
    archive_root: str | None = None
    archive_s3_bucket: str | None = None
    archive_s3_prefix: str = ""
    archive_s3_endpoint_url: str | None = None
    archive_s3_region: str | None = None

    _archive: BlobOutboxTransport | None = PrivateAttr(default=None)

    def outbox_path(self) -> Path:
        return Path(self.outbox_dir or Path(tempfile.gettempdir()) / "magikarp-outbox")

    def archive(self) -> BlobOutboxTransport:
        """The blob-store outbox every message is kept in."""
        if self._archive is None:
            store = make_blob_store(
                self.archive_backend,
                self.archive_root,
                self.archive_s3_bucket,
                self.archive_s3_prefix,
                self.archive_s3_endpoint_url,
                self.archive_s3_region,
            )
            self._archive = BlobOutboxTransport(store)
        return self._archive

    def _transport(self) -> Transport:
        if self.transport == "outbox":
            return self.archive()
        return ArchivingTransport(super()._transport(), self.archive())
