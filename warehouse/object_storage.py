"""The lake's data on S3-compatible object storage (``PROJECTIONIST_LAKE_DATA=s3://bucket/prefix/``).

DuckDB reads and writes it through its own ``httpfs`` extension, with credentials found by the
``aws`` extension's credential chain (the standard AWS environment variables, ``~/.aws`` profiles,
SSO, an instance's or a task's role): Projectionist never reads, stores or prints a key. The rest
comes from the standard variables too:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: another S3 API (MinIO, R2, Ceph, a local test
  server); its scheme decides TLS;
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``;
- ``PROJECTIONIST_S3_URL_STYLE``: ``path`` or ``vhost`` (default: ``path`` with an endpoint, as
  most S3-compatible servers want, ``vhost`` on AWS).

Both extensions ship as wheels (``duckdb-extension-httpfs``, ``duckdb-extension-aws``) and are
loaded offline like the others (:mod:`eventstore.duckdb_connections`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from eventstore.quoting import quote_literal
from warehouse.errors import LakeConfigurationError

__all__ = ["EXTENSIONS", "SECRET_NAME", "S3Location"]

#: The DuckDB extensions a lake on object storage needs, beyond the catalog's.
EXTENSIONS = ("httpfs", "aws")
#: The name of the (in-memory, per connection) DuckDB secret scoped to the lake's bucket.
SECRET_NAME = "projectionist_lake_s3"

# S3's rules for a bucket name (lower-case letters, digits, dots and hyphens, 3 to 63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """Where on S3 the lake's files are, and how to reach that S3 API."""

    bucket: str
    prefix: str  # ends with "/" or is empty
    endpoint: str | None  # host[:port] of a non-AWS S3 API
    use_ssl: bool
    region: str | None
    url_style: str  # "path" or "vhost"

    @classmethod
    def parse(cls, data_path: str, env: Mapping[str, str]) -> S3Location:
        """The location of ``data_path`` (``s3://bucket/prefix/``) with the S3 settings of ``env``."""
        parts = urlsplit(data_path)
        if parts.scheme != "s3":
            raise LakeConfigurationError(
                f"PROJECTIONIST_LAKE_DATA {data_path!r}: only local folders and s3://bucket/prefix/ are supported "
                "(for MinIO, R2 or another S3 API, set AWS_ENDPOINT_URL)."
            )
        if not _BUCKET.match(parts.netloc):
            raise LakeConfigurationError(
                f"PROJECTIONIST_LAKE_DATA {data_path!r}: {parts.netloc!r} is not an S3 bucket name (3-63 lower-case "
                "letters, digits, dots or hyphens): use s3://bucket/prefix/."
            )
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        endpoint, use_ssl = None, True
        raw = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if raw:
            url = urlsplit(raw)
            if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/"):
                raise LakeConfigurationError(
                    f"AWS_ENDPOINT_URL {raw!r} is not an S3 endpoint: use http(s)://host[:port], e.g. "
                    "http://127.0.0.1:9000 for a local MinIO."
                )
            endpoint, use_ssl = url.netloc, url.scheme == "https"
        style = env.get("PROJECTIONIST_S3_URL_STYLE") or ("path" if endpoint else "vhost")
        if style not in ("path", "vhost"):
            raise LakeConfigurationError(f"PROJECTIONIST_S3_URL_STYLE {style!r}: use path or vhost.")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        return cls(parts.netloc, prefix, endpoint, use_ssl, region, style)

    def secret_sql(self, name: str = SECRET_NAME) -> str:
        """``CREATE SECRET`` for this bucket: the credential chain finds the keys, none appear here."""
        options = [
            "TYPE s3",
            "PROVIDER credential_chain",
            f"SCOPE {quote_literal(f's3://{self.bucket}')}",
            f"URL_STYLE {quote_literal(self.url_style)}",
            f"USE_SSL {str(self.use_ssl).lower()}",
        ]
        if self.endpoint:
            options.append(f"ENDPOINT {quote_literal(self.endpoint)}")
        if self.region:
            options.append(f"REGION {quote_literal(self.region)}")
        return f"CREATE OR REPLACE SECRET {name} ({', '.join(options)})"
