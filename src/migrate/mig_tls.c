#include "migrate/mig_tls.h"

#include "err/err.h"
#include "file/file.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TLS_MAX_NAMES 16
#define TLS_MAX_PSKS 64
#define TLS_PSK_FILE_MAX (64u << 10)
#define TLS_PRIORITY_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3"
#define TLS_PRIORITY_PSK "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:+PSK"

struct tls_psk {
    char identity[128];
    char key_hex[256];
};

struct mig_tls_creds {
    bool server, psk;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    struct tls_psk psks[TLS_MAX_PSKS];
    unsigned psk_count;
    char names[TLS_MAX_NAMES][256];
    unsigned name_count;
};

struct mig_tls_session {
    gnutls_session_t s;
    const struct mig_tls_creds *creds;
    char host[256];
    char peer[128];
    char error[320];
};

bool mig_tls_wanted(const struct mig_tls_options *o)
{
    return o && (o->creds_dir || o->psk_file);
}

const char *mig_tls_creds_kind(const struct mig_tls_creds *c)
{
    return c->psk ? "TLS (PSK)" : "TLS (X.509)";
}

void mig_tls_creds_free(struct mig_tls_creds *c)
{
    if (!c)
        return;
    if (c->x509)
        gnutls_certificate_free_credentials(c->x509);
    if (c->psk_server)
        gnutls_psk_free_server_credentials(c->psk_server);
    if (c->psk_client)
        gnutls_psk_free_client_credentials(c->psk_client);
    explicit_bzero(c->psks, sizeof(c->psks));
    free(c);
}

static int tls_parse_names(struct mig_tls_creds *c, const char *list)
{
    if (!list)
        return 0;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || n >= sizeof(c->names[0]))
            return err_set(-EINVAL, "--tls-names: empty or over-long name in \"%s\"", list);
        if (c->name_count == TLS_MAX_NAMES)
            return err_set(-EINVAL, "--tls-names: more than %u names", TLS_MAX_NAMES);
        memcpy(c->names[c->name_count], p, n);
        c->names[c->name_count++][n] = '\0';
        p += n + (end ? 1 : 0);
    }
    return 0;
}

static int tls_x509_load(struct mig_tls_creds *c, const char *dir)
{
    char ca[4096], cert[4096], key[4096];
    const char *role = c->server ? "server" : "client";
    snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
    snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, role);
    snprintf(key, sizeof(key), "%s/%s-key.pem", dir, role);
    int g = gnutls_certificate_allocate_credentials(&c->x509);
    if (g < 0)
        return err_set(-ENOMEM, "--tls-creds: %s", gnutls_strerror(g));
    const char *files[] = {ca, cert, key};
    for (unsigned i = 0; i < 3; i++) {
        int fd, rc = file_open_regular(files[i], &fd);
        if (rc)
            return err_context(rc, "--tls-creds %s", dir);
        close(fd);
    }
    g = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);
    if (g <= 0)
        return err_set(-EINVAL, "--tls-creds: %s: %s", ca,
                       g == 0 ? "no certificate in it" : gnutls_strerror(g));
    g = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
    if (g < 0)
        return err_set(-EINVAL, "--tls-creds: %s with %s: %s", cert, key, gnutls_strerror(g));
    return 0;
}

/* One "identity:hexkey" line into p; the line is NUL-terminated, without its newline. */
static int tls_psk_line(const char *file, unsigned lineno, char *line, struct tls_psk *p)
{
    char *colon = strchr(line, ':');
    size_t id_len = colon ? (size_t)(colon - line) : 0;
    size_t key_len = colon ? strlen(colon + 1) : 0;
    if (!colon || id_len == 0 || id_len >= sizeof(p->identity))
        return err_set(-EINVAL, "--tls-psk: %s line %u: not \"identity:hexkey\"", file, lineno);
    if (key_len < 32 || key_len >= sizeof(p->key_hex) || key_len % 2 ||
        strspn(colon + 1, "0123456789abcdefABCDEF") != key_len)
        return err_set(-EINVAL,
                       "--tls-psk: %s line %u: the key must be 16 to 127 bytes in hex digits", file,
                       lineno);
    memcpy(p->identity, line, id_len);
    p->identity[id_len] = '\0';
    memcpy(p->key_hex, colon + 1, key_len + 1);
    return 0;
}

static int tls_psk_read(struct mig_tls_creds *c, const char *file)
{
    uint8_t *data;
    size_t len;
    int rc = file_read_all(file, TLS_PSK_FILE_MAX, &data, &len);
    if (rc)
        return err_context(rc, "--tls-psk %s", file);
    char *text = malloc(len + 1);
    if (!text) {
        explicit_bzero(data, len);
        free(data);
        return err_set(-ENOMEM, "out of memory");
    }
    memcpy(text, data, len);
    text[len] = '\0';
    explicit_bzero(data, len);
    free(data);
    char *save = NULL;
    unsigned lineno = 0;
    for (char *line = strtok_r(text, "\n", &save); line && !rc;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        line[strcspn(line, "\r")] = '\0';
        if (!*line || *line == '#')
            continue;
        if (c->psk_count == TLS_MAX_PSKS)
            rc = err_set(-EINVAL, "--tls-psk: %s: more than %u keys", file, TLS_MAX_PSKS);
        else
            rc = tls_psk_line(file, lineno, line, &c->psks[c->psk_count++]);
    }
    explicit_bzero(text, len);
    free(text);
    if (!rc && !c->psk_count)
        rc = err_set(-EINVAL, "--tls-psk: %s holds no \"identity:hexkey\" line", file);
    return rc;
}

static int tls_psk_lookup(gnutls_session_t s, const char *identity, gnutls_datum_t *key)
{
    const struct mig_tls_creds *c = gnutls_session_get_ptr(s);
    for (unsigned i = 0; i < c->psk_count; i++) {
        if (strcmp(c->psks[i].identity, identity))
            continue;
        gnutls_datum_t hex = {(unsigned char *)c->psks[i].key_hex,
                              (unsigned)strlen(c->psks[i].key_hex)};
        size_t n = hex.size / 2;
        key->data = gnutls_malloc(n);
        key->size = (unsigned)n;
        if (!key->data || gnutls_hex_decode(&hex, key->data, &n) < 0)
            return -1;
        return 0;
    }
    return -1; /* unknown identity: the handshake fails */
}

static int tls_psk_load(struct mig_tls_creds *c, const char *file)
{
    int rc = tls_psk_read(c, file);
    if (rc)
        return rc;
    if (c->server) {
        if (gnutls_psk_allocate_server_credentials(&c->psk_server) < 0)
            return err_set(-ENOMEM, "--tls-psk: out of memory");
        gnutls_psk_set_server_credentials_function(c->psk_server, tls_psk_lookup);
        return 0;
    }
    if (gnutls_psk_allocate_client_credentials(&c->psk_client) < 0)
        return err_set(-ENOMEM, "--tls-psk: out of memory");
    gnutls_datum_t key = {(unsigned char *)c->psks[0].key_hex,
                          (unsigned)strlen(c->psks[0].key_hex)};
    int g = gnutls_psk_set_client_credentials(c->psk_client, c->psks[0].identity, &key,
                                              GNUTLS_PSK_KEY_HEX);
    if (g < 0)
        return err_set(-EINVAL, "--tls-psk: %s: %s", file, gnutls_strerror(g));
    return 0;
}

int mig_tls_options_check(const struct mig_tls_options *o)
{
    if (o->creds_dir && o->psk_file)
        return err_set(-EINVAL, "--tls-creds and --tls-psk: choose one");
    if (o->names && !o->creds_dir)
        return err_set(-EINVAL, "--tls-names needs --tls-creds (names are checked on "
                                "certificates)");
    return 0;
}

int mig_tls_creds_load(const struct mig_tls_options *o, bool server, struct mig_tls_creds **out)
{
    int rc = mig_tls_options_check(o);
    if (rc)
        return rc;
    struct mig_tls_creds *c = calloc(1, sizeof(*c));
    if (!c)
        return err_set(-ENOMEM, "out of memory");
    c->server = server;
    c->psk = o->psk_file != NULL;
    rc = tls_parse_names(c, o->names);
    if (!rc)
        rc = c->psk ? tls_psk_load(c, o->psk_file) : tls_x509_load(c, o->creds_dir);
    if (rc) {
        mig_tls_creds_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- sessions ---------------------------------------------------------------------------- */

static int tls_fail(struct mig_tls_session *s, int code, const char *fmt, const char *detail)
{
    char what[256];
    snprintf(what, sizeof(what), fmt, detail);
    snprintf(s->error, sizeof(s->error), "%s", what);
    return err_set(code, "TLS with %s: %s", s->peer, what);
}

int mig_tls_session_new(const struct mig_tls_creds *c, int fd, const char *host, const char *peer,
                        struct mig_tls_session **out)
{
    struct mig_tls_session *s = calloc(1, sizeof(*s));
    if (!s)
        return err_set(-ENOMEM, "out of memory");
    s->creds = c;
    snprintf(s->host, sizeof(s->host), "%s", host ? host : "");
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
    unsigned flags =
        (c->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS;
    int g = gnutls_init(&s->s, flags);
    if (g < 0) {
        free(s);
        return err_set(-ENOMEM, "TLS session: %s", gnutls_strerror(g));
    }
    *out = s;
    gnutls_session_set_ptr(s->s, (void *)c);
    const char *err_pos = NULL;
    g = gnutls_priority_set_direct(s->s, c->psk ? TLS_PRIORITY_PSK : TLS_PRIORITY_X509, &err_pos);
    if (g >= 0 && c->psk)
        g = gnutls_credentials_set(s->s, GNUTLS_CRD_PSK,
                                   c->server ? (void *)c->psk_server : (void *)c->psk_client);
    if (g >= 0 && !c->psk)
        g = gnutls_credentials_set(s->s, GNUTLS_CRD_CERTIFICATE, c->x509);
    if (g < 0)
        return tls_fail(s, -EINVAL, "cannot set up the session: %s", gnutls_strerror(g));
    if (!c->psk) {
        if (c->server)
            gnutls_certificate_server_set_request(s->s, GNUTLS_CERT_REQUIRE);
        /* The chain is checked in the handshake; names after it (several may be allowed). */
        gnutls_session_set_verify_cert(s->s, NULL, 0);
    }
    gnutls_transport_set_int(s->s, fd);
    gnutls_handshake_set_timeout(s->s, 0); /* the channel's deadline bounds it */
    return 0;
}

static bool tls_cert_matches(gnutls_x509_crt_t crt, const char *name)
{
    return gnutls_x509_crt_check_hostname(crt, name) != 0;
}

/* The peer's certificate against --tls-names, or a destination's against the dialled host. */
static int tls_check_names(struct mig_tls_session *s)
{
    const struct mig_tls_creds *c = s->creds;
    if (c->psk || (!c->name_count && (c->server || !s->host[0])))
        return 0;
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s->s, &n);
    gnutls_x509_crt_t crt;
    if (!certs || !n || gnutls_x509_crt_init(&crt) < 0)
        return tls_fail(s, -EACCES, "%s", "no certificate from the peer");
    bool ok = false;
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0) {
        if (!c->name_count)
            ok = tls_cert_matches(crt, s->host);
        for (unsigned i = 0; i < c->name_count && !ok; i++)
            ok = tls_cert_matches(crt, c->names[i]);
    }
    gnutls_x509_crt_deinit(crt);
    if (ok)
        return 0;
    gnutls_alert_send(s->s, GNUTLS_AL_FATAL, GNUTLS_A_BAD_CERTIFICATE);
    return c->name_count
               ? tls_fail(s, -EACCES, "the certificate names none of --tls-names %s",
                          c->server ? "(the source's)" : "(the destination's)")
               : tls_fail(s, -EACCES,
                          "the destination's certificate is not for %s (the host dialled; "
                          "--tls-names allows others)",
                          s->host);
}

/* An alert the peer sent, with what it most likely means. */
static void tls_alert_text(const struct mig_tls_session *s, char *buf, size_t size)
{
    gnutls_alert_description_t a = gnutls_alert_get(s->s);
    const char *name = gnutls_alert_get_name(a);
    const char *hint = "";
    if (s->creds->psk && (a == GNUTLS_A_DECRYPT_ERROR || a == GNUTLS_A_ILLEGAL_PARAMETER ||
                          a == GNUTLS_A_BAD_RECORD_MAC || a == GNUTLS_A_UNKNOWN_PSK_IDENTITY))
        hint = " (its key or identity differs from ours)";
    else if (a == GNUTLS_A_BAD_CERTIFICATE || a == GNUTLS_A_UNKNOWN_CA ||
             a == GNUTLS_A_CERTIFICATE_EXPIRED || a == GNUTLS_A_CERTIFICATE_UNKNOWN ||
             a == GNUTLS_A_UNSUPPORTED_CERTIFICATE || a == GNUTLS_A_CERTIFICATE_REVOKED ||
             a == GNUTLS_A_CERTIFICATE_REQUIRED)
        hint = " (it refused our certificate: see its log)";
    snprintf(buf, size, "the peer refused us, TLS alert \"%s\"%s", name ? name : "?", hint);
}

static int tls_handshake_error(struct mig_tls_session *s, int g)
{
    /* Tell the peer why, so that its message can say so too. */
    if (g != GNUTLS_E_WARNING_ALERT_RECEIVED && g != GNUTLS_E_FATAL_ALERT_RECEIVED &&
        g != GNUTLS_E_PREMATURE_TERMINATION && g != GNUTLS_E_PUSH_ERROR && g != GNUTLS_E_PULL_ERROR)
        gnutls_alert_send_appropriate(s->s, g);
    if (g == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t txt = {0};
        unsigned status = gnutls_session_get_verify_cert_status(s->s);
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0);
        for (size_t n = txt.data ? strlen((char *)txt.data) : 0; n && txt.data[n - 1] == ' ';)
            txt.data[--n] = '\0';
        int rc = tls_fail(s, -EACCES, "the peer's certificate failed verification: %s",
                          txt.data ? (const char *)txt.data : "?");
        gnutls_free(txt.data);
        return rc;
    }
    if (g == GNUTLS_E_WARNING_ALERT_RECEIVED || g == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        char what[200];
        tls_alert_text(s, what, sizeof(what));
        return tls_fail(s, -EACCES, "%s", what);
    }
    if (s->creds->psk &&
        (g == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER || g == GNUTLS_E_DECRYPTION_FAILED))
        return tls_fail(s, -EACCES, "%s (the peer's key or identity differs from ours)",
                        gnutls_strerror(g));
    if (g == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || g == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
        g == GNUTLS_E_UNEXPECTED_PACKET)
        return tls_fail(s, -EPROTO,
                        "%s (the peer answered in plain text: a destination without TLS, or "
                        "one refusing every connection, e.g. busy with another migration)",
                        gnutls_strerror(g));
    if (g == GNUTLS_E_PREMATURE_TERMINATION || g == GNUTLS_E_PUSH_ERROR || g == GNUTLS_E_PULL_ERROR)
        return tls_fail(s, -ECONNRESET,
                        "%s (the peer closed: does it refuse our credentials, or not speak TLS?)",
                        gnutls_strerror(g));
    return tls_fail(s, -EACCES, "%s", gnutls_strerror(g));
}

int mig_tls_handshake(struct mig_tls_session *s)
{
    int g = gnutls_handshake(s->s);
    if (g == GNUTLS_E_AGAIN || g == GNUTLS_E_INTERRUPTED)
        return -EAGAIN;
    if (g < 0)
        return tls_handshake_error(s, g);
    return tls_check_names(s);
}

static ssize_t tls_io_result(struct mig_tls_session *s, ssize_t g)
{
    if (g >= 0)
        return g;
    if (g == GNUTLS_E_AGAIN || g == GNUTLS_E_INTERRUPTED)
        return -EAGAIN;
    if (g == GNUTLS_E_FATAL_ALERT_RECEIVED || g == GNUTLS_E_WARNING_ALERT_RECEIVED)
        tls_alert_text(s, s->error, sizeof(s->error));
    else
        snprintf(s->error, sizeof(s->error), "%s", gnutls_strerror((int)g));
    return g == GNUTLS_E_PREMATURE_TERMINATION || g == GNUTLS_E_PUSH_ERROR ||
                   g == GNUTLS_E_PULL_ERROR
               ? -ECONNRESET
               : -EPROTO;
}

ssize_t mig_tls_send(struct mig_tls_session *s, const void *buf, size_t len)
{
    return tls_io_result(s, gnutls_record_send(s->s, buf, len));
}

ssize_t mig_tls_recv(struct mig_tls_session *s, void *buf, size_t len)
{
    return tls_io_result(s, gnutls_record_recv(s->s, buf, len));
}

short mig_tls_wants(struct mig_tls_session *s)
{
    return gnutls_record_get_direction(s->s) ? POLLOUT : POLLIN;
}

const char *mig_tls_last_error(const struct mig_tls_session *s)
{
    return s->error[0] ? s->error : "TLS error";
}

void mig_tls_bye(struct mig_tls_session *s)
{
    gnutls_bye(s->s, GNUTLS_SHUT_WR);
}

void mig_tls_session_free(struct mig_tls_session *s)
{
    if (!s)
        return;
    gnutls_deinit(s->s);
    free(s);
}
