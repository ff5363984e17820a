"""drift_pyro5: remote microscopes over Pyro5 (built-in plugin).

``drift serve RECIPE`` hosts a microscope (the virtual one by default, or any source and actuator a recipe
builds); the client components ``pyro5`` (frame source and actuator) take its ``uri``. Pyro5 is imported only
when serving or connecting.
"""
from __future__ import annotations

from drift_framework import REQUIRED, Component, Param, hookimpl

__version__ = "0.1.0"

_CLIENT = {
    "uri": Param("str", REQUIRED, "e.g. PYRO:drift.microscope@127.0.0.1:9091"),
    "timeout_s": Param("float", 10.0, "Timeout of every call", gt=0),
    "retries": Param("int", 5, "Reconnect attempts before giving up", ge=0, le=100),
    "backoff_s": Param("float", 0.2, "First wait between attempts (doubles, at most 5 s)", gt=0),
    "tls_ca": Param("str", None, "CA certificate (PEM) the server's certificate must be signed by: TLS", nullable=True),
    "tls_cert": Param("str", None, "This client's certificate (PEM), for servers that require one", nullable=True),
    "tls_key": Param("str", None, "This client's private key (PEM)", nullable=True),
}


def _source(params, context):
    from .client import RemoteSource

    return RemoteSource(params)


def _actuator(params, context):
    from .client import RemoteActuator

    return RemoteActuator(params, context)


@hookimpl
def drift_frame_sources():
    return [Component("pyro5", _source, _CLIENT, "Frames from a microscope served with `drift serve` (Pyro5)",
                      example={"uri": "PYRO:drift.microscope@127.0.0.1:9091"})]


@hookimpl
def drift_actuators():
    return [Component("pyro5", _actuator, {**_CLIENT, "actuator": Param("str", "stage", "Actuator on the server")},
                      "An actuator of a microscope served with `drift serve` (Pyro5)",
                      example={"uri": "PYRO:drift.microscope@127.0.0.1:9091", "actuator": "stage"})]


@hookimpl
def drift_commands(subparsers):
    p = subparsers.add_parser("serve", help="serve a microscope (source + actuator of a recipe) over Pyro5")
    p.add_argument("recipe")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9091)
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--nameserver", action="store_true", help="also register with a Pyro5 name server")
    p.add_argument("--tls-cert", help="server certificate (PEM): serve over TLS")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--client-ca", help="CA certificate (PEM): only clients with a certificate it signed connect "
                                       "(mutual TLS; required beyond loopback)")
    p.add_argument("--no-client-auth", action="store_true",
                   help="beyond loopback, accept clients without certificates (anyone who reaches the port)")
    p.add_argument("--journal", help="append every applied command id to this file and reload it at start: "
                                     "commands stay at-most-once across server restarts")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from drift_framework.recipe import load_recipe

    from .server import serve

    recipe = load_recipe(args.recipe, require_source=False)

    def ready(uri):
        print(f"serving {uri}", flush=True)

    serve(recipe, host=args.host, port=args.port, allow_remote=args.allow_remote, nameserver=args.nameserver,
          ssl_cert=args.tls_cert, ssl_key=args.tls_key, client_ca=args.client_ca, no_client_auth=args.no_client_auth,
          journal=args.journal, ready=ready)
    return 0
