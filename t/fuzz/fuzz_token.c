
/*
 * libFuzzer target: the callback token parser, ngx_http_idv_token_decode()
 * (base64url, strict), with ngx_http_idv_token_verify() and
 * ngx_http_idv_token_encode() as oracles.
 *
 * Input: the callbackToken text as a callback brings it.
 *
 * Invariants: a decoded token's fields lie in the buffer and add up to
 * its length; a token that verifies under the key is exactly what
 * encoding its fields gives (no second spelling of a valid token);
 * encoding the decoded fields again decodes to the same fields, verifies
 * under the key and not under another one.
 */


#include <stdint.h>

#include "fuzz.h"
#include "ngx_http_idv_token.h"


#define FUZZ_KEY      "fuzz-callback-key"
#define FUZZ_KEY_LEN  (sizeof(FUZZ_KEY) - 1)


static int
fuzz_field_in(const ngx_http_idv_str_t *f, const u_char *buf, size_t n)
{
    return f->len <= 255 && f->data >= buf && f->data + f->len <= buf + n;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                 len, n;
    u_char                *src, *buf, *buf2, *enc;
    ngx_http_idv_token_t   t, t2;

    src = fuzz_dup(data, size);
    buf = fuzz_alloc(NULL, NGX_HTTP_IDV_TOKEN_RAW_MAX);

    memset(&t, 0, sizeof(t));

    if (ngx_http_idv_token_decode(src, size, buf, &t) != 0) {
        fuzz_free_all();
        return 0;
    }

    n = t.signed_len + NGX_HTTP_IDV_TOKEN_MAC_LEN;

    FUZZ_CHECK(n <= NGX_HTTP_IDV_TOKEN_RAW_MAX);
    FUZZ_CHECK(t.signed_part == buf && t.mac == buf + t.signed_len);
    FUZZ_CHECK(buf[0] == NGX_HTTP_IDV_TOKEN_VERSION);
    FUZZ_CHECK(fuzz_field_in(&t.tenant, buf, t.signed_len));
    FUZZ_CHECK(fuzz_field_in(&t.product, buf, t.signed_len));
    FUZZ_CHECK(fuzz_field_in(&t.merchant_biz_id, buf, t.signed_len));
    FUZZ_CHECK(t.signed_len == 1 + 4 + 4 + 3 + t.tenant.len + t.product.len
                               + t.merchant_biz_id.len);

    /*
     * encode the fields again; empty ones get a non-NULL pointer here (see
     * docs/hardening.md: the encoder's memcpy of a NULL, 0 field)
     */

    if (t.tenant.len == 0) {
        t.tenant.data = (u_char *) "";
    }
    if (t.product.len == 0) {
        t.product.data = (u_char *) "";
    }
    if (t.merchant_biz_id.len == 0) {
        t.merchant_biz_id.data = (u_char *) "";
    }

    enc = fuzz_alloc(NULL, NGX_HTTP_IDV_TOKEN_MAX);
    len = ngx_http_idv_token_encode(enc, &t, (u_char *) FUZZ_KEY,
                                    FUZZ_KEY_LEN);
    FUZZ_CHECK(len > 0 && len <= NGX_HTTP_IDV_TOKEN_MAX);

    if (ngx_http_idv_token_verify(&t, (u_char *) FUZZ_KEY, FUZZ_KEY_LEN)) {
        FUZZ_CHECK(len == size && memcmp(enc, data, size) == 0);
    }

    buf2 = fuzz_alloc(NULL, NGX_HTTP_IDV_TOKEN_RAW_MAX);
    memset(&t2, 0, sizeof(t2));

    FUZZ_CHECK(ngx_http_idv_token_decode(enc, len, buf2, &t2) == 0);
    FUZZ_CHECK(memcmp(t2.kid, t.kid, 4) == 0 && t2.expire == t.expire);
    FUZZ_CHECK(fuzz_str_eq(&t2.tenant, t.tenant.data, t.tenant.len));
    FUZZ_CHECK(fuzz_str_eq(&t2.product, t.product.data, t.product.len));
    FUZZ_CHECK(fuzz_str_eq(&t2.merchant_biz_id, t.merchant_biz_id.data,
                           t.merchant_biz_id.len));

    FUZZ_CHECK(ngx_http_idv_token_verify(&t2, (u_char *) FUZZ_KEY,
                                         FUZZ_KEY_LEN) == 1);
    FUZZ_CHECK(ngx_http_idv_token_verify(&t2, (u_char *) "another key", 11)
               == 0);

    fuzz_free_all();

    return 0;
}
