
/*
 * libFuzzer target: the JSON of the gateway's own answers
 * (ngx_http_idv_json.c): the error envelope with its "Gateway" member
 * and the service-shaped error of the SDK endpoint, whatever bytes the
 * values hold (a tenant from a header, a code from the service, a
 * product code from a client).
 *
 * The input is split at NUL bytes into code, message, tenant, product
 * and host; the first byte picks the numbers.  Invariants:
 *
 *   - the length pass and the writing pass agree;
 *   - the text parses as one JSON object (cJSON), with exactly the
 *     members written, each a string where a string was written;
 *   - a value of well-formed UTF-8 comes back byte for byte; any other
 *     comes back with U+FFFD in place of the bytes that were not;
 *   - the text is well-formed UTF-8 and holds no control character.
 */


#include <stdint.h>
#include <cjson/cJSON.h>

#include "fuzz.h"
#include "ngx_http_idv_json.h"


#define FUZZ_FIELDS  5


/* an independent check of well-formed UTF-8 (RFC 3629, Table 3-7) */

static int
fuzz_utf8_ok(const u_char *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  c, min;

    for (i = 0; i < len; i += n) {
        c = p[i];

        if (c < 0x80) {
            n = 1;
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            n = 2; c &= 0x1f; min = 0x80;

        } else if ((c & 0xf0) == 0xe0) {
            n = 3; c &= 0x0f; min = 0x800;

        } else if ((c & 0xf8) == 0xf0) {
            n = 4; c &= 0x07; min = 0x10000;

        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            c = (c << 6) | (p[i + k] & 0x3f);
        }

        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


static void
fuzz_check_string(cJSON *obj, const char *name, const u_char *v, size_t len)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, name);

    FUZZ_CHECK(cJSON_IsString(item));

    if (memchr(v, '\0', len) == NULL && fuzz_utf8_ok(v, len)) {
        FUZZ_CHECK(strlen(item->valuestring) == len);
        FUZZ_CHECK(len == 0 || memcmp(item->valuestring, v, len) == 0);
    }
}


static void
fuzz_check_text(const u_char *text, size_t len)
{
    size_t  i;

    FUZZ_CHECK(fuzz_utf8_ok(text, len));

    for (i = 0; i < len; i++) {
        FUZZ_CHECK(text[i] >= 0x20 && text[i] != 0x7f);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                  *in, *p, *end, *text, id[33];
    size_t                   i, n, m, len[FUZZ_FIELDS];
    cJSON                   *root, *gw;
    const u_char            *f[FUZZ_FIELDS];
    ngx_http_idv_gateway_t   g;

    if (size == 0) {
        return 0;
    }

    /* an empty rest still gives five (empty) fields */
    in = fuzz_alloc(NULL, size);
    memcpy(in, data + 1, size - 1);
    end = in + size - 1;
    p = in;

    for (i = 0; i < FUZZ_FIELDS; i++) {
        f[i] = p;

        while (p < end && *p != '\0') {
            p++;
        }

        len[i] = p - f[i];

        if (p < end) {
            p++;
        }
    }

    memcpy(id, "0123456789abcdef0123456789abcdef", 33);

    memset(&g, 0, sizeof(g));
    g.action.data = (u_char *) "CheckResult";
    g.action.len = 11;
    g.tenant.data = (u_char *) f[2];
    g.tenant.len = len[2];
    g.product.data = (u_char *) f[3];
    g.product.len = len[3];
    g.attempts = data[0] & 3;
    g.cached = (data[0] >> 2) & 1;
    g.passed = (data[0] >> 3) % 3;
    g.upstream_status = data[0] * 7;
    g.upstream_ms = (size_t) data[0] * 1009;

    /* the gateway's error envelope */

    n = ngx_http_idv_json_error(NULL, id, f[0], len[0], f[1], len[1], &g);
    text = fuzz_alloc(NULL, n + 1);
    m = ngx_http_idv_json_error(text, id, f[0], len[0], f[1], len[1], &g);

    FUZZ_CHECK(m == n);
    fuzz_check_text(text, n);

    root = cJSON_ParseWithLength((char *) text, n);
    FUZZ_CHECK(cJSON_IsObject(root));
    FUZZ_CHECK(cJSON_GetArraySize(root) == 4);

    fuzz_check_string(root, "RequestId", id, 32);
    fuzz_check_string(root, "Code", f[0], len[0]);
    fuzz_check_string(root, "Message", f[1], len[1]);

    gw = cJSON_GetObjectItemCaseSensitive(root, "Gateway");
    FUZZ_CHECK(cJSON_IsObject(gw));
    fuzz_check_string(gw, "action", g.action.data, g.action.len);

    if (len[2]) {
        fuzz_check_string(gw, "tenant", f[2], len[2]);
    }

    if (len[3]) {
        fuzz_check_string(gw, "productCode", f[3], len[3]);
    }

    FUZZ_CHECK(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(gw, "cached")));
    FUZZ_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(gw,
                                                               "attempts")));
    FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(gw, "injected") == NULL);

    cJSON_Delete(root);

    /* the service's error shape */

    n = ngx_http_idv_json_service_error(NULL, id, f[0], len[0], f[1], len[1],
                                        f[4], len[4]);
    text = fuzz_alloc(NULL, n + 1);
    m = ngx_http_idv_json_service_error(text, id, f[0], len[0], f[1],
                                        len[1], f[4], len[4]);

    FUZZ_CHECK(m == n);
    fuzz_check_text(text, n);

    root = cJSON_ParseWithLength((char *) text, n);
    FUZZ_CHECK(cJSON_IsObject(root));
    FUZZ_CHECK(cJSON_GetArraySize(root) == 4);

    fuzz_check_string(root, "Code", f[0], len[0]);
    fuzz_check_string(root, "Message", f[1], len[1]);
    fuzz_check_string(root, "HostId", f[4], len[4]);

    cJSON_Delete(root);

    fuzz_free_all();

    return 0;
}
