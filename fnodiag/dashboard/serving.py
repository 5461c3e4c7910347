"""Serving the dashboard safely: is a ``panel serve`` command line open to other machines without authentication?

Pure parsing of the ``panel serve`` arguments (and the environment variables Bokeh and Panel read
for the same settings); no Panel import. Used by ``app/app_hooks.py``, so ``panel serve app`` itself refuses
to start (exit status 2, one line).

*Remote access* is an ``--address`` that is not a loopback address (``0.0.0.0``, ``::``, a LAN
address, a host name other than ``localhost``), or an ``--allow-websocket-origin`` (or
``BOKEH_ALLOW_WS_ORIGIN``) host other than localhost / a loopback address (``*`` included).
*Authentication* is Panel's ``--basic-auth`` / ``PANEL_BASIC_AUTH`` or ``--oauth-provider`` /
``PANEL_OAUTH_PROVIDER``. ``FNODIAG_ALLOW_REMOTE=1`` waives the refusal for a server whose
authentication is done elsewhere (e.g. a reverse proxy); sessions from other machines then still
may not start or stop runs.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Mapping, Sequence

__all__ = ["serve_options", "remote_reasons", "refusal", "is_loopback_host", "REFUSAL_HINT"]

REFUSAL_HINT = (
    "add Panel's authentication: --basic-auth PASSWORD_OR_USERS_JSON --cookie-secret SECRET, or "
    "--oauth-provider NAME (with its --oauth-key / --oauth-secret), or serve this machine only with "
    "--address 127.0.0.1"
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--address")
    p.add_argument("--allow-websocket-origin", action="append", default=[])
    p.add_argument("--basic-auth")
    p.add_argument("--oauth-provider")
    return p


def serve_options(argv: Sequence[str], env: Mapping[str, str] | None = None) -> dict:
    """The serving settings of a ``panel serve`` command line (the part before ``--args``) and ``env``.

    Returns
    -------
    dict with ``address`` (str or None), ``origins`` (list of str), ``basic_auth`` (bool),
    ``oauth_provider`` (str or None).
    """
    env = env or {}
    argv = list(argv)
    if "--args" in argv:
        argv = argv[: argv.index("--args")]
    args, _ = _parser().parse_known_args(argv)
    origins = list(args.allow_websocket_origin)
    origins += [o.strip() for o in env.get("BOKEH_ALLOW_WS_ORIGIN", "").split(",") if o.strip()]
    return {
        "address": args.address,
        "origins": origins,
        "basic_auth": bool(args.basic_auth or env.get("PANEL_BASIC_AUTH")),
        "oauth_provider": args.oauth_provider or env.get("PANEL_OAUTH_PROVIDER") or None,
    }


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.x``, ``::1``, ``[::1]``); a ``:port`` suffix is ignored."""
    host = host.strip()
    if host.startswith("["):  # [::1]:5006
        host = host[1 : host.index("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:  # name:port or v4:port (a bare IPv6 address has several colons)
        host = host.split(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def remote_reasons(options: Mapping) -> list[str]:
    """What in ``options`` (:func:`serve_options`) opens the server to other machines (empty: this machine only)."""
    reasons = []
    address = options.get("address")
    if address is not None and not is_loopback_host(address):
        reasons.append(f"--address {address or repr(address)}")
    reasons += [f"--allow-websocket-origin {o}" for o in options.get("origins", []) if not is_loopback_host(o)]
    return reasons


def refusal(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    """The one-line refusal for a command line open to other machines without authentication, else None."""
    env = env or {}
    options = serve_options(argv, env)
    reasons = remote_reasons(options)
    if not reasons or options["basic_auth"] or options["oauth_provider"] or env.get("FNODIAG_ALLOW_REMOTE") == "1":
        return None
    return (
        f"fnodiag dashboard: refusing to serve other machines ({', '.join(reasons)}) without authentication; "
        f"{REFUSAL_HINT}"
    )
