"""Keys: every key file secgan writes or reads, and the recipes built on them.

Callers get whole recipes (write a key pair, load it safely, sign a JSON object, verify a signed
manifest); raw primitives stay inside the modules. Import the module that owns a name; this
package re-exports nothing.

- ``files``: the one way to read and write key files. Secrets are written 0600 from the first
  byte; a secret file that is a symlink, not a regular file, or accessible by group or others is
  refused on load (ConfigError naming the file, never quoting the key). Folders of secrets 0700.
- ``curve``: CURVE key pairs for ZeroMQ as zcert certificate files.
- ``signing``: Ed25519 signing and verify keys, canonical JSON, signed JSON documents; every
  signature failure is the same opaque ``CryptoError("signature verification failed")``.
- ``agreement``: X25519 agreement keys for secure-sum (the protocol math is ``secgan.secagg``).
- ``manifest``: the federation manifest, signed by the coordinator's Ed25519 key.
"""
