#!/usr/bin/env python3
"""A SAML 2.0 identity provider on loopback, for leadmaps-saml's tests. Not for production.

It is pysaml2's `Server`: the SP's metadata is read from a file, a signing key and certificate are
made fresh at start-up (plus a second, untrusted pair for the "re-signed by another key" test),
and it serves on 127.0.0.1 at an ephemeral port:

  GET  /metadata       the IdP's metadata (entity id, SSO URL, signing certificate)
  GET  /sso/redirect   the HTTP-Redirect binding: parses the SP's AuthnRequest, "logs in" the test
                       user and answers with the HTTP-POST binding's auto-submitting form that a
                       browser would post to the SP's ACS URL
  POST /forge          a JSON spec in, `{"response": <base64 SAMLResponse>}` out: a response for the
                       test user made by the same pysaml2 code, with the knobs the attack tests need
                       (audience, recipient, InResponseTo, what is signed and by which key)

Usage: idp.py --sp-metadata FILE --workdir DIR
It prints `READY http://127.0.0.1:PORT` once serving, and exits when its standard input closes
(so it never outlives the test process that started it).
"""

import argparse
import base64
import datetime
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.authn_context import PASSWORD
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

TEST_USER = "alice@example.org"


def make_keypair(workdir, name):
    """A fresh RSA-2048 key and a self-signed certificate, as PEM files; returns their paths."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"leadmaps test {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(workdir, f"{name}.key")
    cert_path = os.path.join(workdir, f"{name}.crt")
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def make_server(base, sp_metadata, key_path, cert_path):
    config = IdPConfig()
    config.load(
        {
            "entityid": base + "/metadata",
            "service": {
                "idp": {
                    "name": "leadmaps test IdP",
                    "endpoints": {
                        "single_sign_on_service": [(base + "/sso/redirect", BINDING_HTTP_REDIRECT)],
                    },
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": 5},
                            "attribute_restrictions": None,
                            "name_form": NAME_FORMAT_URI,
                        }
                    },
                    "want_authn_requests_signed": False,
                    "sign_response": False,
                    "sign_assertion": True,
                }
            },
            "key_file": key_path,
            "cert_file": cert_path,
            "metadata": {"local": [sp_metadata]},
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
        }
    )
    return Server(config=config)


def authn_response(server, *, in_response_to, destination, audience, sign_response, sign_assertion,
                   name_id=TEST_USER, email=TEST_USER, lifetime_minutes=None):
    """A SAML Response for the test user, as XML text."""
    identity = {"mail": [email], "uid": ["alice"], "givenName": ["Alice"]}
    policy = server.config.getattr("policy", "idp")
    if lifetime_minutes is not None:
        policy.policy["default"]["lifetime"] = {"minutes": lifetime_minutes}
    response = server.create_authn_response(
        identity,
        in_response_to=in_response_to,
        destination=destination,
        sp_entity_id=audience,
        name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name_id),
        authn={"class_ref": PASSWORD, "authn_auth": server.config.entityid},
        sign_response=sign_response,
        sign_assertion=sign_assertion,
        sign_alg=SIG_RSA_SHA256,
        digest_alg=DIGEST_SHA256,
        session_not_on_or_after=None,
    )
    return str(response)


class Handler(BaseHTTPRequestHandler):
    idp = None  # the trusted IdP Server
    rogue = None  # same entity id, another key: what an attacker re-signing would be
    metadata = b""

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        try:
            if url.path == "/metadata":
                self.send(200, self.metadata, "application/samlmetadata+xml")
            elif url.path == "/sso/redirect":
                query = parse_qs(url.query)
                relay_state = query.get("RelayState", [""])[0]
                request = self.idp.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT)
                args = self.idp.response_args(request.message, [BINDING_HTTP_POST])
                xml = authn_response(
                    self.idp,
                    in_response_to=args["in_response_to"],
                    destination=args["destination"],
                    audience=args["sp_entity_id"],
                    sign_response=True,
                    sign_assertion=True,
                )
                http = self.idp.apply_binding(
                    BINDING_HTTP_POST, xml, args["destination"], relay_state, response=True
                )
                self.send(200, http["data"].encode(), "text/html; charset=utf-8")
            else:
                self.send(404, b"not found", "text/plain")
        except Exception as e:  # a test helper: say what broke
            self.send(500, repr(e).encode(), "text/plain")

    def do_POST(self):
        try:
            if urlparse(self.path).path != "/forge":
                self.send(404, b"not found", "text/plain")
                return
            spec = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server = self.rogue if spec.get("key") == "other" else self.idp
            xml = authn_response(
                server,
                in_response_to=spec.get("in_response_to"),
                destination=spec["destination"],
                audience=spec["audience"],
                sign_response=spec.get("sign_response", False),
                sign_assertion=spec.get("sign_assertion", True),
                name_id=spec.get("name_id", TEST_USER),
                email=spec.get("email", TEST_USER),
            )
            body = json.dumps({"response": base64.b64encode(xml.encode()).decode()}).encode()
            self.send(200, body, "application/json")
        except Exception as e:
            self.send(500, repr(e).encode(), "text/plain")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sp-metadata", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    key, cert = make_keypair(args.workdir, "idp")
    rogue_key, rogue_cert = make_keypair(args.workdir, "rogue")
    Handler.idp = make_server(base, args.sp_metadata, key, cert)
    Handler.rogue = make_server(base, args.sp_metadata, rogue_key, rogue_cert)
    Handler.metadata = create_metadata_string(None, config=Handler.idp.config, sign=False)

    def exit_when_stdin_closes():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"READY {base}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
