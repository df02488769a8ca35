/* CGnuTLS: GnuTLS 3.7 (TLS 1.3 for QUIC, X.509 certificates for node identities). */
#ifndef GQUIC_CGNUTLS_SHIM_H
#define GQUIC_CGNUTLS_SHIM_H
#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <gnutls/abstract.h>

/* GNUTLS_E_* codes are #defines; Swift imports them as Int32 already. Flag sets such as
 * gnutls_init_flags_t import as structs, so the combination QUIC needs is spelled here once. */
static inline unsigned int gq_gnutls_quic_client_flags(void) {
    return GNUTLS_CLIENT | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA;
}
static inline unsigned int gq_gnutls_quic_server_flags(void) {
    return GNUTLS_SERVER | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA;
}
#endif
