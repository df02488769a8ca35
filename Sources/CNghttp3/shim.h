/* CNghttp3: nghttp3 0.8 (HTTP/3 over our QUIC streams). Its constructors are macros over
 * `*_versioned` functions; the `gq_nghttp3_*` helpers make them importable. */
#ifndef GQUIC_CNGHTTP3_SHIM_H
#define GQUIC_CNGHTTP3_SHIM_H
#include <nghttp3/nghttp3.h>

static inline void gq_nghttp3_settings_default(nghttp3_settings *settings) {
    nghttp3_settings_default(settings);
}
static inline int gq_nghttp3_conn_client_new(nghttp3_conn **pconn,
                                             const nghttp3_callbacks *callbacks,
                                             const nghttp3_settings *settings,
                                             const nghttp3_mem *mem, void *user_data) {
    return nghttp3_conn_client_new(pconn, callbacks, settings, mem, user_data);
}
static inline int gq_nghttp3_conn_server_new(nghttp3_conn **pconn,
                                             const nghttp3_callbacks *callbacks,
                                             const nghttp3_settings *settings,
                                             const nghttp3_mem *mem, void *user_data) {
    return nghttp3_conn_server_new(pconn, callbacks, settings, mem, user_data);
}
#endif
