/* COpenSSLCrypto: OpenSSL 3.0 libcrypto for hashing (SHA-256 via EVP, SHA-NI where the CPU has it)
 * and Ed25519 node identity keys. TLS itself is GnuTLS (Debian's OpenSSL has no QUIC TLS API). */
#ifndef GQUIC_COPENSSLCRYPTO_SHIM_H
#define GQUIC_COPENSSLCRYPTO_SHIM_H
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

/* BIO_get_mem_data is a macro over BIO_ctrl. */
static inline long gq_BIO_get_mem_data(BIO *bio, char **pp) { return BIO_get_mem_data(bio, pp); }
#endif
