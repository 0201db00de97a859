/* mig_tls: TLS 1.3 for migration connections, through GnuTLS.
 *
 * Two kinds of credentials, both mutual:
 *  - X.509 (--tls-creds DIR), in the layout of QEMU's tls-creds-x509 so that one directory serves
 *    both: DIR/ca-cert.pem, and DIR/server-cert.pem + DIR/server-key.pem on a destination,
 *    DIR/client-cert.pem + DIR/client-key.pem on a source. Each side verifies the other's chain
 *    against the CA. With --tls-names the peer's certificate must match one of the names (DNS
 *    name, IP address or CN); without it a source checks the destination against the host it
 *    dialled, and a destination takes any certificate the CA signed.
 *  - PSK (--tls-psk FILE), lines "identity:hexkey" as psktool writes them. A source uses the
 *    first line; a destination takes any identity in the file.
 *
 * A session runs on a non-blocking socket: calls return -EAGAIN when they must wait, and
 * mig_tls_wants() says for what (POLLIN or POLLOUT). The handshake's errors name the peer and
 * what failed (verification status, alert received, a plain-text peer).
 */
#ifndef TERN_MIG_TLS_H
#define TERN_MIG_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The command line's spelling: at most one of creds_dir and psk_file. */
struct mig_tls_options {
    const char *creds_dir;
    const char *psk_file;
    const char *names; /* comma-separated, or NULL */
};

struct mig_tls_creds;
struct mig_tls_session;

/* True when o asks for TLS. */
bool mig_tls_wanted(const struct mig_tls_options *o);
/* The options that exclude or need each other (no file is read); mig_tls_creds_load checks
 * them too. */
int mig_tls_options_check(const struct mig_tls_options *o);
/* Loads and checks the credentials for a destination (server) or a source; errors name the
 * flag and the file. */
int mig_tls_creds_load(const struct mig_tls_options *o, bool server, struct mig_tls_creds **out);
void mig_tls_creds_free(struct mig_tls_creds *c);
/* "TLS (X.509)" or "TLS (PSK)". */
const char *mig_tls_creds_kind(const struct mig_tls_creds *c);

/* host: the name a source dialled (checked when no names were given); NULL on a destination.
 * peer names the other side in messages. */
int mig_tls_session_new(const struct mig_tls_creds *c, int fd, const char *host, const char *peer,
                        struct mig_tls_session **out);
/* 0 once done and the peer verified, -EAGAIN to wait, or -errno with the reason. */
int mig_tls_handshake(struct mig_tls_session *s);
/* Bytes moved (>0), 0 at the peer's clean close (recv), -EAGAIN, or -EPROTO/-ECONNRESET with
 * mig_tls_last_error() saying why. */
ssize_t mig_tls_send(struct mig_tls_session *s, const void *buf, size_t len);
ssize_t mig_tls_recv(struct mig_tls_session *s, void *buf, size_t len);
short mig_tls_wants(struct mig_tls_session *s);
const char *mig_tls_last_error(const struct mig_tls_session *s);
/* Sends close_notify if the socket takes it now (never waits). */
void mig_tls_bye(struct mig_tls_session *s);
void mig_tls_session_free(struct mig_tls_session *s);

#endif
