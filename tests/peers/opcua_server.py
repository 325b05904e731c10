#!/usr/bin/env python3
"""An OPC UA server for the end-to-end tests: a real PyPI `asyncua` (1.x/2.x)
server whose variables' values come from a JSON file.

    python3 opcua_server.py --port 14840 --values values.json
    python3 opcua_server.py --port 14841 --values values.json \
        --secure --cert server.der --key server.pem --user op:secret
    python3 opcua_server.py --port 14842 --values values.json \
        --secure --cert server.der --key server.pem --user-cert operator.der

The file maps each variable (namespace 2, string NodeId "ns=2;s=<name>") to
its OPC UA type and value:

    {"Feeder1.Energy": ["UInt16", 65000], "Feeder1.Power": ["Double", 12.5]}

It is re-read every 100 ms when it changed (the test writes a temporary file
and renames it over), and each changed value is written to its variable, so
subscribers are notified. A variable that leaves the file keeps its value.

Without --secure the server offers security policy None with anonymous
users only. With --secure it offers only Basic256Sha256 (Sign and
SignAndEncrypt) and only the logins it is given: a user name and password
(--user), an X.509 user certificate (--user-cert, DER; asyncua checks the
token's signature over its own certificate and the session nonce, this
server that the certificate is that one), or both. Its
certificate and key are made on first start at --cert/--key (application URI
urn:zonesync:test:opcua-server, host 127.0.0.1) and reused on restarts, so a
client that trusted it once still does. Prints "listening <port>" once the
server accepts connections.

    python3 opcua_server.py --make-client-cert URI client.der client.pem

writes a client certificate for application URI URI and its key, and exits.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole

APP_URI = "urn:zonesync:test:opcua-server"
TYPES = {
    "UInt16": ua.VariantType.UInt16,
    "UInt32": ua.VariantType.UInt32,
    "UInt64": ua.VariantType.UInt64,
    "Int32": ua.VariantType.Int32,
    "Float": ua.VariantType.Float,
    "Double": ua.VariantType.Double,
}


class OneUser:
    """Accepts one user name and password, or one user certificate (DER), nobody else."""

    def __init__(self, user, password, certificate):
        self.user, self.password, self.certificate = user, password, certificate

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if self.user is not None and username == self.user and password == self.password:
            return User(role=UserRole.User, name=username)
        if self.certificate is not None and certificate == self.certificate:
            return User(role=UserRole.User, name="certificate")
        return None


def read_values(path):
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        return {name: (TYPES[t], v) for name, (t, v) in raw.items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"ignoring unreadable values file: {e}", file=sys.stderr, flush=True)
        return None


async def make_client_cert(uri, cert, key):
    """Writes a client certificate for application URI `uri` and its key."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    await setup_self_signed_certificate(
        Path(key),
        Path(cert),
        uri,
        "127.0.0.1",
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"commonName": "zonesync test agent"},
    )


async def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--make-client-cert":
        await make_client_cert(*sys.argv[2:])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--values", required=True)
    p.add_argument("--secure", action="store_true")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user", help="name:password (with --secure)")
    p.add_argument("--user-cert", help="DER file of the one user certificate accepted (with --secure)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    user_manager = None
    if a.user or a.user_cert:
        name, password = a.user.partition(":")[::2] if a.user else (None, None)
        certificate = Path(a.user_cert).read_bytes() if a.user_cert else None
        user_manager = OneUser(name, password, certificate)
    server = Server(user_manager=user_manager)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{a.port}/zonesync/")
    server.set_server_name("zonesync test OPC UA server")
    await server.set_application_uri(APP_URI)
    if a.secure:
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        await setup_self_signed_certificate(
            Path(a.key),
            Path(a.cert),
            APP_URI,
            "127.0.0.1",
            [ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": "zonesync test OPC UA server"},
        )
        await server.load_certificate(a.cert)
        await server.load_private_key(a.key)
        server.set_security_policy(
            [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
            ]
        )
        tokens = []
        if a.user:
            tokens.append(ua.UserNameIdentityToken)
        if a.user_cert:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])

    objects = server.nodes.objects
    folder = await objects.add_object(2, "Plant")
    variables = {}
    stamp = None

    async def refresh():
        nonlocal stamp
        try:
            st = os.stat(a.values)
        except FileNotFoundError:
            return
        now = (st.st_mtime_ns, st.st_size, st.st_ino)
        if now == stamp:
            return
        values = read_values(a.values)
        if values is None:
            return
        stamp = now
        for name, (vtype, value) in values.items():
            variant = ua.Variant(value, vtype)
            node = variables.get(name)
            if node is None:
                node = await folder.add_variable(ua.NodeId(name, 2), name, variant)
                variables[name] = node
            else:
                await node.write_value(variant)

    await refresh()
    async with server:
        print(f"listening {a.port}", flush=True)
        while True:
            await asyncio.sleep(0.1)
            await refresh()


if __name__ == "__main__":
    asyncio.run(main())
