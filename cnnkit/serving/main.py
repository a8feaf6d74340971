"""`cnnkit serve`: load the models, then run uvicorn."""

from __future__ import annotations

from cnnkit.config import ServeConfig
from cnnkit.errors import CnnkitError
from cnnkit.serving.hooks import ClassifyHook
from cnnkit.serving.runtime import ModelRepository


def build_repository(config: ServeConfig) -> ModelRepository:
    """Load every configured model version and label, failing before the server starts if any is wrong."""
    if not config.paths and not config.named:
        raise CnnkitError("nothing to serve: give run or export directories, or --model NAME=PATH")
    repository = ModelRepository(threads=config.threads, lanes=config.lanes, precision=config.precision)
    for path in config.paths:
        repository.add_path(path)
    for name, path in config.named:
        repository.add_path(path, name=name)
    for name, label, version in config.labels:
        repository.add_label(name, label, version)
    return repository


def check_port(host: str, port: int) -> None:
    """A clear error, before any work, where the address is taken (a second `cnnkit serve`, say). The probe binds
    as uvicorn does (SO_REUSEADDR), so a port whose old connections linger in TIME_WAIT is still free."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CnnkitError(f"cannot serve on {host}:{port}: {exc.strerror or exc} (another server there? stop it, "
                              "or choose another --port)") from None


def serve(config: ServeConfig, *, hooks: tuple[ClassifyHook, ...] = ()) -> None:
    """Serve until interrupted; `hooks`: applications' additions to :classify answers."""
    import uvicorn
    from PIL import Image

    from cnnkit.data.images import MAX_IMAGE_PIXELS
    from cnnkit.serving.app import create_app
    from cnnkit.serving.http import HttpLimits, limited_protocol, max_connections
    from cnnkit.serving.memory import map_large_blocks

    check_port(config.host, config.port)  # before loading anything, and before saying "Serving ... at"
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow's decompression-bomb guard stays on
    map_large_blocks()
    repository = build_repository(config)
    app = create_app(repository, config, hooks=hooks)
    for name, model in repository.models.items():
        print(f"Serving {name} versions {sorted(model.versions)} at http://{config.host}:{config.port}/v1/models/{name}",
              flush=True)
    limits = HttpLimits(max_connections=max_connections(config.max_connections),
                        max_head_bytes=int(config.max_header_kb * 1024), header_timeout_s=config.header_timeout,
                        body_timeout_s=config.body_timeout)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                http=limited_protocol(limits), timeout_keep_alive=config.keep_alive)
