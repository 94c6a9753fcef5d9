"""Join tokens and kubeconfigs.

A k0s join token is base64 (standard alphabet, padded) of a gzip of a kubeconfig whose user
carries a bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`, and whose cluster `server` is the join URL:
port 6443 for workers, 9443 for controllers.

The double's certificates are not X.509: each is a PEM block around JSON that names the subject
and the cluster CA it belongs to, which is all the double checks.
"""

import base64
import binascii
import gzip
import json
import re
import secrets
import string
import time
from urllib.parse import urlparse

import yaml

from .errors import K0sError
from .host import now

TOKEN_PATTERN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
ALPHABET = string.ascii_lowercase + string.digits
USERS = {"worker": "kubelet-bootstrap", "controller": "controller-bootstrap"}


def random_text(length):
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def pem(kind, payload):
    body = base64.b64encode(json.dumps(payload, sort_keys=True).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, "\n".join(lines), kind)


def read_pem(text):
    """The JSON payload of a double's PEM block, or None for anything else."""
    match = re.search(r"-----BEGIN [A-Z ]+-----\s*(.*?)\s*-----END", text or "", re.S)
    if not match:
        return None
    try:
        return json.loads(base64.b64decode("".join(match.group(1).split())))
    except (ValueError, binascii.Error):
        return None


def new_ca():
    ca_id = random_text(16)
    return ca_id, pem("CERTIFICATE", {"subject": "CN=kubernetes-ca", "ca": ca_id, "isCA": True})


def client_certificate(ca_id, subject):
    return pem("CERTIFICATE", {"subject": subject, "ca": ca_id}), pem("RSA PRIVATE KEY", {"key": random_text(32)})


def b64(text):
    return base64.b64encode(text.encode()).decode()


def kubeconfig(server, ca_pem, user, token=None, certificate=None, key=None, cluster="k0s"):
    credentials = {}
    if token:
        credentials["token"] = token
    if certificate:
        credentials["client-certificate-data"] = b64(certificate)
        credentials["client-key-data"] = b64(key)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
        "users": [{"name": user, "user": credentials}],
    }
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=False)


def parse_duration(text):
    """Parses a Go duration such as 10m0s, 1h, 30s, 1.5h or 0s into seconds."""
    if text in ("0", ""):
        return 0.0
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    position = 0
    for match in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text):
        if match.start() != position:
            break
        total += float(match.group(1)) * units[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise K0sError('time: invalid duration "%s"' % text)
    return total


def create(cluster, role, expiry_seconds, api_address, api_port, ca_pem):
    """Creates a token in the cluster's token table and returns the encoded join token."""
    token_id = random_text(6)
    secret = random_text(16)
    tokens = cluster.tokens()
    tokens[token_id] = {
        "secret": secret,
        "role": role,
        "created": now(),
        "expires": now() + expiry_seconds if expiry_seconds else None,
    }
    cluster.save_tokens(tokens)
    server = "https://%s:%d" % (api_address, api_port)
    config = kubeconfig(server, ca_pem, USERS[role], token="%s.%s" % (token_id, secret))
    compressed = gzip.compress(config.encode(), compresslevel=9, mtime=0)
    return token_id, base64.b64encode(compressed).decode()


class DecodedToken:
    def __init__(self, server, token_id, secret, user, ca_pem):
        self.server = server
        self.token_id = token_id
        self.secret = secret
        self.user = user
        self.ca_pem = ca_pem

    @property
    def address(self):
        return urlparse(self.server).hostname

    @property
    def port(self):
        return urlparse(self.server).port


def decode(text):
    """Decodes a join token; raises K0sError with the wording of k0s's decoder."""
    text = text.strip()
    try:
        compressed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise K0sError("failed to decode join token: illegal base64 data: %s" % error)
    try:
        config = yaml.safe_load(gzip.decompress(compressed))
    except (OSError, EOFError, yaml.YAMLError) as error:
        raise K0sError("failed to decode join token: %s" % error)
    try:
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]
        token = user["user"]["token"]
        ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
    except (KeyError, IndexError, TypeError, ValueError):
        raise K0sError("failed to decode join token: the kubeconfig in the token lacks a cluster, CA or user token")
    match = TOKEN_PATTERN.match(token)
    if not match:
        raise K0sError("failed to decode join token: %r is not a bootstrap token" % token)
    return DecodedToken(cluster["server"], match.group(1), match.group(2), user.get("name"), ca_pem)


def check(cluster, decoded, role):
    """Checks a decoded token against the cluster; returns an error message or None."""
    info = cluster.info()
    if info is None:
        return "the cluster the token belongs to does not exist"
    ca = read_pem(decoded.ca_pem)
    if not ca or ca.get("ca") != info.get("caId"):
        return "x509: certificate signed by unknown authority"
    entry = cluster.tokens().get(decoded.token_id)
    if entry is None or entry.get("secret") != decoded.secret:
        return "Unauthorized: bootstrap token %s is invalid or was invalidated" % decoded.token_id
    if entry.get("expires") is not None and entry["expires"] < now():
        return "Unauthorized: bootstrap token %s expired at %s" % (
            decoded.token_id,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["expires"])),
        )
    if entry.get("role") != role:
        return "the join token is a %s token, but this node joins as %s" % (entry.get("role"), role)
    return None


def is_bootstrap(token):
    return bool(TOKEN_PATTERN.match(token or ""))
