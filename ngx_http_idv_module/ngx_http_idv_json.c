
/*
 * ngx_http_idv_module: the JSON text of the gateway's own answers.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_idv_json.h"


typedef struct {
    const char                 *name;
    const u_char               *value;
    size_t                      len;
} ngx_http_idv_json_member_t;


static size_t ngx_http_idv_json_object(u_char *dst,
    const ngx_http_idv_json_member_t *m, size_t nm,
    const ngx_http_idv_gateway_t *gw);
static size_t ngx_http_idv_json_literal(u_char *dst, const char *s);
static size_t ngx_http_idv_json_string(u_char *dst, const char *name,
    const u_char *value, size_t len);
static size_t ngx_http_idv_json_number(u_char *dst, const char *name,
    size_t n);


static const char  ngx_http_idv_json_hex[] = "0123456789abcdef";


size_t
ngx_http_idv_json_escape(u_char *dst, const u_char *src, size_t len)
{
    u_char  c, *p;
    size_t  n, i, out;

    out = 0;
    p = dst;

    for (i = 0; i < len; /* void */ ) {
        c = src[i];

        if (c >= 0x80) {
            n = ngx_http_idv_utf8_seq(src + i, len - i);

            if (n == 0) {
                /* not well-formed UTF-8: the replacement character */
                out += 6;

                if (dst) {
                    memcpy(p, "\\ufffd", 6);
                    p += 6;
                }

                i++;
                continue;
            }

            out += n;

            if (dst) {
                memcpy(p, src + i, n);
                p += n;
            }

            i += n;
            continue;
        }

        if (c == '"' || c == '\\') {
            out += 2;

            if (dst) {
                *p++ = '\\';
                *p++ = c;
            }

        } else if (c < 0x20 || c == 0x7f) {
            out += 6;

            if (dst) {
                *p++ = '\\';
                *p++ = 'u';
                *p++ = '0';
                *p++ = '0';
                *p++ = ngx_http_idv_json_hex[c >> 4];
                *p++ = ngx_http_idv_json_hex[c & 0xf];
            }

        } else {
            out++;

            if (dst) {
                *p++ = c;
            }
        }

        i++;
    }

    return out;
}


/*
 * the length of the well-formed UTF-8 sequence at p (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF), or 0
 */

size_t
ngx_http_idv_utf8_seq(const u_char *p, size_t len)
{
    size_t  n, i;
    u_char  lo, hi;

    lo = 0x80;
    hi = 0xbf;

    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;

    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;

        if (p[0] == 0xe0) {
            lo = 0xa0;              /* no overlong forms */

        } else if (p[0] == 0xed) {
            hi = 0x9f;              /* no surrogates */
        }

    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;

        if (p[0] == 0xf0) {
            lo = 0x90;

        } else if (p[0] == 0xf4) {
            hi = 0x8f;              /* nothing past U+10FFFF */
        }

    } else {
        return 0;
    }

    if (len < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


/*
 * the number of characters of well-formed UTF-8 text, or (size_t) -1;
 * ASCII, eight bytes at a time
 */

size_t
ngx_http_idv_utf8_len(const u_char *p, size_t len)
{
    size_t    n, k;
    uint64_t  w;

    n = 0;

    while (len) {

        while (len >= 8) {
            memcpy(&w, p, 8);

            if (w & 0x8080808080808080ULL) {
                break;
            }

            p += 8;
            len -= 8;
            n += 8;
        }

        if (len == 0) {
            break;
        }

        if (*p < 0x80) {
            k = 1;

        } else {
            k = ngx_http_idv_utf8_seq(p, len);

            if (k == 0) {
                return (size_t) -1;
            }
        }

        p += k;
        len -= k;
        n++;
    }

    return n;
}


/*
 * JSON text passed on as it came (an Ext* member of an answer, an array
 * parameter of a request): cJSON, which checked that it parses, lets
 * control bytes through that JSON does not allow -- none inside a
 * string, only white space outside -- and skips a leading byte-order
 * mark, which JSON does not allow inside a document either.  0 when the
 * text keeps to that.
 */

int
ngx_http_idv_json_text_strict(const unsigned char *p, size_t len)
{
    int                   in_string;
    const unsigned char  *end;

    in_string = 0;

    for (end = p + len; p < end; p++) {

        if (in_string) {
            if (*p < 0x20) {
                return -1;
            }

            if (*p == '\\') {
                p++;

            } else if (*p == '"') {
                in_string = 0;
            }

            continue;
        }

        if (*p == '"') {
            in_string = 1;

        } else if ((*p < 0x20 && *p != '\t' && *p != '\r' && *p != '\n')
                   || *p >= 0x80)
        {
            /* outside strings JSON is ASCII: a byte-order mark is not */
            return -1;
        }
    }

    return 0;
}


size_t
ngx_http_idv_json_gateway(u_char *dst, const ngx_http_idv_gateway_t *gw)
{
    char    num[64];
    size_t  n, k;

#define ngx_http_idv_json_put(f)  n += f(dst ? dst + n : NULL

    n = 0;

    ngx_http_idv_json_put(ngx_http_idv_json_literal), "\"Gateway\":{");
    ngx_http_idv_json_put(ngx_http_idv_json_string), "action",
                          gw->action.data, gw->action.len);

    if (gw->product.len) {
        ngx_http_idv_json_put(ngx_http_idv_json_literal), ",");
        ngx_http_idv_json_put(ngx_http_idv_json_string), "productCode",
                              gw->product.data, gw->product.len);
    }

    if (gw->tenant.len) {
        ngx_http_idv_json_put(ngx_http_idv_json_literal), ",");
        ngx_http_idv_json_put(ngx_http_idv_json_string), "tenant",
                              gw->tenant.data, gw->tenant.len);
    }

    ngx_http_idv_json_put(ngx_http_idv_json_literal),
                          gw->cached ? ",\"cached\":true,"
                                     : ",\"cached\":false,");
    ngx_http_idv_json_put(ngx_http_idv_json_number), "attempts",
                          gw->attempts);

    if (gw->attempts) {
        ngx_http_idv_json_put(ngx_http_idv_json_literal), ",");
        ngx_http_idv_json_put(ngx_http_idv_json_number), "upstreamStatus",
                              gw->upstream_status);

        /* seconds, with milliseconds */

        k = (size_t) snprintf(num, sizeof(num),
                              ",\"upstreamTime\":%zu.%03zu",
                              gw->upstream_ms / 1000, gw->upstream_ms % 1000);

        if (dst) {
            memcpy(dst + n, num, k);
        }

        n += k;
    }

    if (gw->passed) {
        ngx_http_idv_json_put(ngx_http_idv_json_literal),
                              gw->passed == 1 ? ",\"passed\":true"
                                              : ",\"passed\":false");
    }

    ngx_http_idv_json_put(ngx_http_idv_json_literal), "}");

#undef ngx_http_idv_json_put

    return n;
}


size_t
ngx_http_idv_json_error(u_char *dst, const u_char *request_id,
    const u_char *code, size_t code_len, const u_char *message,
    size_t message_len, const ngx_http_idv_gateway_t *gw)
{
    ngx_http_idv_json_member_t  m[] = {
        { "RequestId", request_id, NGX_HTTP_IDV_REQUEST_ID_LEN },
        { "Code", code, code_len },
        { "Message", message, message_len },
    };

    return ngx_http_idv_json_object(dst, m, 3, gw);
}


size_t
ngx_http_idv_json_service_error(u_char *dst, const u_char *request_id,
    const u_char *code, size_t code_len, const u_char *message,
    size_t message_len, const u_char *host, size_t host_len)
{
    ngx_http_idv_json_member_t  m[] = {
        { "RequestId", request_id, NGX_HTTP_IDV_REQUEST_ID_LEN },
        { "Message", message, message_len },
        { "HostId", host, host_len },
        { "Code", code, code_len },
    };

    return ngx_http_idv_json_object(dst, m, 4, NULL);
}


/* {"name":"value",...} of string members, then "Gateway" if gw is given */

static size_t
ngx_http_idv_json_object(u_char *dst, const ngx_http_idv_json_member_t *m,
    size_t nm, const ngx_http_idv_gateway_t *gw)
{
    size_t  i, n;

    n = ngx_http_idv_json_literal(dst, "{");

    for (i = 0; i < nm; i++) {
        if (i) {
            n += ngx_http_idv_json_literal(dst ? dst + n : NULL, ",");
        }

        n += ngx_http_idv_json_string(dst ? dst + n : NULL, m[i].name,
                                      m[i].value, m[i].len);
    }

    if (gw) {
        n += ngx_http_idv_json_literal(dst ? dst + n : NULL, ",");
        n += ngx_http_idv_json_gateway(dst ? dst + n : NULL, gw);
    }

    return n + ngx_http_idv_json_literal(dst ? dst + n : NULL, "}");
}


static size_t
ngx_http_idv_json_literal(u_char *dst, const char *s)
{
    size_t  len;

    len = strlen(s);

    if (dst) {
        memcpy(dst, s, len);
    }

    return len;
}


/* "name":"value", the value escaped */

static size_t
ngx_http_idv_json_string(u_char *dst, const char *name, const u_char *value,
    size_t len)
{
    size_t  n, k;

    k = strlen(name);
    n = 0;

    if (dst) {
        dst[n] = '"';
        memcpy(dst + n + 1, name, k);
        memcpy(dst + n + 1 + k, "\":\"", 3);
    }

    n += 1 + k + 3;
    n += ngx_http_idv_json_escape(dst ? dst + n : NULL, value, len);

    if (dst) {
        dst[n] = '"';
    }

    return n + 1;
}


static size_t
ngx_http_idv_json_number(u_char *dst, const char *name, size_t v)
{
    char    num[64];
    size_t  n;

    /* (the names are the module's own, short) */

    n = (size_t) snprintf(num, sizeof(num), "\"%s\":%zu", name, v);

    if (dst) {
        memcpy(dst, num, n);
    }

    return n;
}
