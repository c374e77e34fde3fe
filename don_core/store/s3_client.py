"""The boto3 S3 client, configured from the standard environment, and what its failures mean:
one line naming the object, the endpoint and the real cause. Used by the S3 store and by
whatever else talks to the same bucket (backups, the console)."""
from __future__ import annotations

import os
import re


def s3_client():
    """boto3 S3 client configured only from the standard environment (a Secret supplies it)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or \
        os.environ.get("S3_ENDPOINT")
    if endpoint and "://" not in endpoint:
        https = os.environ.get("S3_USE_HTTPS", "1") not in ("0", "false")
        endpoint = ("https://" if https else "http://") + endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Path-style addressing for S3-compatible servers (MinIO, Ceph, moto) behind an endpoint.
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)   # the standard variable, honoured
    config = Config(s3={"addressing_style": "path"} if endpoint else {},
                    retries={"max_attempts": attempts, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


def s3_error_types() -> tuple[type[BaseException], ...]:
    """Everything boto3 raises for a failed S3 call: service answers, connection-level faults
    (refused, reset, timed out, DNS, TLS, credentials) and the transfer manager's wrappers."""
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError
    return (ClientError, BotoCoreError, S3UploadFailedError, S3TransferFailedError)


def s3_failure(action: str, uri: str, exc: BaseException, client=None) -> str:
    """One line for a failed S3 call: what, where (object and endpoint) and the real cause."""
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
    return f"{action} {uri}{f' (endpoint {endpoint})' if endpoint else ''}: {s3_reason(exc)}"


def s3_status(exc: BaseException) -> int | None:
    """HTTP status of a service answer; None for a connection-level fault (no answer at all)."""
    response = getattr(exc, "response", None)
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") \
        if isinstance(response, dict) else None


def s3_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return (response.get("Error") or {}).get("Code", "") if isinstance(response, dict) else ""


def s3_reason(exc: BaseException) -> str:
    # Connection-level botocore errors carry `response=None` (or none at all): never index it.
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    if error:
        status = s3_status(exc)
        reason = f"{error.get('Code') or 'error'}: {error.get('Message') or ''}".strip(": ")
        return reason + (f" (HTTP {status})" if status else "")
    # botocore's text ends with the full request URL; the caller names the object and endpoint.
    reason = re.sub(r':?\s*"[a-z]+://[^"]*"\.?$', "", str(exc).splitlines()[0] if str(exc) else "")
    root = _root_cause(exc)
    if root and root not in reason:
        reason = f"{reason} ({root})" if reason else root
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _root_cause(exc: BaseException) -> str:
    """The innermost cause: the socket error's text (e.g. 'Connection refused') where there is one."""
    seen, inner = set(), exc
    while (inner.__cause__ or inner.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        inner = inner.__cause__ or inner.__context__
    if inner is exc:
        return ""
    if isinstance(inner, OSError) and inner.errno:
        return os.strerror(inner.errno)
    return str(inner).splitlines()[0] if str(inner) else type(inner).__name__
