"""Named storage locations from DISTRIBUTED_STORAGE_CONFIG; uploads go to the preferred one."""

from quaymaster.settings import Settings
from quaymaster.storage.base import BlobStore, StorageError
from quaymaster.storage.local import LocalStorage


def _s3(driver: str):
    """A builder that imports the S3 driver (and boto3) only when a location uses it."""

    def build(name: str, params: dict) -> BlobStore:
        from quaymaster.storage.s3 import S3Store

        return S3Store.from_config(name, driver, params)

    return build


DRIVERS = {
    "LocalStorage": lambda name, p: LocalStorage(name, p["storage_path"]),
    "S3Storage": _s3("S3Storage"),
    "RadosGWStorage": _s3("RadosGWStorage"),
}


class DistributedStorage:
    def __init__(self, stores: dict[str, BlobStore], preference: list[str]):
        self.stores = stores
        self.preference = preference
        # Every location, preferred ones first: the order reads try them in.
        self._read_order = preference + [n for n in stores if n not in preference]

    @property
    def preferred(self) -> BlobStore:
        return self.stores[self.preference[0]]

    def location(self, name: str) -> BlobStore:
        try:
            return self.stores[name]
        except KeyError:
            raise StorageError(f"unknown storage location {name!r}") from None

    def readable(self, placements: list[str]) -> BlobStore | None:
        """The first location in preference order that holds the blob."""
        for name in self._read_order:
            if name in placements:
                return self.stores[name]
        return None

    def holders(self, placements: list[str]) -> list[BlobStore]:
        """Every configured location that holds the blob, in preference order (read fallbacks)."""
        return [self.stores[name] for name in self._read_order if name in placements]


def build_storage(settings: Settings) -> DistributedStorage:
    stores = {loc.name: DRIVERS[loc.driver](loc.name, loc.params) for loc in settings.storage_locations}
    return DistributedStorage(stores, list(settings.DISTRIBUTED_STORAGE_PREFERENCE))
