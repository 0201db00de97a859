#!/usr/bin/env bash
# Test credentials for the TLS suite, made fresh by each run (never checked in):
#   make-creds.sh x509 DIR CA-NAME [expired]   a CA and server/client certificates for
#                                               localhost and 127.0.0.1 (QEMU's layout);
#                                               "expired": the client's expired in 2020
#   make-creds.sh psk FILE IDENTITY             a key as psktool writes it
set -euo pipefail
kind=$1 out=$2
if [ "$kind" = psk ]; then
    psktool -u "$3" -p "$out" >/dev/null
    exit 0
fi
mkdir -p "$out"
cd "$out"
certtool --generate-privkey --key-type=ecdsa --outfile ca-key.pem 2>/dev/null
printf 'cn = "%s"\nca\ncert_signing_key\nexpiration_days = 2\n' "$3" >ca.info
certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info \
    --outfile ca-cert.pem 2>/dev/null
for role in server client; do
    certtool --generate-privkey --key-type=ecdsa --outfile "$role-key.pem" 2>/dev/null
    {
        printf 'cn = "tern-%s"\ndns_name = "localhost"\nip_address = "127.0.0.1"\n' "$role"
        printf 'tls_www_%s\nsigning_key\n' "$role"
        if [ "${4:-}" = expired ] && [ "$role" = client ]; then
            printf 'activation_date = "2020-01-01 00:00:00"\n'
            printf 'expiration_date = "2020-02-01 00:00:00"\n'
        else
            printf 'expiration_days = 2\n'
        fi
    } >"$role.info"
    certtool --generate-certificate --load-privkey "$role-key.pem" \
        --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
        --template "$role.info" --outfile "$role-cert.pem" 2>/dev/null
done
