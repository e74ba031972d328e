
/*
 * Callback tokens: round trip, tamper detection, key ids, malformed input.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_http_idv_token.h"
#include "tap.h"


static void
set_str(ngx_http_idv_str_t *s, const char *v)
{
    s->data = (u_char *) v;
    s->len = strlen(v);
}


int
main(void)
{
    u_char                 enc[NGX_HTTP_IDV_TOKEN_MAX + 1];
    u_char                 raw[NGX_HTTP_IDV_TOKEN_RAW_MAX];
    u_char                 kid[4], kid2[4], longv[300];
    size_t                 len, i, bad;
    ngx_http_idv_token_t   t, d;
    const u_char           key[] = "0123456789abcdef0123456789abcdef";
    const u_char           key2[] = "fedcba9876543210fedcba9876543210";

    ngx_http_idv_sign_init();

    memset(&t, 0, sizeof(t));
    tap_ok(ngx_http_idv_token_kid(key, 32, kid) == 0, "key id of a key");
    tap_ok(ngx_http_idv_token_kid(key2, 32, kid2) == 0
           && memcmp(kid, kid2, 4) != 0, "different keys, different ids");

    memcpy(t.kid, kid, 4);
    t.expire = 1900000000;
    set_str(&t.tenant, "acme");
    set_str(&t.product, "eKYC");
    set_str(&t.merchant_biz_id, "biz-0001");

    len = ngx_http_idv_token_encode(enc, &t, key, 32);
    tap_ok(len > 0 && len <= NGX_HTTP_IDV_TOKEN_MAX, "encodes");

    bad = 0;
    for (i = 0; i < len; i++) {
        if (!((enc[i] >= 'A' && enc[i] <= 'Z') || (enc[i] >= 'a' && enc[i] <= 'z')
              || (enc[i] >= '0' && enc[i] <= '9') || enc[i] == '-'
              || enc[i] == '_'))
        {
            bad++;
        }
    }
    tap_ok(bad == 0, "URL-safe alphabet, no padding");

    memset(&d, 0, sizeof(d));
    tap_ok(ngx_http_idv_token_decode(enc, len, raw, &d) == 0, "decodes");
    tap_ok(memcmp(d.kid, kid, 4) == 0, "key id round trip");
    tap_ok(d.expire == 1900000000, "expiry round trip");
    tap_is_str(d.tenant.len, d.tenant.data, "acme", "tenant round trip");
    tap_is_str(d.product.len, d.product.data, "eKYC", "product round trip");
    tap_is_str(d.merchant_biz_id.len, d.merchant_biz_id.data, "biz-0001",
               "MerchantBizId round trip");
    tap_ok(ngx_http_idv_token_verify(&d, key, 32) == 1, "verifies with its key");
    tap_ok(ngx_http_idv_token_verify(&d, key2, 32) == 0,
           "does not verify with another key");

    /* every single-character change is caught */

    bad = 0;
    for (i = 0; i < len; i++) {
        u_char  saved = enc[i];

        enc[i] = (saved == 'A') ? 'B' : 'A';

        if (ngx_http_idv_token_decode(enc, len, raw, &d) == 0
            && ngx_http_idv_token_verify(&d, key, 32) == 1)
        {
            bad++;
        }

        enc[i] = saved;
    }
    tap_ok(bad == 0, "no tampered variant verifies (%zu positions)", len);

    tap_ok(ngx_http_idv_token_decode(enc, len - 1, raw, &d) != 0
           || ngx_http_idv_token_verify(&d, key, 32) == 0,
           "a truncated token does not verify");
    tap_ok(ngx_http_idv_token_decode((u_char *) "", 0, raw, &d) != 0,
           "empty token is malformed");
    tap_ok(ngx_http_idv_token_decode((u_char *) "AAAA+/==", 8, raw, &d) != 0,
           "standard base64 characters are refused");
    tap_ok(ngx_http_idv_token_decode((u_char *) "AQ", 2, raw, &d) != 0,
           "too short");

    memset(longv, 'x', sizeof(longv));
    t.merchant_biz_id.data = longv;
    t.merchant_biz_id.len = 256;
    tap_ok(ngx_http_idv_token_encode(enc, &t, key, 32) == 0,
           "a field over 255 bytes is refused");

    t.merchant_biz_id.len = 255;
    t.tenant.data = longv;
    t.tenant.len = 255;
    t.product.data = longv;
    t.product.len = 255;
    len = ngx_http_idv_token_encode(enc, &t, key, 32);
    tap_ok(len > 0 && len <= NGX_HTTP_IDV_TOKEN_MAX
           && ngx_http_idv_token_decode(enc, len, raw, &d) == 0
           && d.merchant_biz_id.len == 255
           && ngx_http_idv_token_verify(&d, key, 32) == 1,
           "the largest token round trips");

    ngx_http_idv_sign_cleanup();

    return tap_done();
}
