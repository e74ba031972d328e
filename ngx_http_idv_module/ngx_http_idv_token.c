
/*
 * ngx_http_idv_module: callback tokens (pure core).
 */


#include <string.h>

#include "ngx_http_idv_token.h"


static const u_char  ngx_http_idv_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


int
ngx_http_idv_token_kid(const u_char *key, size_t len, u_char *kid)
{
    u_char  hex[64];
    size_t  i;

    if (ngx_http_idv_sha256_hex(key, len, hex) != 0) {
        return -1;
    }

    for (i = 0; i < 4; i++) {
        kid[i] = (u_char) (((hex[2 * i] <= '9' ? hex[2 * i] - '0'
                                               : hex[2 * i] - 'a' + 10) << 4)
                           | (hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0'
                                                    : hex[2 * i + 1] - 'a'
                                                      + 10));
    }

    return 0;
}


size_t
ngx_http_idv_token_encode(u_char *dst, const ngx_http_idv_token_t *t,
    const u_char *key, size_t key_len)
{
    u_char   raw[NGX_HTTP_IDV_TOKEN_RAW_MAX], mac[32], *p, *d;
    size_t   len, i;
    uint32_t v;

    if (t->tenant.len > 255 || t->product.len > 255
        || t->merchant_biz_id.len > 255)
    {
        return 0;
    }

    p = raw;
    *p++ = NGX_HTTP_IDV_TOKEN_VERSION;
    memcpy(p, t->kid, 4);
    p += 4;
    *p++ = (u_char) (t->expire >> 24);
    *p++ = (u_char) (t->expire >> 16);
    *p++ = (u_char) (t->expire >> 8);
    *p++ = (u_char) t->expire;

    *p++ = (u_char) t->tenant.len;
    memcpy(p, t->tenant.data, t->tenant.len);
    p += t->tenant.len;

    *p++ = (u_char) t->product.len;
    memcpy(p, t->product.data, t->product.len);
    p += t->product.len;

    *p++ = (u_char) t->merchant_biz_id.len;
    memcpy(p, t->merchant_biz_id.data, t->merchant_biz_id.len);
    p += t->merchant_biz_id.len;

    if (ngx_http_idv_hmac_sha256(key, key_len, raw, p - raw, mac) != 0) {
        return 0;
    }

    memcpy(p, mac, NGX_HTTP_IDV_TOKEN_MAC_LEN);
    p += NGX_HTTP_IDV_TOKEN_MAC_LEN;

    len = p - raw;
    d = dst;

    for (i = 0; i + 2 < len; i += 3) {
        v = (uint32_t) raw[i] << 16 | raw[i + 1] << 8 | raw[i + 2];
        *d++ = ngx_http_idv_b64url[v >> 18];
        *d++ = ngx_http_idv_b64url[(v >> 12) & 0x3f];
        *d++ = ngx_http_idv_b64url[(v >> 6) & 0x3f];
        *d++ = ngx_http_idv_b64url[v & 0x3f];
    }

    if (len - i == 1) {
        v = (uint32_t) raw[i] << 16;
        *d++ = ngx_http_idv_b64url[v >> 18];
        *d++ = ngx_http_idv_b64url[(v >> 12) & 0x3f];

    } else if (len - i == 2) {
        v = (uint32_t) raw[i] << 16 | raw[i + 1] << 8;
        *d++ = ngx_http_idv_b64url[v >> 18];
        *d++ = ngx_http_idv_b64url[(v >> 12) & 0x3f];
        *d++ = ngx_http_idv_b64url[(v >> 6) & 0x3f];
    }

    return d - dst;
}


static int
ngx_http_idv_b64url_value(u_char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '-') {
        return 62;
    }

    if (c == '_') {
        return 63;
    }

    return -1;
}


int
ngx_http_idv_token_decode(const u_char *src, size_t len, u_char *buf,
    ngx_http_idv_token_t *t)
{
    int           c;
    size_t        i, n, bits, fields;
    uint32_t      acc;
    const u_char *p, *end;
    ngx_http_idv_str_t  *f;

    if (len == 0 || len > NGX_HTTP_IDV_TOKEN_MAX || len % 4 == 1) {
        return -1;
    }

    n = 0;
    acc = 0;
    bits = 0;

    for (i = 0; i < len; i++) {
        c = ngx_http_idv_b64url_value(src[i]);
        if (c < 0) {
            return -1;
        }

        acc = acc << 6 | (uint32_t) c;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (u_char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }

    /* leftover bits must be zero: one encoding per token */

    if (acc != 0) {
        return -1;
    }

    p = buf;
    end = buf + n;

    if (n < 1 + 4 + 4 + 3 + NGX_HTTP_IDV_TOKEN_MAC_LEN
        || *p++ != NGX_HTTP_IDV_TOKEN_VERSION)
    {
        return -1;
    }

    memcpy(t->kid, p, 4);
    p += 4;

    t->expire = (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
                | (uint32_t) p[2] << 8 | p[3];
    p += 4;

    for (fields = 0; fields < 3; fields++) {
        f = (fields == 0) ? &t->tenant
            : (fields == 1) ? &t->product : &t->merchant_biz_id;

        if (end - p < 1) {
            return -1;
        }

        f->len = *p++;

        if ((size_t) (end - p) < f->len + NGX_HTTP_IDV_TOKEN_MAC_LEN) {
            return -1;
        }

        f->data = (u_char *) p;
        p += f->len;
    }

    if (end - p != NGX_HTTP_IDV_TOKEN_MAC_LEN) {
        return -1;
    }

    t->signed_part = buf;
    t->signed_len = p - buf;
    t->mac = p;

    return 0;
}


int
ngx_http_idv_token_verify(const ngx_http_idv_token_t *t, const u_char *key,
    size_t key_len)
{
    u_char  mac[32];

    if (ngx_http_idv_hmac_sha256(key, key_len, t->signed_part, t->signed_len,
                                 mac)
        != 0)
    {
        return 0;
    }

    return ngx_http_idv_memeq_const(mac, t->mac, NGX_HTTP_IDV_TOKEN_MAC_LEN);
}
