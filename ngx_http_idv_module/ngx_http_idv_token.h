
/*
 * ngx_http_idv_module: callback tokens (pure core).
 *
 * A token binds what a result callback must match: the tenant, the
 * product code, the MerchantBizId and an expiry.  It is an HMAC-SHA256
 * (truncated to 128 bits) over those fields, so any gateway node holding
 * the key verifies it without shared state.  Layout, base64url without
 * padding:
 *
 *     version (1) = 1
 *     key id (4)                  first 4 bytes of SHA-256(key)
 *     expiry (4)                  Unix time, big endian
 *     tenant length (1), tenant
 *     product length (1), product
 *     MerchantBizId length (1), MerchantBizId
 *     MAC (16)                    over everything before it
 */


#ifndef _NGX_HTTP_IDV_TOKEN_H_INCLUDED_
#define _NGX_HTTP_IDV_TOKEN_H_INCLUDED_


#include "ngx_http_idv_core.h"


#define NGX_HTTP_IDV_TOKEN_VERSION  1
#define NGX_HTTP_IDV_TOKEN_MAC_LEN  16

/* binary and base64url bounds for three fields of up to 255 bytes */
#define NGX_HTTP_IDV_TOKEN_RAW_MAX  (1 + 4 + 4 + 3 * 256 + 16)
#define NGX_HTTP_IDV_TOKEN_MAX      ((NGX_HTTP_IDV_TOKEN_RAW_MAX + 2) / 3 * 4)


typedef struct {
    u_char                      kid[4];
    uint32_t                    expire;
    ngx_http_idv_str_t          tenant;
    ngx_http_idv_str_t          product;
    ngx_http_idv_str_t          merchant_biz_id;

    /* set by decode: what the MAC covers, and the MAC */
    const u_char               *signed_part;
    size_t                      signed_len;
    const u_char               *mac;
} ngx_http_idv_token_t;


/* the key id of a key: first 4 bytes of its SHA-256 */
int ngx_http_idv_token_kid(const u_char *key, size_t len, u_char *kid);

/* encodes into dst (NGX_HTTP_IDV_TOKEN_MAX bytes); returns the length or 0 */
size_t ngx_http_idv_token_encode(u_char *dst, const ngx_http_idv_token_t *t,
    const u_char *key, size_t key_len);

/*
 * decodes src into buf (NGX_HTTP_IDV_TOKEN_RAW_MAX bytes); the fields of t
 * point into buf; returns 0, or -1 when the token is malformed
 */
int ngx_http_idv_token_decode(const u_char *src, size_t len, u_char *buf,
    ngx_http_idv_token_t *t);

/* 1 when the MAC is right for key (constant time), 0 otherwise */
int ngx_http_idv_token_verify(const ngx_http_idv_token_t *t,
    const u_char *key, size_t key_len);


#endif /* _NGX_HTTP_IDV_TOKEN_H_INCLUDED_ */
