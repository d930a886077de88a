"""Hub weights that are not cached yet: fail fast, offline or unreachable, saying how to supply them as a file.

Without a network, or with VISTRAIN_OFFLINE=1, weights that are not cached fail in seconds (not after a minute
of retries), with the URL to fetch elsewhere and the `@FILE` name to use instead.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from vistrain.backbones.registry import BackboneUnavailable

OFFLINE_VARIABLE = "VISTRAIN_OFFLINE"
CONNECT_TIMEOUT_S = 3.0


def torch_hub_cached(url: str) -> Path | None:
    """Where torch.hub keeps the download of `url` (torchvision's and some timm weights), if it is there."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(url).path).name
    return path if path.is_file() else None


def ensure_downloadable(name: str, url: str) -> None:
    """Fail fast unless `url` can be downloaded: not with VISTRAIN_OFFLINE set, nor when its host (or the proxy)
    does not accept a connection within a few seconds. The message says how to supply the weights as a file."""
    if os.environ.get(OFFLINE_VARIABLE, "") not in ("", "0"):
        reason = f"{OFFLINE_VARIABLE} is set"
    elif not _reachable(url):
        reason = f"{urlsplit(url).hostname} cannot be reached"
    else:
        return
    raise BackboneUnavailable(unavailable_message(name, url, reason))


def unavailable_message(name: str, url: str, reason: str) -> str:
    file_name = Path(urlsplit(url).path).name
    return (f"{name}: its weights are not downloaded yet and {reason}. Download {url} where there is internet, "
            f"then use the backbone {name}@/path/to/{file_name}")


def _reachable(url: str) -> bool:
    target = urlsplit(url)
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
        target = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((target.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError:
        return False
    return True
