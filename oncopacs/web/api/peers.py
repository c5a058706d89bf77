"""``/api/peers``: the configured DICOM peers, and a C-ECHO to one of them."""

from __future__ import annotations

from flask import abort, current_app, jsonify

from oncopacs.auth.roles import Permission
from oncopacs.dimse.echo import echo
from oncopacs.errors import RemoteNodeError
from oncopacs.settings import Settings
from oncopacs.tls import TlsFiles
from oncopacs.web.access import requires
from oncopacs.web.api import bp


def _settings() -> Settings:
    return current_app.extensions["oncopacs.settings"]


@bp.get("/peers")
@requires(Permission.PEERS_MANAGE)
def list_peers():
    """The remote AEs OncoPACS may send to (ONCOPACS_REMOTE_AES) and its own AE title."""
    settings = _settings()
    peers = [{"ae_title": r.ae_title, "host": r.host, "port": r.port, "tls": r.tls} for r in settings.remote_aes]
    return jsonify(ae_title=settings.ae_title, peers=peers)


@bp.post("/peers/<aet>/echo")
@requires(Permission.PEERS_MANAGE)
def echo_peer(aet: str):
    """Send a C-ECHO to a configured peer; 502 when it cannot be reached or refuses the association."""
    settings = _settings()
    remote = settings.remote_ae(aet)
    if remote is None:
        abort(404, description=f"no peer with AE title {aet[:16]!r} is configured")
    try:
        context = TlsFiles.from_settings(settings).client_context() if remote.tls else None
        result = echo(settings.ae_title, remote, ssl_context=context)
    except RemoteNodeError as exc:
        abort(502, description=str(exc))
    return jsonify(result.to_dict())
