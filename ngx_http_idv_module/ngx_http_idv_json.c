
/*
 * ngx_http_idv_module: the JSON text of the gateway's own answers.
 */


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
static size_t ngx_http_idv_json_uint(u_char *dst, size_t v);
static const u_char *ngx_http_idv_json_plain(const u_char *p,
    const u_char *end);
static int ngx_http_idv_json_hex4(const u_char *p, uint32_t *cp);
static const u_char *ngx_http_idv_json_escaped(const u_char *p,
    uint32_t *cp);
static size_t ngx_http_idv_json_utf8(u_char *dst, uint32_t cp);
static int ngx_http_idv_json_key(const u_char *p, const u_char *end,
    unsigned flags, const char *name);
static const u_char *ngx_http_idv_json_number_end(const u_char *p,
    const u_char *end);


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

        ngx_http_idv_json_put(ngx_http_idv_json_literal),
                              ",\"upstreamTime\":");
        ngx_http_idv_json_put(ngx_http_idv_json_uint),
                              gw->upstream_ms / 1000);

        k = gw->upstream_ms % 1000;

        if (dst) {
            dst[n] = '.';
            dst[n + 1] = (u_char) ('0' + k / 100);
            dst[n + 2] = (u_char) ('0' + k / 10 % 10);
            dst[n + 3] = (u_char) ('0' + k % 10);
        }

        n += 4;
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
    size_t  n, k;

    k = strlen(name);

    if (dst) {
        dst[0] = '"';
        memcpy(dst + 1, name, k);
        dst[k + 1] = '"';
        dst[k + 2] = ':';
    }

    n = k + 3;

    return n + ngx_http_idv_json_uint(dst ? dst + n : NULL, v);
}


static size_t
ngx_http_idv_json_uint(u_char *dst, size_t v)
{
    u_char  buf[24], *p;
    size_t  n;

    p = buf + sizeof(buf);

    do {
        *--p = (u_char) ('0' + v % 10);
        v /= 10;
    } while (v);

    n = buf + sizeof(buf) - p;

    if (dst) {
        memcpy(dst, p, n);
    }

    return n;
}


/* JSON text in: the one scanner */


const u_char *
ngx_http_idv_json_ws(const u_char *p, const u_char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) {
        p++;
    }

    return p;
}


/*
 * the first '"', '\\' or control byte from p on, or end; 32 bytes at a
 * time while there are that many (one test of both blocks' classes),
 * then 16
 */

static const u_char *
ngx_http_idv_json_plain(const u_char *p, const u_char *end)
{
#if (defined __SSE2__)
    int      mask;
    size_t   n;
    __m128i  v, w, ctl, m;

    ctl = _mm_set1_epi8(0x1f);

    /* a control byte is its own minimum with 0x1f */

#define idv_json_special(v)                                                   \
    _mm_or_si128(_mm_or_si128(ngx_http_idv_sse2_is(v, '"'),                    \
                              ngx_http_idv_sse2_is(v, '\\')),                  \
                 _mm_cmpeq_epi8(_mm_min_epu8(v, ctl), v))

    for (n = (end - p) / 32; n; n--) {
        v = _mm_loadu_si128((const __m128i *) p);
        w = _mm_loadu_si128((const __m128i *) (p + 16));

        m = idv_json_special(v);

        if (_mm_movemask_epi8(_mm_or_si128(m, idv_json_special(w)))) {
            mask = _mm_movemask_epi8(m);

            if (mask) {
                return p + __builtin_ctz((unsigned) mask);
            }

            p += 16;
            break;
        }

        p += 32;
    }

    while (end - p >= 16) {
        v = _mm_loadu_si128((const __m128i *) p);

        mask = _mm_movemask_epi8(idv_json_special(v));

        if (mask) {
            return p + __builtin_ctz((unsigned) mask);
        }

        p += 16;
    }

#undef idv_json_special
#endif

    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) {
        p++;
    }

    return p;
}


static int
ngx_http_idv_json_hex4(const u_char *p, uint32_t *cp)
{
    size_t    i;
    uint32_t  v;
    u_char    c;

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];
        v <<= 4;

        if (c >= '0' && c <= '9') {
            v |= c - '0';

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v |= (c | 0x20) - 'a' + 10;

        } else {
            return -1;
        }
    }

    *cp = v;

    return 0;
}


const u_char *
ngx_http_idv_json_string_end(const u_char *p, const u_char *end,
    unsigned *flags)
{
    uint32_t  cp, lo;

    for ( ;; ) {
        p = ngx_http_idv_json_plain(p, end);

        if (p == end || *p < 0x20) {
            return NULL;
        }

        if (*p == '"') {
            return p;
        }

        /* a backslash */

        *flags |= NGX_HTTP_IDV_JSON_ESCAPED;

        if (end - p < 2) {
            return NULL;
        }

        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            p += 2;
            continue;
        case 'u':
            break;
        default:
            return NULL;
        }

        if (end - p < 6 || ngx_http_idv_json_hex4(p + 2, &cp) != 0) {
            return NULL;
        }

        p += 6;

        if (cp >= 0xdc00 && cp <= 0xdfff) {
            return NULL;                    /* a lone low surrogate */
        }

        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u'
                || ngx_http_idv_json_hex4(p + 2, &lo) != 0
                || lo < 0xdc00 || lo > 0xdfff)
            {
                return NULL;
            }

            p += 6;
        }

        if (cp == 0) {
            *flags |= NGX_HTTP_IDV_JSON_NUL;
        }
    }
}


/* the code point of the escape at p, which the scan let through */

static const u_char *
ngx_http_idv_json_escaped(const u_char *p, uint32_t *cp)
{
    uint32_t  lo;

    switch (p[1]) {
    case 'b':
        *cp = '\b';
        return p + 2;
    case 'f':
        *cp = '\f';
        return p + 2;
    case 'n':
        *cp = '\n';
        return p + 2;
    case 'r':
        *cp = '\r';
        return p + 2;
    case 't':
        *cp = '\t';
        return p + 2;
    case 'u':
        break;
    default:
        *cp = p[1];
        return p + 2;
    }

    (void) ngx_http_idv_json_hex4(p + 2, cp);
    p += 6;

    if (*cp >= 0xd800 && *cp <= 0xdbff) {
        (void) ngx_http_idv_json_hex4(p + 2, &lo);
        *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
    }

    return p;
}


static size_t
ngx_http_idv_json_utf8(u_char *dst, uint32_t cp)
{
    if (cp < 0x80) {
        dst[0] = (u_char) cp;
        return 1;
    }

    if (cp < 0x800) {
        dst[0] = (u_char) (0xc0 | cp >> 6);
        dst[1] = (u_char) (0x80 | (cp & 0x3f));
        return 2;
    }

    if (cp < 0x10000) {
        dst[0] = (u_char) (0xe0 | cp >> 12);
        dst[1] = (u_char) (0x80 | ((cp >> 6) & 0x3f));
        dst[2] = (u_char) (0x80 | (cp & 0x3f));
        return 3;
    }

    dst[0] = (u_char) (0xf0 | cp >> 18);
    dst[1] = (u_char) (0x80 | ((cp >> 12) & 0x3f));
    dst[2] = (u_char) (0x80 | ((cp >> 6) & 0x3f));
    dst[3] = (u_char) (0x80 | (cp & 0x3f));
    return 4;
}


size_t
ngx_http_idv_json_unescape(u_char *dst, const u_char *src, size_t len)
{
    u_char        *w;
    size_t         n;
    uint32_t       cp;
    const u_char  *s, *b, *end;

    s = src;
    end = src + len;
    w = dst;

    for ( ;; ) {
        b = (s < end) ? memchr(s, '\\', end - s) : NULL;
        n = (b ? b : end) - s;

        if (w != s && n) {
            memmove(w, s, n);
        }

        w += n;

        if (b == NULL) {
            return w - dst;
        }

        s = ngx_http_idv_json_escaped(b, &cp);

        if (cp == 0) {
            return w - dst;
        }

        w += ngx_http_idv_json_utf8(w, cp);
    }
}


/* a scanned member name is name, decoded, up to its first NUL */

static int
ngx_http_idv_json_key(const u_char *p, const u_char *end, unsigned flags,
    const char *name)
{
    size_t    n, i;
    u_char    buf[4];
    uint32_t  cp;

    if (!(flags & NGX_HTTP_IDV_JSON_ESCAPED)) {
        n = strlen(name);
        return (size_t) (end - p) == n && memcmp(p, name, n) == 0;
    }

    while (p < end) {

        if (*p != '\\') {
            if ((u_char) *name++ != *p++) {
                return 0;
            }

            continue;
        }

        p = ngx_http_idv_json_escaped(p, &cp);

        if (cp == 0) {
            break;
        }

        n = ngx_http_idv_json_utf8(buf, cp);

        for (i = 0; i < n; i++) {
            if ((u_char) *name++ != buf[i]) {
                return 0;
            }
        }
    }

    return *name == '\0';
}


/* RFC 8259: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */

static const u_char *
ngx_http_idv_json_number_end(const u_char *p, const u_char *end)
{
    const u_char  *d;

    if (p < end && *p == '-') {
        p++;
    }

    if (p == end || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p++ != '0') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && *p == '.') {
        d = ++p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == d) {
            return NULL;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        d = p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == d) {
            return NULL;
        }
    }

    return p;
}


int
ngx_http_idv_json_envelope(const u_char *p, size_t len,
    ngx_http_idv_envelope_t *env)
{
    size_t                depth, result;
    unsigned              flags, seen;
    const u_char         *end, *q;
    ngx_http_idv_str_t   *want, mark;
    uint8_t               object[NGX_HTTP_IDV_JSON_DEPTH / 8];

    /* the members looked for, each once: the first of its name counts */

#define IDV_SEEN_CODE        0x01
#define IDV_SEEN_REQUEST_ID  0x02
#define IDV_SEEN_MESSAGE     0x04
#define IDV_SEEN_RESULT      0x08
#define IDV_SEEN_TXN         0x10
#define IDV_SEEN_PASSED      0x20

#define idv_is_object(d)  (object[((d) - 1) / 8] & (1 << (((d) - 1) % 8)))

    memset(env, 0, sizeof(ngx_http_idv_envelope_t));

    if (len == 0) {
        return -1;
    }

    end = p + len;
    depth = 0;
    result = 0;             /* the depth of the Result object, once in it */
    seen = 0;
    want = NULL;

    p = ngx_http_idv_json_ws(p, end);

    if (p == end || *p != '{') {
        return -1;
    }

value:

    p = ngx_http_idv_json_ws(p, end);

    if (p == end) {
        return -1;
    }

    switch (*p) {

    case '{':
    case '[':
        if (depth == NGX_HTTP_IDV_JSON_DEPTH) {
            return -1;
        }

        if (*p == '{') {
            object[depth / 8] |= (uint8_t) (1 << (depth % 8));

        } else {
            object[depth / 8] &= (uint8_t) ~(1 << (depth % 8));
        }

        if (want == &mark && *p == '{') {
            result = depth + 1;             /* the first Result member */
        }

        depth++;
        want = NULL;

        p = ngx_http_idv_json_ws(p + 1, end);

        if (p < end && (*p == '}' || *p == ']')) {
            goto close;
        }

        if (idv_is_object(depth)) {
            goto member;
        }

        goto value;

    case '"':
        flags = 0;
        q = ngx_http_idv_json_string_end(p + 1, end, &flags);

        if (q == NULL) {
            return -1;
        }

        if (want) {
            want->data = (u_char *) p + 1;
            want->len = q - (p + 1);
        }

        p = q + 1;
        break;

    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0) {
            return -1;
        }

        p += 4;
        break;

    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0) {
            return -1;
        }

        p += 5;
        break;

    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0) {
            return -1;
        }

        p += 4;
        break;

    default:
        p = ngx_http_idv_json_number_end(p, end);

        if (p == NULL) {
            return -1;
        }
    }

    want = NULL;

next:

    /* after a value: a comma, or the end of its array or object */

    p = ngx_http_idv_json_ws(p, end);

    if (p == end) {
        return -1;
    }

    if (*p == ',') {
        p++;

        if (idv_is_object(depth)) {
            goto member;
        }

        goto value;
    }

close:

    if (*p != (idv_is_object(depth) ? '}' : ']')) {
        return -1;
    }

    p++;

    if (depth == result) {
        result = 0;
    }

    if (--depth) {
        goto next;
    }

    /* the envelope's own closing brace: white space only after it */

    if (ngx_http_idv_json_ws(p, end) != end || env->code.data == NULL) {
        return -1;
    }

    return 0;

member:

    p = ngx_http_idv_json_ws(p, end);

    if (p == end || *p != '"') {
        return -1;
    }

    flags = 0;
    q = ngx_http_idv_json_string_end(p + 1, end, &flags);

    if (q == NULL) {
        return -1;
    }

    want = NULL;

    if (depth == 1) {

#define idv_want(bit, name, slot)                                             \
        if (!(seen & bit)                                                     \
            && ngx_http_idv_json_key(p + 1, q, flags, name))                  \
        {                                                                     \
            seen |= bit;                                                      \
            want = slot;                                                      \
        }

        idv_want(IDV_SEEN_CODE, "Code", &env->code)
        else idv_want(IDV_SEEN_REQUEST_ID, "RequestId", &env->request_id)
        else idv_want(IDV_SEEN_MESSAGE, "Message", &env->message)
        else idv_want(IDV_SEEN_RESULT, "Result", &mark)

    } else if (depth == result && result) {
        idv_want(IDV_SEEN_TXN, "TransactionId", &env->transaction_id)
        else idv_want(IDV_SEEN_PASSED, "Passed", &env->passed)

#undef idv_want
    }

    p = ngx_http_idv_json_ws(q + 1, end);

    if (p == end || *p != ':') {
        return -1;
    }

    p++;

    goto value;

#undef idv_is_object
#undef IDV_SEEN_CODE
#undef IDV_SEEN_REQUEST_ID
#undef IDV_SEEN_MESSAGE
#undef IDV_SEEN_RESULT
#undef IDV_SEEN_TXN
#undef IDV_SEEN_PASSED
}
