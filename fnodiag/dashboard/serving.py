"""Serving the dashboard safely: are a server's settings open to other machines without authentication?

Pure decisions on the arguments a ``panel serve`` server is built from (an ``argparse.Namespace`` as
Panel parsed them, see :mod:`fnodiag.dashboard.server`) and the environment variables Bokeh and Panel
read for the same settings; no Panel import. The directory app's hooks (``app_hooks.py``) apply them,
so ``panel serve app`` and ``fnodiag serve`` refuse to start (exit status 2, one line).

*Remote access* is an ``address`` that is not a loopback address (``0.0.0.0``, ``::``, a LAN
address, a host name other than ``localhost``), or an ``allow_websocket_origin`` (or
``BOKEH_ALLOW_WS_ORIGIN``) host other than localhost / a loopback address (``*`` included).
*Authentication* is Panel's ``basic_auth`` / ``PANEL_BASIC_AUTH`` or ``oauth_provider`` /
``PANEL_OAUTH_PROVIDER``. ``FNODIAG_ALLOW_REMOTE=1`` waives the refusal for a server whose
authentication is done elsewhere (e.g. a reverse proxy); sessions from other machines then still
may not start or stop runs.

No ``address`` at all (Bokeh's default) binds every interface, but Bokeh then only accepts
``localhost`` websocket origins and the page refuses sessions from other machines without a login
(:func:`fnodiag.dashboard.app.local_request`); it is not refused here, so that ``panel serve app``
keeps working as documented. ``fnodiag serve`` binds ``127.0.0.1`` unless told otherwise.

:data:`PANEL_SERVE_OPTIONS` are the options of ``panel serve`` that ``fnodiag serve`` passes on,
spelled as Panel spells them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

__all__ = [
    "PANEL_SERVE_OPTIONS",
    "REFUSAL_HINT",
    "add_panel_options",
    "is_loopback_host",
    "panel_option_argv",
    "refusal",
    "remote_reasons",
    "serve_options",
]

REFUSAL_HINT = (
    "add Panel's authentication: --basic-auth PASSWORD_OR_USERS_JSON --cookie-secret SECRET, or "
    "--oauth-provider NAME (with its --oauth-key / --oauth-secret), or serve this machine only with "
    "--address 127.0.0.1"
)

# (flag, kind, help): kind "value" takes one value, "append" may be repeated, "list" takes several
# values, "switch" takes none. Names and kinds are Panel 1.9's (tests/test_serving.py checks them).
PANEL_SERVE_OPTIONS = (
    (
        "--allow-websocket-origin",
        "append",
        "a host[:port] browsers reach the server as (repeatable); needed to serve other machines",
    ),
    ("--basic-auth", "value", "Panel's basic authentication: one password, or a JSON file of users and passwords"),
    ("--cookie-secret", "value", "secret that signs login cookies (needed with --basic-auth and --oauth-provider)"),
    ("--cookie-path", "value", "the path login cookies are valid for"),
    ("--oauth-provider", "value", "Panel's OAuth provider: github, google, azure, gitlab, okta, auth0, generic, ..."),
    ("--oauth-key", "value", "the OAuth client id"),
    ("--oauth-secret", "value", "the OAuth client secret"),
    ("--oauth-redirect-uri", "value", "the OAuth redirect URI (default: this server's)"),
    ("--oauth-extra-params", "value", "extra OAuth parameters, as a Python dict literal"),
    ("--oauth-jwt-user", "value", "the JWT id_token key that names the user"),
    ("--oauth-encryption-key", "value", "key that encrypts the OAuth user information and tokens"),
    ("--oauth-error-template", "value", "Jinja2 template shown on an authentication error"),
    ("--oauth-expiry-days", "value", "days an OAuth login lasts"),
    ("--oauth-refresh-tokens", "switch", "refresh OAuth access tokens when they expire"),
    ("--oauth-guest-endpoints", "list", "endpoints served without a login"),
    ("--oauth-optional", "switch", "let visitors in as guests without a login"),
    ("--login-endpoint", "value", "the login page's path (default: /login)"),
    ("--logout-endpoint", "value", "the logout page's path (default: /logout)"),
    ("--auth-template", "value", "Jinja2 template shown on an authentication error"),
    ("--logout-template", "value", "Jinja2 template of the logout page"),
    ("--basic-login-template", "value", "Jinja2 template of the basic-auth login page"),
)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_panel_options(parser) -> None:
    """Add :data:`PANEL_SERVE_OPTIONS` to an ``argparse`` parser (destinations as Panel names them)."""
    for flag, kind, help_text in PANEL_SERVE_OPTIONS:
        if kind == "switch":
            parser.add_argument(flag, action="store_true", help=help_text)
        elif kind == "append":
            parser.add_argument(flag, action="append", metavar="HOST[:PORT]", help=help_text)
        elif kind == "list":
            parser.add_argument(flag, nargs="*", metavar="ENDPOINT", help=help_text)
        else:
            parser.add_argument(flag, metavar=_dest(flag).upper(), help=help_text)


def panel_option_argv(args) -> list[str]:
    """The ``panel serve`` arguments for the :data:`PANEL_SERVE_OPTIONS` set in ``args`` (a parsed Namespace)."""
    out: list[str] = []
    for flag, kind, _ in PANEL_SERVE_OPTIONS:
        value = getattr(args, _dest(flag), None)
        if kind == "switch":
            out += [flag] if value else []
        elif kind == "append":
            for v in value or []:
                out += [flag, v]
        elif kind == "list":
            out += [flag, *value] if value is not None else []
        elif value is not None:
            out += [flag, str(value)]
    return out


def serve_options(args, env: Mapping[str, str] | None = None) -> dict:
    """The serving settings of the arguments a server is built from and of ``env``.

    Parameters
    ----------
    args : argparse.Namespace (or any object) with Panel's attribute names ``address``,
        ``allow_websocket_origin``, ``basic_auth``, ``oauth_provider``; a missing one counts as not set.
    env : environment variables (default: none)

    Returns
    -------
    dict with ``address`` (str or None), ``origins`` (list of str), ``basic_auth`` (bool),
    ``oauth_provider`` (str or None).
    """
    env = env or {}
    origins = list(getattr(args, "allow_websocket_origin", None) or [])
    origins += [o.strip() for o in env.get("BOKEH_ALLOW_WS_ORIGIN", "").split(",") if o.strip()]
    return {
        "address": getattr(args, "address", None),
        "origins": origins,
        "basic_auth": bool(getattr(args, "basic_auth", None) or env.get("PANEL_BASIC_AUTH")),
        "oauth_provider": getattr(args, "oauth_provider", None) or env.get("PANEL_OAUTH_PROVIDER") or None,
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


def refusal(args, env: Mapping[str, str] | None = None) -> str | None:
    """The one-line refusal for server arguments open to other machines without authentication, else None.

    Parameters
    ----------
    args : the parsed ``panel serve`` arguments (see :func:`serve_options`)
    env : environment variables (default: none)
    """
    env = env or {}
    options = serve_options(args, env)
    reasons = remote_reasons(options)
    if not reasons or options["basic_auth"] or options["oauth_provider"] or env.get("FNODIAG_ALLOW_REMOTE") == "1":
        return None
    return (
        f"fnodiag dashboard: refusing to serve other machines ({', '.join(reasons)}) without authentication; "
        f"{REFUSAL_HINT}"
    )
