#!/usr/bin/env python3
"""Independent implementation of the leadmaps v1 envelope, used to write golden vectors.

Writes leadmaps_envelope_v1.json. It shares no code with the Rust implementation: HMAC-SHA-512
from Python's standard library, AES-256-GCM from the `cryptography` package.

Format (DESIGN.md): 0x01 | key_ref u32 BE | salt(24) | commitment(32) | chunks
C2SP chunked encryption: okm = HKDF-Expand-SHA-512(key, LABEL || 0x00 || salt || context, 76).
Context = "leadmaps/envelope/v1" || version || key_ref BE || for each of (workspace uuid bytes,
table, column, row_id, purpose): u32 BE length || bytes.
"""
import hashlib
import hmac
import json
import uuid

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LABEL = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM"
CHUNK = 16384


def expand(prk, info, length):
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha512).digest()
        out += t
        i += 1
    return out[:length]


def context(version, key_ref, ws, table, column, row, purpose):
    out = b"leadmaps/envelope/v1" + bytes([version]) + key_ref.to_bytes(4, "big")
    for field in (uuid.UUID(ws).bytes, table.encode(), column.encode(), row.encode(), purpose.encode()):
        out += len(field).to_bytes(4, "big") + field
    return out


def seal(key, key_ref, ctx_fields, salt, plaintext):
    ctx = context(1, key_ref, *ctx_fields)
    okm = expand(key, LABEL + b"\x00" + salt + ctx, 76)
    aead, nonce, commitment = AESGCM(okm[:32]), okm[32:44], okm[44:76]
    body = salt + commitment
    chunks = [plaintext[i:i + CHUNK] for i in range(0, len(plaintext) - len(plaintext) % CHUNK, CHUNK)]
    chunks.append(plaintext[len(plaintext) - len(plaintext) % CHUNK:])
    for i, chunk in enumerate(chunks):
        n = (int.from_bytes(nonce, "big") ^ i).to_bytes(12, "big")
        body += aead.encrypt(n, chunk, b"")
    return bytes([1]) + key_ref.to_bytes(4, "big") + body


cases = []
key = bytes(range(32))
ws = "6f1c2a3b-4d5e-4f60-8172-93a4b5c6d7e8"
for name, key_ref, fields, salt, plaintext in [
    ("empty secret", 1, (ws, "secrets", "value", "row-1", "other"), bytes([0x11] * 24), b""),
    ("api key", 7, (ws, "api_keys", "secret", "key-42", "api_key"), bytes(range(100, 124)), b"lm_abc_0123456789abcdef"),
    ("totp seed 64 bytes", 2, (ws, "totp_factors", "seed", "f-9", "totp_seed"), bytes(range(24)), bytes(range(64))),
    ("tenant key under kek 3", 3, (ws, "tenant_keys", "key", "1", "tenant_key"), bytes([0xA5] * 24), bytes(range(200, 232))),
    ("exactly one chunk", 1, (ws, "secrets", "value", "big", "other"), bytes([7] * 24), bytes([0x42]) * CHUNK),
    ("unicode row id", 4294967295, (ws, "secrets", "value", "r\u00f6w-\u00fcnicode", "license_key"), bytes([3] * 24), "caf\u00e9".encode()),
]:
    cases.append({
        "name": name, "key": key.hex(), "key_ref": key_ref, "workspace": fields[0], "table": fields[1],
        "column": fields[2], "row_id": fields[3], "purpose": fields[4], "salt": salt.hex(),
        "plaintext": plaintext.hex(), "blob": seal(key, key_ref, fields, salt, plaintext).hex(),
    })

with open("leadmaps_envelope_v1.json", "w") as f:
    json.dump({"generator": "gen_envelope_v1.py", "cases": cases}, f, indent=1)
    f.write("\n")
