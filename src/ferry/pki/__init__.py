"""The cluster PKI: one CA, and certificates for hosts, the controller and clients.

- `ferry.pki.ca`: init_ca, issue, verify, qemu_creds_dir, distinguished_name (the DN string that
  QEMU's tls-authz matches: "O=Ferry,OU=host,CN=host1", encoding order), dn_glob; PkiError.
- `ferry.pki.tls`: ssl.SSLContext for mutual TLS (CA-wide server, pinned server, client).
- `ferry.pki.describe`: a certificate's contents for `ferry pki show`.
- `ferry.pki.names`, `ferry.pki.build`, `ferry.pki.store`: validation, the X.509 profile, files.

All of it is synchronous CPU and file work: asyncio code calls it through asyncio.to_thread.
"""
