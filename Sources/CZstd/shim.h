/* CZstd: libzstd 1.5 (chunk compression, dictionary deltas). ZSTD_isError and friends are real
 * functions; only the compile-time constants that Swift cannot see are spelled out here. */
#ifndef GQUIC_CZSTD_SHIM_H
#define GQUIC_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>

static inline unsigned long long gq_zstd_content_size_unknown(void) { return ZSTD_CONTENTSIZE_UNKNOWN; }
static inline unsigned long long gq_zstd_content_size_error(void) { return ZSTD_CONTENTSIZE_ERROR; }
#endif
