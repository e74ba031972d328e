
/*
 * ngx_http_idv_module: callback tokens (pure core).
 */


#include <string.h>

#include "ngx_http_idv_token.h"


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
    u_char   raw[NGX_HTTP_IDV_TOKEN_RAW_MAX], mac[32], *p;
    size_t   len, i;

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
    if (t->tenant.len) {
        memcpy(p, t->tenant.data, t->tenant.len);
    }
    p += t->tenant.len;

    *p++ = (u_char) t->product.len;
    if (t->product.len) {
        memcpy(p, t->product.data, t->product.len);
    }
    p += t->product.len;

    *p++ = (u_char) t->merchant_biz_id.len;
    if (t->merchant_biz_id.len) {
        memcpy(p, t->merchant_biz_id.data, t->merchant_biz_id.len);
    }
    p += t->merchant_biz_id.len;

    if (ngx_http_idv_hmac_sha256(key, key_len, raw, p - raw, mac) != 0) {
        return 0;
    }

    memcpy(p, mac, NGX_HTTP_IDV_TOKEN_MAC_LEN);
    p += NGX_HTTP_IDV_TOKEN_MAC_LEN;

    /* base64url without padding: the standard alphabet, translated */

    len = ngx_http_idv_base64_encode(dst, raw, p - raw);

    while (len && dst[len - 1] == '=') {
        len--;
    }

    for (i = 0; i < len; i++) {
        if (dst[i] == '+') {
            dst[i] = '-';

        } else if (dst[i] == '/') {
            dst[i] = '_';
        }
    }

    return len;
}


int
ngx_http_idv_token_decode(const u_char *src, size_t len, u_char *buf,
    ngx_http_idv_token_t *t)
{
    u_char        std[NGX_HTTP_IDV_TOKEN_MAX];
    size_t        i, n, fields;
    const u_char *p, *end;
    ngx_http_idv_str_t  *f;

    /* longer text would decode to more than NGX_HTTP_IDV_TOKEN_RAW_MAX */

    if (len == 0 || len > (NGX_HTTP_IDV_TOKEN_RAW_MAX * 4 + 2) / 3) {
        return -1;
    }

    /* base64url to the standard alphabet; the strict decoder does the rest */

    for (i = 0; i < len; i++) {
        if (src[i] == '+' || src[i] == '/' || src[i] == '=') {
            return -1;
        }

        std[i] = (src[i] == '-') ? '+' : (src[i] == '_') ? '/' : src[i];
    }

    n = ngx_http_idv_base64_decode(buf, std, len);

    if (n == (size_t) -1) {
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
