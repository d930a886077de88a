"""Backbones named after a timm or torchvision model, with downloaded weights or weights from a file.

- `timm:ARCH[.TAG]`: a timm model with its pretrained weights from the Hugging Face Hub (kept in its cache).
- `torchvision:ARCH[.WEIGHTS]`: a torchvision classification model with its weights (default: `DEFAULT`).
- either one with `@FILE`: the same architecture and preprocessing, weights from FILE (.safetensors or a torch
  state dict) instead of a download.
Preprocessing always follows the named weights' pretrained config. Without a network, or with
VISTRAIN_OFFLINE=1, weights that are not cached fail in seconds with a message saying how to supply the file.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from vistrain.backbones.registry import NAMING_HELP, Backbone, BackboneUnavailable

OFFLINE_VARIABLE = "VISTRAIN_OFFLINE"
CONNECT_TIMEOUT_S = 3.0


def hub_backbone(name: str) -> Backbone:
    """The backbone for `timm:...` or `torchvision:...`, with an absolute path after any `@`."""
    source, _, spec = name.partition(":")
    arch, at, file = spec.partition("@")
    weights_file = Path(file).expanduser().resolve() if at else None
    if weights_file is not None and not weights_file.is_file():
        raise BackboneUnavailable(f"{name}: no weights file {weights_file}")
    canonical = f"{source}:{arch}" + (f"@{weights_file}" if weights_file else "")
    if source == "timm":
        from vistrain.backbones.timm_hub import timm_backbone

        return timm_backbone(canonical, arch, weights_file)
    if source == "torchvision":
        from vistrain.backbones.torchvision_hub import torchvision_backbone

        return torchvision_backbone(canonical, arch, weights_file)
    raise BackboneUnavailable(f"unknown backbone {name!r}. {NAMING_HELP}")


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
