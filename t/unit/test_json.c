
/*
 * The JSON of the gateway's own answers (ngx_http_idv_json.c): escaping
 * to valid JSON and valid UTF-8, the error envelope with its "Gateway"
 * member, the service's error shape; the length pass agrees with the
 * writing pass.  t/fuzz/fuzz_render.c checks the same on any bytes.
 */


#include <stdlib.h>
#include <string.h>

#include "ngx_http_idv_json.h"
#include "tap.h"


static void
escape_is(const char *in, size_t len, const char *exp, const char *name)
{
    u_char  buf[256];
    size_t  n, m;

    n = ngx_http_idv_json_escape(NULL, (const u_char *) in, len);
    m = ngx_http_idv_json_escape(buf, (const u_char *) in, len);

    tap_ok(n == m, "%s: the length pass agrees", name);
    tap_is_str(m, buf, exp, "%s", name);
}


/*
 * ngx_http_idv_json_string_end() on strings of 0 to 99 plain bytes (ASCII
 * and UTF-8 pairs) before the byte that stops it, in the block passes of
 * 32 and 16 bytes and in the byte loop: the closing quote found where it
 * is, past an escape, and a control byte refused.
 */

static void
string_end_scan(void)
{
    int            bad;
    size_t         len, i, k;
    u_char         buf[200];
    unsigned       flags;
    const u_char  *q;

    bad = 0;

    for (len = 0; len < 100; len++) {
        for (k = 0; k < 3; k++) {
            for (i = 0; i < len; i++) {
                buf[i] = (i % 3 == 2) ? 0xa9 : (i % 3 == 1) ? 0xc3 : 'A';
            }

            /* what follows the stop is long enough for any block */

            memset(buf + len, 'z', sizeof(buf) - len);

            flags = 0;

            if (k == 0) {
                buf[len] = '"';
                q = ngx_http_idv_json_string_end(buf, buf + sizeof(buf),
                                                 &flags);
                bad += (q != buf + len || flags != 0);

            } else if (k == 1) {
                buf[len] = '\\';
                buf[len + 1] = 'n';
                buf[len + 2] = '"';
                q = ngx_http_idv_json_string_end(buf, buf + sizeof(buf),
                                                 &flags);
                bad += (q != buf + len + 2
                        || flags != NGX_HTTP_IDV_JSON_ESCAPED);

            } else {
                buf[len] = 0x1f;
                buf[len + 1] = '"';
                q = ngx_http_idv_json_string_end(buf, buf + sizeof(buf),
                                                 &flags);
                bad += (q != NULL);
            }
        }
    }

    tap_ok(bad == 0, "string scan: quote, escape and control byte found "
           "after 0 to 99 plain bytes");
}


int
main(void)
{
    u_char                  buf[512], id[33];
    size_t                  n, m;
    ngx_http_idv_gateway_t  gw;

    string_end_scan();

    escape_is("plain", 5, "plain", "plain ASCII as it is");
    escape_is("a\"b\\c", 5, "a\\\"b\\\\c", "quote and backslash");
    escape_is("a\nb\x1b\x7f", 5, "a\\u000ab\\u001b\\u007f",
              "control characters as \\u00XX");
    escape_is("Soci\xc3\xa9t\xc3\xa9", 9, "Soci\xc3\xa9t\xc3\xa9",
              "well-formed UTF-8 as it is");
    escape_is("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80", "four bytes kept");
    escape_is("a\xffz", 3, "a\\ufffdz", "a stray byte replaced");
    escape_is("\xc0\xaf", 2, "\\ufffd\\ufffd", "an overlong form replaced");
    escape_is("\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd",
              "a surrogate replaced");
    escape_is("\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd",
              "past U+10FFFF replaced");
    escape_is("\xe2\x82", 2, "\\ufffd\\ufffd", "a cut sequence replaced");
    escape_is("\\\xaf", 2, "\\\\\\ufffd", "a backslash, then a stray byte");

    memcpy(id, "0123456789abcdef0123456789abcdef", 33);
    memset(&gw, 0, sizeof(gw));

    gw.action.data = (u_char *) "Initialize";
    gw.action.len = 10;
    gw.product.data = (u_char *) "X\",\"injected\":true,\"a\":\"";
    gw.product.len = strlen((char *) gw.product.data);
    gw.tenant.data = (u_char *) "acme";
    gw.tenant.len = 4;
    gw.attempts = 1;
    gw.upstream_status = 200;
    gw.upstream_ms = 1234;
    gw.passed = 1;

    n = ngx_http_idv_json_error(NULL, id, (u_char *) "Gateway.X", 9,
                                (u_char *) "m", 1, &gw);
    m = ngx_http_idv_json_error(buf, id, (u_char *) "Gateway.X", 9,
                                (u_char *) "m", 1, &gw);

    tap_ok(n == m && n < sizeof(buf), "error: the length pass agrees");
    tap_is_str(m, buf,
               "{\"RequestId\":\"0123456789abcdef0123456789abcdef\","
               "\"Code\":\"Gateway.X\",\"Message\":\"m\","
               "\"Gateway\":{\"action\":\"Initialize\","
               "\"productCode\":\"X\\\",\\\"injected\\\":true,"
               "\\\"a\\\":\\\"\",\"tenant\":\"acme\",\"cached\":false,"
               "\"attempts\":1,\"upstreamStatus\":200,"
               "\"upstreamTime\":1.234,\"passed\":true}}",
               "error: the envelope, the product code escaped");

    gw.product.len = 0;
    gw.tenant.len = 0;
    gw.attempts = 0;
    gw.passed = 2;
    gw.cached = 1;

    m = ngx_http_idv_json_gateway(buf, &gw);
    tap_is_str(m, buf,
               "\"Gateway\":{\"action\":\"Initialize\",\"cached\":true,"
               "\"attempts\":0,\"passed\":false}",
               "Gateway: no product, tenant or upstream figures when none");

    n = ngx_http_idv_json_service_error(NULL, id, (u_char *) "C", 1,
                                        (u_char *) "M.", 2,
                                        (u_char *) "h\"", 2);
    m = ngx_http_idv_json_service_error(buf, id, (u_char *) "C", 1,
                                        (u_char *) "M.", 2,
                                        (u_char *) "h\"", 2);

    tap_ok(n == m, "service error: the length pass agrees");
    tap_is_str(m, buf,
               "{\"RequestId\":\"0123456789abcdef0123456789abcdef\","
               "\"Message\":\"M.\",\"HostId\":\"h\\\"\",\"Code\":\"C\"}",
               "service error: the service's shape, the host escaped");

    return tap_done();
}
