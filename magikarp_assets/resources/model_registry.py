"""Model registry resource: versioned policies with manifests, in the same store as the assets."""

import dagster as dg
from pydantic import Field, PrivateAttr

from magikarp_assets.core.registry import ModelRegistry
from magikarp_assets.resources.io_manager import make_blob_store


class ModelRegistryResource(dg.ConfigurableResource):
    """Where trained policies live: `models/{version}/model.zip` + `manifest.json`, local or S3.

    Every load verifies the artefact's SHA-256 against its manifest before anything is unpickled.
    """

    backend: str = Field(default="local", description="'local' (a folder) or 's3'.")
    root: str | None = Field(default=None, description="Local folder; default as the IO manager's.")
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    keep_last: int = Field(default=20, description="Versions kept besides the production one.")

    _registry: ModelRegistry | None = PrivateAttr(default=None)

    def registry(self) -> ModelRegistry:
        if self._registry is None:
            store = make_blob_store(
                self.backend, self.root, self.s3_bucket, self.s3_prefix, self.s3_endpoint_url, self.s3_region
            )
            self._registry = ModelRegistry(store, keep_last=self.keep_last)
        return self._registry
