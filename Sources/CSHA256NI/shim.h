/* CSHA256NI: the SHA-256 block function with the x86 SHA extensions, for one message or for two
 * messages interleaved. Used by ContentStore's import, which must hash every byte twice (the blob's
 * digest and each chunk's): one sha256rnds2 chain is latency-bound (about 1.8 GB/s here), two
 * independent chains in one loop keep the unit busy (about 3.1 GB/s for both together).
 * Callers check gq_sha256_ni_available() first; padding and finishing stay in Swift. */
#ifndef GQUIC_CSHA256NI_SHIM_H
#define GQUIC_CSHA256NI_SHIM_H
#include <stddef.h>
#include <stdint.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

/* 1 if the CPU has the SHA extensions (CPUID leaf 7, EBX bit 29) and SSE4.1 (leaf 1, ECX bit 19). */
static inline int gq_sha256_ni_available(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19))) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 29) & 1;
}

#define GQ_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3"), always_inline))

static const uint32_t gq_sha256_k[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

/* state[8] (a..h) <-> the ABEF/CDGH register layout sha256rnds2 works on. */
static inline GQ_SHA_TARGET void gq_sha256_ni_load(const uint32_t *s, __m128i *abef, __m128i *cdgh) {
    __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)s), 0xB1);
    __m128i u = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(s + 4)), 0x1B);
    *abef = _mm_alignr_epi8(t, u, 8);
    *cdgh = _mm_blend_epi16(u, t, 0xF0);
}
static inline GQ_SHA_TARGET void gq_sha256_ni_store(uint32_t *s, __m128i abef, __m128i cdgh) {
    __m128i t = _mm_shuffle_epi32(abef, 0x1B);
    __m128i u = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)s, _mm_blend_epi16(t, u, 0xF0));
    _mm_storeu_si128((__m128i *)(s + 4), _mm_alignr_epi8(u, t, 8));
}

/* Message words 4i..4i+3: loaded (i < 4) or from the schedule of the four before. */
#define GQ_SHA_W(W, i, data)                                                                          \
    ((i) < 4 ? _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((data) + 16 * (i))), bswap)        \
             : _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(W[(i) & 3], W[((i) + 1) & 3]), \
                                                  _mm_alignr_epi8(W[((i) + 3) & 3], W[((i) + 2) & 3], 4)), \
                                    W[((i) + 3) & 3]))

/* Runs the compression function over `blocks` 64-byte blocks of `data`, updating state[8]. */
static inline __attribute__((target("sha,sse4.1,ssse3"))) void gq_sha256_ni_blocks(uint32_t *state, const uint8_t *data, size_t blocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i s0, s1;
    gq_sha256_ni_load(state, &s0, &s1);
    while (blocks--) {
        __m128i a0 = s0, a1 = s1, W[4];
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; i++) {
            __m128i w = GQ_SHA_W(W, i, data);
            W[i & 3] = w;
            __m128i m = _mm_add_epi32(w, _mm_load_si128((const __m128i *)&gq_sha256_k[4 * i]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
        }
        s0 = _mm_add_epi32(s0, a0);
        s1 = _mm_add_epi32(s1, a1);
        data += 64;
    }
    gq_sha256_ni_store(state, s0, s1);
}

/* Two independent messages, `blocks` blocks each, in one loop (two dependency chains in flight). */
static inline __attribute__((target("sha,sse4.1,ssse3"))) void gq_sha256_ni_blocks_x2(uint32_t *stateA, const uint8_t *dataA,
                                                                               uint32_t *stateB, const uint8_t *dataB, size_t blocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i s0, s1, t0, t1;
    gq_sha256_ni_load(stateA, &s0, &s1);
    gq_sha256_ni_load(stateB, &t0, &t1);
    while (blocks--) {
        __m128i a0 = s0, a1 = s1, b0 = t0, b1 = t1, W[4], V[4];
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; i++) {
            __m128i w = GQ_SHA_W(W, i, dataA);
            __m128i v = GQ_SHA_W(V, i, dataB);
            W[i & 3] = w;
            V[i & 3] = v;
            __m128i k = _mm_load_si128((const __m128i *)&gq_sha256_k[4 * i]);
            __m128i m = _mm_add_epi32(w, k), n = _mm_add_epi32(v, k);
            s1 = _mm_sha256rnds2_epu32(s1, s0, m);
            t1 = _mm_sha256rnds2_epu32(t1, t0, n);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
            t0 = _mm_sha256rnds2_epu32(t0, t1, _mm_shuffle_epi32(n, 0x0E));
        }
        s0 = _mm_add_epi32(s0, a0);
        s1 = _mm_add_epi32(s1, a1);
        t0 = _mm_add_epi32(t0, b0);
        t1 = _mm_add_epi32(t1, b1);
        dataA += 64;
        dataB += 64;
    }
    gq_sha256_ni_store(stateA, s0, s1);
    gq_sha256_ni_store(stateB, t0, t1);
}
#undef GQ_SHA_W
#else
static inline int gq_sha256_ni_available(void) { return 0; }
static inline void gq_sha256_ni_blocks(uint32_t *state, const uint8_t *data, size_t blocks) { (void)state; (void)data; (void)blocks; }
static inline void gq_sha256_ni_blocks_x2(uint32_t *a, const uint8_t *da, uint32_t *b, const uint8_t *db, size_t blocks) { (void)a; (void)da; (void)b; (void)db; (void)blocks; }
#endif
#endif
