
/*
 * ngx_http_idv_module: SipHash-2-4 (Aumasson and Bernstein, 2012), the
 * 64-bit and the 128-bit variants.
 */


#include "ngx_http_idv_siphash.h"


#define ngx_http_idv_sip_rotl(x, b)                                         \
    (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))

#define ngx_http_idv_sip_round(v0, v1, v2, v3)                              \
    do {                                                                    \
        v0 += v1;                                                           \
        v1 = ngx_http_idv_sip_rotl(v1, 13);                                 \
        v1 ^= v0;                                                           \
        v0 = ngx_http_idv_sip_rotl(v0, 32);                                 \
        v2 += v3;                                                           \
        v3 = ngx_http_idv_sip_rotl(v3, 16);                                 \
        v3 ^= v2;                                                           \
        v0 += v3;                                                           \
        v3 = ngx_http_idv_sip_rotl(v3, 21);                                 \
        v3 ^= v0;                                                           \
        v2 += v1;                                                           \
        v1 = ngx_http_idv_sip_rotl(v1, 17);                                 \
        v1 ^= v2;                                                           \
        v2 = ngx_http_idv_sip_rotl(v2, 32);                                 \
    } while (0)


static uint64_t ngx_http_idv_sip_read(const u_char *p, size_t n);
static void ngx_http_idv_sip_write(u_char *p, uint64_t v);


void
ngx_http_idv_siphash(u_char *out, size_t outlen, const u_char *in,
    size_t len, const u_char *key)
{
    size_t    i, tail;
    uint64_t  k0, k1, v0, v1, v2, v3, m;

    k0 = ngx_http_idv_sip_read(key, 8);
    k1 = ngx_http_idv_sip_read(key + 8, 8);

    v0 = k0 ^ 0x736f6d6570736575ULL;
    v1 = k1 ^ 0x646f72616e646f6dULL;
    v2 = k0 ^ 0x6c7967656e657261ULL;
    v3 = k1 ^ 0x7465646279746573ULL;

    if (outlen == 16) {
        v1 ^= 0xee;
    }

    tail = len % 8;

    for (i = 0; i < len - tail; i += 8) {
        m = ngx_http_idv_sip_read(in + i, 8);

        v3 ^= m;
        ngx_http_idv_sip_round(v0, v1, v2, v3);
        ngx_http_idv_sip_round(v0, v1, v2, v3);
        v0 ^= m;
    }

    /* the last block: the remaining bytes, the length in the top byte */

    m = ngx_http_idv_sip_read(in + i, tail) | ((uint64_t) len << 56);

    v3 ^= m;
    ngx_http_idv_sip_round(v0, v1, v2, v3);
    ngx_http_idv_sip_round(v0, v1, v2, v3);
    v0 ^= m;

    v2 ^= (outlen == 16) ? 0xee : 0xff;

    for (i = 0; i < 4; i++) {
        ngx_http_idv_sip_round(v0, v1, v2, v3);
    }

    ngx_http_idv_sip_write(out, v0 ^ v1 ^ v2 ^ v3);

    if (outlen != 16) {
        return;
    }

    v1 ^= 0xdd;

    for (i = 0; i < 4; i++) {
        ngx_http_idv_sip_round(v0, v1, v2, v3);
    }

    ngx_http_idv_sip_write(out + 8, v0 ^ v1 ^ v2 ^ v3);
}


/* up to 8 bytes, little-endian, whatever the alignment */

static uint64_t
ngx_http_idv_sip_read(const u_char *p, size_t n)
{
    uint64_t  v;

    v = 0;

    while (n--) {
        v = (v << 8) | p[n];
    }

    return v;
}


static void
ngx_http_idv_sip_write(u_char *p, uint64_t v)
{
    size_t  i;

    for (i = 0; i < 8; i++) {
        p[i] = (u_char) (v >> (8 * i));
    }
}
